"""Measured profile bundles: per-layer latencies looked up and interpolated exactly as the
reference (LLMServingSim 2.0 trace generator) does, so simulated times match it to the ns.

Layout: <profiles_root>/<hardware>/<org>/<model>/<variant>/{meta.yaml, tp<N>/*.csv}.
Floating-point expressions below keep the reference's operation order on purpose: a
different but algebraically equal order can move a truncated result by 1 ns.
"""
from __future__ import annotations

import bisect
import csv
import logging
from pathlib import Path
from typing import Sequence

import yaml

_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # the C parser when built

from llmsim.perf import ProfileError
from llmsim.perf.architecture import Architecture, load_architecture

__all__ = ["ProfileBundle", "ProfileError"]

log = logging.getLogger(__name__)

_CACHE_CAP = 1 << 16  # entries per lookup cache; cleared wholesale when full

# Used only when meta.yaml's skew_fit block carries no bucket_axes (older bundles).
_DEFAULT_SKEW_AXES = {
    "n_bins": (0, 2, 4, 8, 16, 32, 64, 128, 1_000_000),
    "n_labels": ("n<=2", "n<=4", "n<=8", "n<=16", "n<=32", "n<=64", "n<=128", "n>128"),
    "kv_big_bins": (0, 1024, 4096, 16384, 1_000_000_000),
    "kv_big_labels": ("kvB<=1k", "kvB<=4k", "kvB<=16k", "kvB>16k"),
    "skew_rate_bins": (-0.01, 0.05, 0.15, 0.40, 0.70, 1.01),
    "skew_rate_labels": ("sr<=5%", "sr<=15%", "sr<=40%", "sr<=70%", "sr>70%"),
    "kp_bins": (-1, 0, 2048, 1_000_000_000),
    "kp_labels": ("kp=0", "kp<=2k", "kp>2k"),
}


# ---------------------------------------------------------------- loading helpers

def _us_to_ns(text: str) -> int:
    # Same as the reference's pandas (x*1000).round() (half-even); checked equal on every
    # bundled row.
    return max(1, round(float(text) * 1000.0))


def _read_rows(path: Path) -> tuple[dict[str, int], list[list[str]]] | None:
    if not path.is_file():
        return None
    with open(path, newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None:
            return None
        rows = [r for r in reader if r]
    return {name.strip(): i for i, name in enumerate(header)}, rows


def _col(cols: dict[str, int], name: str, path: Path) -> int:
    if name not in cols:
        raise ProfileError(f"{path}: missing column '{name}' (has: {', '.join(cols)})")
    return cols[name]


def _load_1d(path: Path, key_col: str) -> dict[str, tuple[list[int], list[int]]]:
    """layer -> (sorted keys, ns values); duplicate keys resolve last-wins like the reference."""
    data = _read_rows(path)
    if data is None:
        return {}
    cols, rows = data
    il, ik, it = _col(cols, "layer", path), _col(cols, key_col, path), _col(cols, "time_us", path)
    grouped: dict[str, dict[int, int]] = {}
    for r in rows:
        grouped.setdefault(r[il], {})[int(r[ik])] = _us_to_ns(r[it])
    return {layer: (sorted(d), [d[k] for k in sorted(d)]) for layer, d in grouped.items()}


class _AttentionTable:
    """(prefill_chunk, n_decode) slices, each rows over kv_prefill of (kv_decode keys, ns)."""

    def __init__(self, path: Path):
        cols, rows = _read_rows(path)
        idx = [_col(cols, c, path) for c in ("prefill_chunk", "kv_prefill", "n_decode", "kv_decode", "time_us")]
        grouped: dict[tuple[int, int], dict[int, dict[int, int]]] = {}
        i_pc, i_kp, i_nd, i_kd, i_t = idx
        for r in rows:
            key = (int(r[i_pc]), int(r[i_nd]))
            by_kp = grouped.get(key)
            if by_kp is None:
                by_kp = grouped[key] = {}
            kp = int(r[i_kp])
            by_kd = by_kp.get(kp)
            if by_kd is None:
                by_kd = by_kp[kp] = {}
            by_kd[int(r[i_kd])] = max(1, round(float(r[i_t]) * 1000.0))  # _us_to_ns, inlined
        self.slices: dict[tuple[int, int], tuple[list[int], list[tuple[list[int], list[int]]]]] = {}
        for key, by_kp in grouped.items():
            kps = sorted(by_kp)
            self.slices[key] = (kps, [(sorted(by_kp[kp]), [by_kp[kp][k] for k in sorted(by_kp[kp])]) for kp in kps])
        self.pairs = sorted(self.slices)
        self.pc_vals = sorted({p for p, _ in self.pairs})
        self.nd_vals = sorted({n for _, n in self.pairs})
        self.kv_max = max((max(kps[-1], max(ks[-1] for ks, _ in rws)) for kps, rws in self.slices.values()), default=0)
        self._nearest: dict[tuple[int, int], tuple[int, int]] = {}

    def nearest(self, pc: int, nd: int) -> tuple[int, int]:
        # First minimum in sorted pair order, as the reference's min() picks ties.
        key = (pc, nd)
        if key not in self._nearest:
            self._nearest[key] = min(self.pairs, key=lambda p: (p[0] - pc) ** 2 + (p[1] - nd) ** 2)
        return self._nearest[key]


def _load_skew_alphas(path: Path) -> dict[str, float] | None:
    data = _read_rows(path)
    if data is None:
        return None
    cols, rows = data
    alphas = {}
    for r in rows:
        raw = r[cols["raw_key"]] if "raw_key" in cols else ""
        if raw:
            key = raw
        else:
            key = "pc={}|{}|{}|{}|{}".format(
                int(float(r[cols["pc"]])), r[cols["n_label"]], r[cols["skew_rate_label"]],
                r[cols["kv_big_label"]], r[cols["kp_label"]])
        alphas[key] = float(r[cols["alpha"]])
    return alphas


# ---------------------------------------------------------------- interpolation rules

def _bounds(keys: list[int], q: int) -> tuple[int, int]:
    """Bracketing indices; (0, 0) below the first key, the last two above the last."""
    idx = bisect.bisect_right(keys, q)
    if idx == 0:
        return 0, 0
    if idx >= len(keys):
        return (0, 0) if len(keys) < 2 else (len(keys) - 2, len(keys) - 1)
    return idx - 1, idx


def _linear(x0: int, y0: float, x1: int, y1: float, q: int) -> float:
    if x1 == x0:
        return y0
    t = (q - x0) / (x1 - x0)
    return y0 + t * (y1 - y0)


def _interp_1d(keys: list[int], values: list[int], q: int) -> float:
    """Clamp below the first key, linear inside, extrapolate from the last two above."""
    if not keys:
        return 0
    if len(keys) == 1:
        return values[0]
    lo, hi = _bounds(keys, q)
    if lo == hi:
        return values[lo]
    return _linear(keys[lo], values[lo], keys[hi], values[hi], q)


def _bracket(values: list[int], q: int) -> tuple[int, int, float]:
    """(lo, hi, t) on a sorted axis; q <= min or a single value pins the lower sample."""
    n = len(values)
    if n == 1 or q <= values[0]:
        return 0, 0, 0.0
    idx = bisect.bisect_right(values, q)
    lo, hi = (n - 2, n - 1) if idx >= n else (idx - 1, idx)
    x0, x1 = values[lo], values[hi]
    if x1 == x0:
        return lo, hi, 0.0
    return lo, hi, (q - x0) / (x1 - x0)


def _row_at(keys: list[int], vals: list, q: int) -> float:
    """A profile row at q: _bracket and the linear step in one call."""
    n = len(keys)
    if n == 1:
        return vals[0]
    if q <= keys[0]:
        lo = hi = 0
        u = 0.0
    else:
        idx = bisect.bisect_right(keys, q)
        lo, hi = (n - 2, n - 1) if idx >= n else (idx - 1, idx)
        x0, x1 = keys[lo], keys[hi]
        u = 0.0 if x1 == x0 else (q - x0) / (x1 - x0)
    return vals[lo] + u * (vals[hi] - vals[lo])


def _bucket_label(bins, labels, val) -> str:
    # Intervals (bins[i], bins[i+1]]; anything beyond the last edge takes the last label.
    i = bisect.bisect_left(bins, val, 1) - 1  # the first i with val <= bins[i + 1]
    return labels[i] if i < len(labels) else labels[-1]


# ---------------------------------------------------------------- the bundle

def _subdirs(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir() if p.is_dir()) if path.is_dir() else []


class ProfileBundle:
    """One (hardware, model, variant, tp) profile; every lookup returns int ns."""

    def __init__(self, variant_dir: Path, hardware: str, model_name: str, variant: str, tp: int,
                 meta: dict, architecture: Architecture, available_tps: list[int]):
        self.root = variant_dir
        self.hardware, self.model_name, self.variant, self.tp = hardware, model_name, variant, tp
        self.meta = meta
        self.architecture = architecture
        self.available_tps = available_tps

        tp_dir = variant_dir / f"tp{tp}"
        own = {c: _load_1d(tp_dir / f"{c}.csv", k) for c, k in (("dense", "tokens"), ("per_sequence", "sequences"))}
        # tp_stable layers are profiled once at tp1; the reference reads them from there.
        use_tp1 = tp != 1 and 1 in available_tps
        tp1 = ({c: _load_1d(variant_dir / "tp1" / f"{c}.csv", k)
                for c, k in (("dense", "tokens"), ("per_sequence", "sequences"))} if use_tp1 else own)
        stable = architecture.tp_stable
        self._tables: dict[str, dict[str, tuple[list[int], list[int]]]] = {}
        for cat in ("dense", "per_sequence"):
            names = set(own[cat]) | set(tp1[cat])
            eff = {n: (tp1 if n in stable else own)[cat].get(n) for n in names}
            self._tables[cat] = {n: t for n, t in eff.items() if t is not None}

        attn_path = tp_dir / "attention.csv"
        self._attn = _AttentionTable(attn_path) if attn_path.is_file() else None
        if self._attn is not None and not self._attn.pairs:
            self._attn = None
        moe_dir = variant_dir / ("tp1" if 1 in available_tps else f"tp{available_tps[0]}")
        self._moe = self._load_moe(moe_dir / "moe.csv")

        self.layers: set[str] = set(self._tables["dense"]) | set(self._tables["per_sequence"])
        if self._attn is not None:
            self.layers.add("attention")
        if self._moe is not None:
            self.layers.add("moe")

        self._skew = self._init_skew()
        self._warned: set[str] = set()
        self._cache_1d: dict[tuple[str, str, int], int] = {}
        self._cache_attn: dict[tuple[int, ...], int] = {}
        self._cells: dict[tuple[int, int, int], tuple] = {}
        self._alpha: dict[tuple, float] = {}

    # ------------------------------------------------------------ construction

    @classmethod
    def load(cls, profiles_root: Path, hardware: str, model_name: str, variant: str, tp: int,
             architecture: Architecture | None = None) -> "ProfileBundle":
        """Load a bundle; `architecture` defaults to the one meta.yaml names."""
        root = Path(profiles_root)
        hw_dir = root / hardware
        if not hw_dir.is_dir():
            have = [d for d in _subdirs(root) if d != "architectures"]
            raise ProfileError(f"no profiles for hardware '{hardware}' under {root} "
                               f"(available: {', '.join(have) or 'none'})")
        model_dir = hw_dir / model_name
        if not model_dir.is_dir():
            have = [f"{org}/{m}" for org in _subdirs(hw_dir) for m in _subdirs(hw_dir / org)]
            raise ProfileError(f"no profiles for model '{model_name}' on {hardware} "
                               f"(available: {', '.join(have) or 'none'})")
        variant_dir = model_dir / variant
        if not variant_dir.is_dir():
            raise ProfileError(f"no profile variant '{variant}' for {model_name} on {hardware} "
                               f"(available: {', '.join(_subdirs(model_dir)) or 'none'})")
        tps = sorted(int(d[2:]) for d in _subdirs(variant_dir) if d.startswith("tp") and d[2:].isdigit())
        if tp not in tps:
            have = ", ".join(f"tp{t}" for t in tps) or "none"
            raise ProfileError(f"no tp{tp} profile in {variant_dir} (available: {have})")
        meta_path = variant_dir / "meta.yaml"
        if not meta_path.is_file():
            raise ProfileError(f"meta.yaml missing: {meta_path}")
        with open(meta_path) as f:
            meta = yaml.load(f, Loader=_YAML_LOADER) or {}
        if architecture is None:
            model_type = meta.get("architecture")
            if not model_type:
                raise ProfileError(f"{meta_path}: no 'architecture' field")
            architecture = load_architecture(root, str(model_type))
        return cls(variant_dir, hardware, model_name, variant, tp, meta, architecture, tps)

    def _load_moe(self, path: Path):
        data = _read_rows(path)
        if data is None:
            return None
        cols, rows = data
        it, ia, iv = (_col(cols, c, path) for c in ("tokens", "activated_experts", "time_us"))
        grouped: dict[int, dict[int, int]] = {}
        for r in rows:
            grouped.setdefault(int(r[ia]), {})[int(r[it])] = _us_to_ns(r[iv])
        aes = sorted(grouped)
        return aes, [(sorted(grouped[a]), [grouped[a][k] for k in sorted(grouped[a])]) for a in aes]

    def _init_skew(self):
        """(bucket axes, alpha by key, alpha default), or None when no correction applies."""
        fit = self.meta.get("skew_fit")
        if not isinstance(fit, dict) or not fit.get("enabled"):
            return None
        per_tp = fit.get("per_tp") or {}
        entry = per_tp.get(self.tp) or per_tp.get(str(self.tp))
        if not entry:
            default = float(fit.get("alpha_default", 0.0))
            return (_DEFAULT_SKEW_AXES, {}, default) if default else None
        axes = entry.get("bucket_axes") or fit.get("bucket_axes") or _DEFAULT_SKEW_AXES
        alphas = {k: float(v) for k, v in (entry.get("alpha_by_bucket") or {}).items()}
        if not alphas and entry.get("bucket_table"):
            table = self.root / entry["bucket_table"]
            loaded = _load_skew_alphas(table)
            if loaded is None:
                log.warning("skew_fit: tp=%s bucket table %s missing; using alpha_default", self.tp, table)
            alphas = loaded or {}
        return axes, alphas, float(entry.get("alpha_default", 0.0))

    # ------------------------------------------------------------ warnings

    def _warn_once(self, kind: str, msg: str, *args) -> None:
        if kind not in self._warned:
            self._warned.add(kind)
            log.warning("%s/%s/%s tp%d: " + msg + "; extrapolating linearly",
                        self.hardware, self.model_name, self.variant, self.tp, *args)

    def check_runtime_limits(self, max_num_batched_tokens: int | None, max_num_seqs: int | None) -> None:
        """Warn once when the run's batch limits exceed what the profiler swept."""
        eff = self.meta.get("engine_effective") or {}
        p_tok, p_seq = eff.get("max_num_batched_tokens"), eff.get("max_num_seqs")
        if p_tok and max_num_batched_tokens and max_num_batched_tokens > p_tok:
            self._warn_once("mnbt", "max-num-batched-tokens=%s exceeds profiled %s", max_num_batched_tokens, p_tok)
        if p_seq and max_num_seqs and max_num_seqs > p_seq:
            self._warn_once("mns", "max-num-seqs=%s exceeds profiled %s", max_num_seqs, p_seq)

    # ------------------------------------------------------------ 1-D lookups

    def _lookup_1d(self, cat: str, layer: str, q: int) -> int:
        key = (cat, layer, q)
        v = self._cache_1d.get(key)
        if v is not None:
            return v
        table = self._tables[cat].get(layer)
        if table is None:
            raise ProfileError(f"no {cat} profile for layer '{layer}' in {self.root} "
                               f"(layers: {', '.join(sorted(self._tables[cat]))})")
        keys, values = table
        if q > keys[-1]:
            self._warn_once(cat, "%s query %d above profiled max %d", cat, q, keys[-1])
        v = max(1, int(_interp_1d(keys, values, q)))
        if len(self._cache_1d) >= _CACHE_CAP:
            self._cache_1d.clear()
        self._cache_1d[key] = v
        return v

    def dense_ns(self, layer: str, tokens: int) -> int:
        """Latency of a token-proportional layer for a batch of `tokens` (total_len) tokens."""
        return self._lookup_1d("dense", layer, max(int(tokens), 1))

    def per_sequence_ns(self, layer: str, sequences: int) -> int:
        """Latency of a per-sequence layer (lm_head, sampler) for `sequences` sequences."""
        return self._lookup_1d("per_sequence", layer, max(int(sequences), 1))

    def moe_ns(self, tokens: int, activated_experts: int) -> int:
        """Expert compute of one EP rank (tp1 table): 1-D on tokens, then linear on experts."""
        if self._moe is None:
            raise ProfileError(f"no moe profile (moe.csv) in {self.root}")
        aes, rows = self._moe
        ae, tok = max(int(activated_experts), 1), max(int(tokens), 1)
        lo, hi = _bounds(aes, ae)
        v_lo = _interp_1d(*rows[lo], tok)
        if lo == hi:
            return max(1, int(v_lo))
        return max(1, int(_linear(aes[lo], v_lo, aes[hi], _interp_1d(*rows[hi], tok), ae)))

    # ------------------------------------------------------------ attention

    # Decode steps query the same (pc, nd, kp) cells over and over with a growing kd: the brackets
    # that do not involve kd are prepared once per cell, and the arithmetic is unchanged.
    def _slice_prep(self, key: tuple[int, int], kp: int):
        """(lower kp row, upper kp row or None, weight) of a profiled slice, or None."""
        s = self._attn.slices.get(key)
        if s is None or not s[0]:
            return None
        kps, rows = s
        lo, hi, t = _bracket(kps, kp)
        return rows[lo], (None if lo == hi else rows[hi]), t

    @staticmethod
    def _slice_eval(prep, kd: int) -> float:
        (keys, vals), upper, t = prep
        v_lo = _row_at(keys, vals, kd)
        if upper is None:
            return v_lo
        return v_lo + t * (_row_at(upper[0], upper[1], kd) - v_lo)

    def _corner_prep(self, pc: int, nd: int, kp: int):
        prep = self._slice_prep((pc, nd), kp)
        if prep is not None:
            return prep, False
        # Unprofiled (pc, nd) pair (e.g. nd=256 with a prefill): borrow the nearest one.
        return self._slice_prep(self._attn.nearest(pc, nd), kp), True

    def _corner_eval(self, prep, borrowed: bool, kd: int) -> float:
        if not borrowed:
            return self._slice_eval(prep, kd)
        return (self._slice_eval(prep, kd) if prep is not None else None) or 0.0

    def _cell(self, pc: int, nd: int, kp: int):
        key = (pc, nd, kp)
        cell = self._cells.get(key)
        if cell is None:
            a = self._attn
            lo_pc, hi_pc, t_pc = _bracket(a.pc_vals, pc)
            lo_nd, hi_nd, t_nd = _bracket(a.nd_vals, nd)
            p0, p1, n0, n1 = a.pc_vals[lo_pc], a.pc_vals[hi_pc], a.nd_vals[lo_nd], a.nd_vals[hi_nd]
            corners = [self._corner_prep(p0, n0, kp), self._corner_prep(p0, n1, kp) if n1 != n0 else None]
            if p1 != p0:
                corners += [self._corner_prep(p1, n0, kp), self._corner_prep(p1, n1, kp) if n1 != n0 else None]
            # A profiled slice with kp on a grid row is one row on kd: evaluated inline (_row_at).
            corners = [None if c is None else (c[0][0] if not c[1] and c[0][1] is None else None, c)
                       for c in corners]
            if len(self._cells) >= _CACHE_CAP:
                self._cells.clear()
            cell = self._cells[key] = (t_pc, t_nd, corners)
        return cell

    def _corner_value(self, corner, kd: int) -> float:
        row = corner[0]
        if row is not None:
            return _row_at(row[0], row[1], kd)
        return self._corner_eval(*corner[1], kd)

    def _attention_point(self, pc: int, kp: int, nd: int, kd: int) -> int:
        """The 4-D rule: brackets on pc and nd pick four slices, each bilinear on (kp, kd)."""
        a = self._attn
        if pc < 0 or nd < 0 or kp < 0 or kd < 0:
            pc, nd, kp, kd = max(pc, 0), max(nd, 0), max(kp, 0), max(kd, 0)
        if pc > a.pc_vals[-1] or nd > a.nd_vals[-1] or kp > a.kv_max or kd > a.kv_max:
            self._warn_once("attention", "attention query (pc=%d, kp=%d, nd=%d, kd=%d) beyond grid",
                            pc, kp, nd, kd)
        cell = self._cells.get((pc, nd, kp)) or self._cell(pc, nd, kp)
        t_pc, t_nd, corners = cell
        ev = self._corner_value
        c00 = ev(corners[0], kd)
        c01 = ev(corners[1], kd) if corners[1] is not None else c00
        if len(corners) > 2:
            c10 = ev(corners[2], kd)
            c11 = ev(corners[3], kd) if corners[3] is not None else c10
        else:
            c10, c11 = c00, c01
        v0 = c00 + t_nd * (c01 - c00)
        v1 = c10 + t_nd * (c11 - c10)
        return max(1, int(v0 + t_pc * (v1 - v0)))

    def _skew_alpha(self, pc: int, nd: int, skew_rate: float, kv_big: int, kp: int) -> float:
        if self._skew is None:
            return 0.0
        axes, alphas, default = self._skew
        sr = max(0.0, min(1.0, float(skew_rate)))
        # bucket indices (as _bucket_label picks them) key a memo of the alpha lookups
        left = bisect.bisect_left
        key = (int(pc), left(axes["n_bins"], int(nd), 1), left(axes["skew_rate_bins"], sr, 1),
               left(axes["kv_big_bins"], int(kv_big), 1), left(axes["kp_bins"], int(kp), 1))
        alpha = self._alpha.get(key)
        if alpha is None:
            labels = (int(pc),  # the raw runtime chunk, so mixed batches off the grid fall to the default
                      _bucket_label(axes["n_bins"], axes["n_labels"], int(nd)),
                      _bucket_label(axes["skew_rate_bins"], axes["skew_rate_labels"], sr),
                      _bucket_label(axes["kv_big_bins"], axes["kv_big_labels"], int(kv_big)),
                      _bucket_label(axes["kp_bins"], axes["kp_labels"], int(kp)))
            alpha = self._alpha[key] = alphas.get("pc={}|{}|{}|{}|{}".format(*labels), default)
        return alpha

    def decode_only_ns(self, nd: int, kd_sum: int, kd_max: int, kd_min: int) -> int | None:
        """attention_ns_from_stats(0, 0, nd, ...) for the common cell shape (one pc value, rows
        on kd profiled at kp = 0), flattened: every decode step of a lane comes here. The
        arithmetic is that of _attention_point and the skew blend, operation for operation;
        None sends the query the general way (tests/test_profile.py compares the two)."""
        a = self._attn
        cell = self._cells.get((0, nd, 0)) or self._cell(0, nd, 0)
        t_pc, t_nd, corners = cell
        if len(corners) != 2 or corners[0][0] is None or (corners[1] is not None and corners[1][0] is None):
            return None
        kd_mean = kd_sum // nd
        if nd > a.nd_vals[-1] or kd_max > a.kv_max or 0 > a.pc_vals[-1]:
            return None  # beyond the grid: the general path warns
        k0, v0 = corners[0][0]
        k1, v1 = corners[1][0] if corners[1] is not None else (None, None)
        vals = []
        for kd in ((kd_mean, kd_max) if nd > 1 and kd_max != kd_mean else (kd_mean,)):
            c00 = _row_at(k0, v0, kd)
            c01 = _row_at(k1, v1, kd) if k1 is not None else c00
            w = c00 + t_nd * (c01 - c00)  # v0 == v1 with a single pc value
            vals.append(max(1, int(w + t_pc * (w - w))))
        v = t_mean = vals[0]
        if len(vals) == 2:
            gap = kd_max - kd_min
            skew_rate = (kd_mean - kd_min) / gap if gap > 0 else 0.5
            alpha = self._skew_alpha(0, nd, skew_rate, kd_max, 0)
            if alpha != 0.0:
                t_max = vals[1]
                if t_max > t_mean:
                    v = max(1, int(round(t_mean + alpha * (t_max - t_mean))))
        return v

    def attention_ns_from_stats(self, prefill_chunk: int, kv_prefill: int, n_decode: int,
                                kv_decode_sum: int, kv_decode_max: int, kv_decode_min: int) -> int:
        """attention_ns for callers that keep the decode-history sum/max/min themselves."""
        if prefill_chunk == 0 and n_decode == 0:
            return 0
        if prefill_chunk == 0 and kv_prefill == 0 and self._attn is not None and kv_decode_min >= 0:
            v = self.decode_only_ns(n_decode, kv_decode_sum, kv_decode_max, kv_decode_min)
            if v is not None:
                return v
        return self._attention_general(prefill_chunk, kv_prefill, n_decode, kv_decode_sum, kv_decode_max,
                                       kv_decode_min)

    def _attention_general(self, prefill_chunk: int, kv_prefill: int, n_decode: int,
                           kv_decode_sum: int, kv_decode_max: int, kv_decode_min: int) -> int:
        key = (prefill_chunk, kv_prefill, n_decode, kv_decode_sum, kv_decode_max, kv_decode_min)
        v = self._cache_attn.get(key)
        if v is not None:
            return v
        if self._attn is None:
            raise ProfileError(f"no attention profile (tp{self.tp}/attention.csv) in {self.root}")
        kd_mean = kv_decode_sum // n_decode if n_decode > 0 else 0
        v = t_mean = self._attention_point(prefill_chunk, kv_prefill, n_decode, kd_mean)
        # Skew: a batch of unequal decode histories runs slower than a uniform one at the
        # mean; blend toward the lookup at the longest history by the profiled alpha.
        # kv_big (skew.csv) is the long sequences' history, i.e. the batch's max history:
        # its rows have kv_mean = (nb*kv_big + (n-nb)*kvs)/n with kvs < kv_big.
        if n_decode > 1 and kv_decode_max != kd_mean:
            gap = kv_decode_max - kv_decode_min
            skew_rate = (kd_mean - kv_decode_min) / gap if gap > 0 else 0.5
            alpha = self._skew_alpha(prefill_chunk, n_decode, skew_rate, kv_decode_max, kv_prefill)
            if alpha != 0.0:
                t_max = self._attention_point(prefill_chunk, kv_prefill, n_decode, kv_decode_max)
                if t_max > t_mean:
                    v = max(1, int(round(t_mean + alpha * (t_max - t_mean))))
        if len(self._cache_attn) >= _CACHE_CAP:
            self._cache_attn.clear()
        self._cache_attn[key] = v
        return v

    def attention_ns(self, prefill_chunk: int, kv_prefill: int, decode_histories: Sequence[int]) -> int:
        """Attention of a batch: prefill_chunk = sum of prefill chunk tokens, kv_prefill = sum of
        prefill histories, decode_histories = tokens already computed per decode request.
        Returns 0 when the batch has neither prefill nor decode (no attention row)."""
        if not decode_histories:
            return self.attention_ns_from_stats(prefill_chunk, kv_prefill, 0, 0, 0, 0)
        return self.attention_ns_from_stats(prefill_chunk, kv_prefill, len(decode_histories),
                                            sum(decode_histories), max(decode_histories), min(decode_histories))

    def __repr__(self) -> str:
        return f"ProfileBundle({self.hardware}/{self.model_name}/{self.variant}/tp{self.tp})"
