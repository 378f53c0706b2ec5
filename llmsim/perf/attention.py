"""Attention latency from a bundle's attention.csv, by the reference's 4-D rule and skew blend.

The grid axes are prefill_chunk (pc), kv_prefill (kp), n_decode (nd) and kv_decode (kd).
Brackets on pc and nd pick up to four (pc, nd) slices ("corners"); each corner is bilinear on
(kp, kd), and the corners blend linearly on nd, then on pc. A batch of unequal decode histories
then blends toward the lookup at its longest history by a profiled alpha.

Floating-point expressions keep the reference's operation order on purpose: a different but
algebraically equal order can move a truncated result by 1 ns.
"""
from __future__ import annotations

import bisect
import logging
from pathlib import Path
from typing import Callable

from llmsim.perf.tables import CACHE_CAP, bracket, bucket_label, column, load_skew_alphas, read_rows, row_at

__all__ = ["AttentionModel", "AttentionTable", "corner_blend", "load_skew", "skew_blend"]

log = logging.getLogger(__name__)

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


class AttentionTable:
    """(prefill_chunk, n_decode) slices, each rows over kv_prefill of (kv_decode keys, ns)."""

    def __init__(self, path: Path):
        cols, rows = read_rows(path)
        idx = [column(cols, c, path) for c in ("prefill_chunk", "kv_prefill", "n_decode", "kv_decode", "time_us")]
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
            by_kd[int(r[i_kd])] = max(1, round(float(r[i_t]) * 1000.0))  # tables.us_to_ns, inlined
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


def load_skew(meta: dict, tp: int, root: Path):
    """(bucket axes, alpha by key, alpha default) from meta.yaml's skew_fit, or None when no
    correction applies."""
    fit = meta.get("skew_fit")
    if not isinstance(fit, dict) or not fit.get("enabled"):
        return None
    per_tp = fit.get("per_tp") or {}
    entry = per_tp.get(tp) or per_tp.get(str(tp))
    if not entry:
        default = float(fit.get("alpha_default", 0.0))
        return (_DEFAULT_SKEW_AXES, {}, default) if default else None
    axes = entry.get("bucket_axes") or fit.get("bucket_axes") or _DEFAULT_SKEW_AXES
    alphas = {k: float(v) for k, v in (entry.get("alpha_by_bucket") or {}).items()}
    if not alphas and entry.get("bucket_table"):
        table = root / entry["bucket_table"]
        loaded = load_skew_alphas(table)
        if loaded is None:
            log.warning("skew_fit: tp=%s bucket table %s missing; using alpha_default", tp, table)
        alphas = loaded or {}
    return axes, alphas, float(entry.get("alpha_default", 0.0))


# ---------------------------------------------------------------- the arithmetic, once

def corner_blend(t_pc: float, t_nd: float, c00: float, c01: float, c10: float, c11: float) -> int:
    """Four corner values (c<pc><nd>) blended on nd, then on pc, truncated to ns."""
    v0 = c00 + t_nd * (c01 - c00)
    v1 = c10 + t_nd * (c11 - c10)
    return max(1, int(v0 + t_pc * (v1 - v0)))


def skew_blend(t_mean: int, t_max: int, alpha: float) -> int:
    """A skewed batch's time: t_mean moved toward t_max by alpha (never below t_mean)."""
    if t_max > t_mean:
        return max(1, int(round(t_mean + alpha * (t_max - t_mean))))
    return t_mean


# A corner is (kd keys, ns, upper kp row or None, weight on kp, borrowed). A cell is
# (t_pc, t_nd, c00, c01, c10, c11, rows): the kd-free part of a query, prepared once for the many
# decode steps that hit it with a growing kd. c01 None repeats c00 (one nd sample); c10 None
# repeats the lower pc pair (one pc sample).

def _corner_value(corner, kd: int) -> float:
    keys, vals, upper, t, borrowed = corner
    v = row_at(keys, vals, kd)
    if upper is not None:
        v = v + t * (row_at(upper[0], upper[1], kd) - v)
    return (v or 0.0) if borrowed else v  # the reference's `or 0.0` on a borrowed slice


def _cell_value(cell, kd: int) -> int:
    t_pc, t_nd, k00, k01, k10, k11, rows = cell
    # rows: every corner is one profiled row on kd (the decode steps' usual cell), read directly
    value = row_at if rows else _corner_value
    c00 = value(k00[0], k00[1], kd) if rows else value(k00, kd)
    if k01 is None:
        c01 = c00
    else:
        c01 = value(k01[0], k01[1], kd) if rows else value(k01, kd)
    if k10 is None:
        c10, c11 = c00, c01
    else:
        c10 = value(k10[0], k10[1], kd) if rows else value(k10, kd)
        if k11 is None:
            c11 = c10
        else:
            c11 = value(k11[0], k11[1], kd) if rows else value(k11, kd)
    return corner_blend(t_pc, t_nd, c00, c01, c10, c11)


class AttentionModel:
    """Attention lookups of one bundle; every result is int ns. `warn(kind, msg, *args)`
    reports a query beyond the profiled grid (once per kind is the caller's policy)."""

    def __init__(self, table: AttentionTable, skew, warn: Callable[..., None]):
        self.table = table
        self.skew = skew
        self._warn = warn
        self._cache: dict[tuple[int, ...], int] = {}
        self._cells: dict[tuple[int, int, int], tuple] = {}
        self._alpha: dict[tuple, float] = {}

    def ns(self, pc: int, kp: int, nd: int, kd_sum: int, kd_max: int, kd_min: int) -> int:
        """A non-empty batch: pc/kp the prefill chunk and history sums, nd decodes with history
        sum/max/min kd_sum/kd_max/kd_min."""
        if pc == 0 and kp == 0 and kd_min >= 0:
            v = self.decode_only(nd, kd_sum, kd_max, kd_min)
            if v is not None:
                return v
        return self.general(pc, kp, nd, kd_sum, kd_max, kd_min)

    def decode_only(self, nd: int, kd_sum: int, kd_max: int, kd_min: int) -> int | None:
        """general(0, 0, nd, ...) without its clamping, grid warning and result cache: every
        decode step of a lane comes here. None sends an off-grid query the general way, which
        warns (tests/test_profile.py compares the two)."""
        a = self.table
        if nd > a.nd_vals[-1] or kd_max > a.kv_max or 0 > a.pc_vals[-1]:
            return None
        cell = self._cells.get((0, nd, 0)) or self._cell(0, nd, 0)
        kd_mean = kd_sum // nd
        v = _cell_value(cell, kd_mean)
        alpha = self._batch_alpha(0, 0, nd, kd_mean, kd_max, kd_min)
        if alpha != 0.0:
            v = skew_blend(v, _cell_value(cell, kd_max), alpha)
        return v

    def general(self, pc: int, kp: int, nd: int, kd_sum: int, kd_max: int, kd_min: int) -> int:
        key = (pc, kp, nd, kd_sum, kd_max, kd_min)
        v = self._cache.get(key)
        if v is not None:
            return v
        kd_mean = kd_sum // nd if nd > 0 else 0
        v = self._point(pc, kp, nd, kd_mean)
        alpha = self._batch_alpha(pc, kp, nd, kd_mean, kd_max, kd_min)
        if alpha != 0.0:
            v = skew_blend(v, self._point(pc, kp, nd, kd_max), alpha)
        if len(self._cache) >= CACHE_CAP:
            self._cache.clear()
        self._cache[key] = v
        return v

    # ------------------------------------------------------------ the 4-D rule

    def _point(self, pc: int, kp: int, nd: int, kd: int) -> int:
        a = self.table
        if pc < 0 or nd < 0 or kp < 0 or kd < 0:
            pc, nd, kp, kd = max(pc, 0), max(nd, 0), max(kp, 0), max(kd, 0)
        if pc > a.pc_vals[-1] or nd > a.nd_vals[-1] or kp > a.kv_max or kd > a.kv_max:
            self._warn("attention", "attention query (pc=%d, kp=%d, nd=%d, kd=%d) beyond grid", pc, kp, nd, kd)
        return _cell_value(self._cells.get((pc, nd, kp)) or self._cell(pc, nd, kp), kd)

    def _corner(self, pc: int, nd: int, kp: int):
        a = self.table
        s = a.slices.get((pc, nd))
        borrowed = s is None
        if borrowed:
            # Unprofiled (pc, nd) pair (e.g. nd=256 with a prefill): borrow the nearest one.
            s = a.slices[a.nearest(pc, nd)]
        kps, rows = s
        lo, hi, t = bracket(kps, kp)
        keys, vals = rows[lo]
        return keys, vals, (None if lo == hi else rows[hi]), t, borrowed

    def _cell(self, pc: int, nd: int, kp: int):
        a = self.table
        lo_pc, hi_pc, t_pc = bracket(a.pc_vals, pc)
        lo_nd, hi_nd, t_nd = bracket(a.nd_vals, nd)
        p0, p1, n0, n1 = a.pc_vals[lo_pc], a.pc_vals[hi_pc], a.nd_vals[lo_nd], a.nd_vals[hi_nd]
        two_nd = n1 != n0
        c00 = self._corner(p0, n0, kp)
        c01 = self._corner(p0, n1, kp) if two_nd else None
        c10 = c11 = None
        if p1 != p0:
            c10 = self._corner(p1, n0, kp)
            c11 = self._corner(p1, n1, kp) if two_nd else None
        if len(self._cells) >= CACHE_CAP:
            self._cells.clear()
        rows = all(c is None or (c[2] is None and not c[4]) for c in (c00, c01, c10, c11))
        cell = self._cells[(pc, nd, kp)] = (t_pc, t_nd, c00, c01, c10, c11, rows)
        return cell

    # ------------------------------------------------------------ skew

    def _batch_alpha(self, pc: int, kp: int, nd: int, kd_mean: int, kd_max: int, kd_min: int) -> float:
        # A batch of unequal decode histories runs slower than a uniform one at the mean; the
        # profiled alpha says how far toward the lookup at the longest history. kv_big
        # (skew.csv) is the long sequences' history, i.e. the batch's max history: its rows
        # have kv_mean = (nb*kv_big + (n-nb)*kvs)/n with kvs < kv_big.
        if self.skew is None or nd <= 1 or kd_max == kd_mean:
            return 0.0
        gap = kd_max - kd_min
        skew_rate = (kd_mean - kd_min) / gap if gap > 0 else 0.5
        return self._skew_alpha(pc, nd, skew_rate, kd_max, kp)

    def _skew_alpha(self, pc: int, nd: int, skew_rate: float, kv_big: int, kp: int) -> float:
        axes, alphas, default = self.skew
        sr = max(0.0, min(1.0, float(skew_rate)))
        # bucket indices (as bucket_label picks them) key a memo of the alpha lookups
        left = bisect.bisect_left
        key = (int(pc), left(axes["n_bins"], int(nd), 1), left(axes["skew_rate_bins"], sr, 1),
               left(axes["kv_big_bins"], int(kv_big), 1), left(axes["kp_bins"], int(kp), 1))
        alpha = self._alpha.get(key)
        if alpha is None:
            labels = (int(pc),  # the raw runtime chunk, so mixed batches off the grid fall to the default
                      bucket_label(axes["n_bins"], axes["n_labels"], int(nd)),
                      bucket_label(axes["skew_rate_bins"], axes["skew_rate_labels"], sr),
                      bucket_label(axes["kv_big_bins"], axes["kv_big_labels"], int(kv_big)),
                      bucket_label(axes["kp_bins"], axes["kp_labels"], int(kp)))
            alpha = self._alpha[key] = alphas.get("pc={}|{}|{}|{}|{}".format(*labels), default)
        return alpha
