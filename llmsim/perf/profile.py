"""Measured profile bundles: per-layer latencies looked up and interpolated exactly as the
reference (LLMServingSim 2.0 trace generator) does, so simulated times match it to the ns.

Layout: <profiles_root>/<hardware>/<org>/<model>/<variant>/{meta.yaml, tp<N>/*.csv}.
CSV loading and the 1-D rules are in tables.py, attention (4-D rule, skew blend) in attention.py.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import yaml

from llmsim.perf.architecture import Architecture, load_architecture
from llmsim.perf.attention import AttentionModel, AttentionTable, load_skew
from llmsim.perf.errors import ProfileError
from llmsim.perf.tables import CACHE_CAP, bounds, column, interp_1d, linear, load_1d, read_rows, us_to_ns

_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # the C parser when built

__all__ = ["ProfileBundle", "ProfileError"]

log = logging.getLogger(__name__)


def _subdirs(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir() if p.is_dir()) if path.is_dir() else []


def _load_moe(path: Path):
    """(sorted activated-expert counts, per count (token keys, ns)), or None without moe.csv."""
    data = read_rows(path)
    if data is None:
        return None
    cols, rows = data
    it, ia, iv = (column(cols, c, path) for c in ("tokens", "activated_experts", "time_us"))
    grouped: dict[int, dict[int, int]] = {}
    for r in rows:
        grouped.setdefault(int(r[ia]), {})[int(r[it])] = us_to_ns(r[iv])
    aes = sorted(grouped)
    return aes, [(sorted(grouped[a]), [grouped[a][k] for k in sorted(grouped[a])]) for a in aes]


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
        own = {c: load_1d(tp_dir / f"{c}.csv", k) for c, k in (("dense", "tokens"), ("per_sequence", "sequences"))}
        # tp_stable layers are profiled once at tp1; the reference reads them from there.
        use_tp1 = tp != 1 and 1 in available_tps
        tp1 = ({c: load_1d(variant_dir / "tp1" / f"{c}.csv", k)
                for c, k in (("dense", "tokens"), ("per_sequence", "sequences"))} if use_tp1 else own)
        stable = architecture.tp_stable
        self._tables: dict[str, dict[str, tuple[list[int], list[int]]]] = {}
        for cat in ("dense", "per_sequence"):
            names = set(own[cat]) | set(tp1[cat])
            eff = {n: (tp1 if n in stable else own)[cat].get(n) for n in names}
            self._tables[cat] = {n: t for n, t in eff.items() if t is not None}

        self._warned: set[str] = set()
        attn_path = tp_dir / "attention.csv"
        table = AttentionTable(attn_path) if attn_path.is_file() else None
        skew = load_skew(meta, tp, variant_dir)  # even without attention: it warns of a missing table
        self._attention = AttentionModel(table, skew, self._warn_once) if table is not None and table.pairs else None
        moe_dir = variant_dir / ("tp1" if 1 in available_tps else f"tp{available_tps[0]}")
        self._moe = _load_moe(moe_dir / "moe.csv")

        self.layers: set[str] = set(self._tables["dense"]) | set(self._tables["per_sequence"])
        if self._attention is not None:
            self.layers.add("attention")
        if self._moe is not None:
            self.layers.add("moe")
        self._cache_1d: dict[tuple[str, str, int], int] = {}

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

    def _warn_once(self, kind: str, msg: str, *args) -> None:
        if kind not in self._warned:
            self._warned.add(kind)
            log.warning("%s/%s/%s tp%d: " + msg + "; extrapolating linearly",
                        self.hardware, self.model_name, self.variant, self.tp, *args)

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
        v = max(1, int(interp_1d(keys, values, q)))
        if len(self._cache_1d) >= CACHE_CAP:
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
        lo, hi = bounds(aes, ae)
        v_lo = interp_1d(*rows[lo], tok)
        if lo == hi:
            return max(1, int(v_lo))
        return max(1, int(linear(aes[lo], v_lo, aes[hi], interp_1d(*rows[hi], tok), ae)))

    # ------------------------------------------------------------ attention

    def attention_ns_from_stats(self, prefill_chunk: int, kv_prefill: int, n_decode: int,
                                kv_decode_sum: int, kv_decode_max: int, kv_decode_min: int) -> int:
        """attention_ns for callers that keep the decode-history sum/max/min themselves."""
        if prefill_chunk == 0 and n_decode == 0:
            return 0
        attention = self._attention
        if attention is None:
            raise ProfileError(f"no attention profile (tp{self.tp}/attention.csv) in {self.root}")
        return attention.ns(prefill_chunk, kv_prefill, n_decode, kv_decode_sum, kv_decode_max, kv_decode_min)

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
