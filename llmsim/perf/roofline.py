"""Roofline timing for (hardware, model, dtype, tp) combinations with no measured bundle.

Each op of the architecture walk gets FLOPs and bytes per TP rank (weights sharded as in
llmsim/memory.py), and

    time = max(flops / (peak * eff_compute), bytes / (mem_bw * eff_memory)) + overhead

with eff_compute, eff_memory, overhead fitted per op category against the measured bundles
(scripts/fit_roofline.py -> configs/hardware/roofline_fit.json). It is an approximation: see
docs/roofline.md for its error against the measurements and where it is weak.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ..batch import Batch
from ..config.model import ModelSpec
from ..errors import InputError
from .architecture import Architecture
from .hardware import HardwareSpec

# layer name -> op category (the unit the efficiency factors are fitted for)
CATEGORY = {
    "embedding": "embedding",
    "layernorm": "norm", "final_layernorm": "norm", "qk_norm": "norm",
    "rotary_emb": "elementwise", "act_fn": "elementwise",
    "qkv_proj": "gemm", "o_proj": "gemm", "gate_up_proj": "gemm", "down_proj": "gemm",
    "attention": "attention",
    "lm_head": "lm_head", "sampler": "sampler",
}
CATEGORIES = ("gemm", "attention", "norm", "elementwise", "embedding", "lm_head", "sampler")
FIT_FILE = "roofline_fit.json"


@dataclass(frozen=True)
class Efficiency:
    eff_compute: float  # achieved fraction of peak FLOP/s
    eff_memory: float  # achieved fraction of memory bandwidth
    overhead_ns: float  # fixed cost per op (eager-mode launch, small-kernel tail)


@dataclass(frozen=True)
class AttnShape:
    """Attention work of a batch: sum over query tokens of the context each attends to, and the
    KV tokens read from the cache (each request's whole context, once)."""
    query_tokens: int
    ctx_sum: int
    kv_tokens: int

    @classmethod
    def of(cls, prefills, decode_histories) -> "AttnShape":
        """prefills: (chunk, history) pairs; decode_histories: tokens before each decode step."""
        q = ctx = kv = 0
        for c, k in prefills:
            # causal: query i of the chunk sees k + i + 1 tokens
            q, ctx, kv = q + c, ctx + c * k + c * (c + 1) // 2, kv + k + c
        n, s = len(decode_histories), sum(decode_histories)
        return cls(q + n, ctx + s + n, kv + s + n)


def _gemm(tokens: int, k: int, n: int, fp: int) -> tuple[float, float]:
    # weights read once, input read, output written (all in the model dtype)
    return 2.0 * tokens * k * n, float(fp * (k * n + tokens * k + tokens * n))


def attention_cost(m: ModelSpec, a: AttnShape, tp: int, fp: int, kv_fp: int) -> tuple[float, float]:
    hq, hkv, d = m.num_heads // tp, max(1, m.num_kv_heads // tp), m.head_dim
    flops = 4.0 * hq * d * a.ctx_sum  # QK^T and PV, 2 FLOPs per multiply-add each
    kv_io = 2 * hkv * d * kv_fp * (a.kv_tokens + a.query_tokens)  # cache read + new K/V written
    qo_io = 2 * hq * d * fp * a.query_tokens  # Q read, O written
    return flops, float(kv_io + qo_io)


def op_cost(m: ModelSpec, layer: str, tokens: int, seqs: int, attn: AttnShape | None,
            tp: int, fp: int, kv_fp: int | None = None) -> tuple[float, float]:
    """(FLOPs, bytes) of one op on one TP rank. tokens: tokens in the step; seqs: requests
    (lm_head/sampler see only each request's last token)."""
    h, f, v = m.hidden_size, m.intermediate_size // tp, m.vocab_size
    qd, kvd = m.q_dim // tp, max(1, m.num_kv_heads // tp) * m.head_dim
    if layer == "qkv_proj":
        return _gemm(tokens, h, qd + 2 * kvd, fp)
    if layer == "o_proj":
        return _gemm(tokens, qd, h, fp)
    if layer == "gate_up_proj":
        return _gemm(tokens, h, 2 * f, fp)
    if layer == "down_proj":
        return _gemm(tokens, f, h, fp)
    if layer == "lm_head":
        fl, by = _gemm(seqs, h, v // tp, fp)
        return fl, by + 4.0 * seqs * (v // tp)  # fp32 logits
    if layer == "sampler":
        return 5.0 * seqs * v, 4.0 * seqs * v  # one pass over full-vocab fp32 logits (softmax, pick)
    if layer in ("layernorm", "final_layernorm"):
        # vLLM's fused add+RMSNorm: reads x and residual, writes both; weight read once
        return 4.0 * tokens * h, float(fp * (4 * tokens * h + h))
    if layer == "qk_norm":
        n = tokens * (qd + kvd)
        return 4.0 * n, float(fp * 2 * n)
    if layer == "rotary_emb":
        n = tokens * (qd + kvd)
        return 3.0 * n, float(fp * 2 * n + 4 * tokens * m.head_dim)  # q, k in place; cos/sin fp32
    if layer == "act_fn":
        return 5.0 * tokens * f, float(fp * 3 * tokens * f)  # SiLU(gate) * up
    if layer == "embedding":
        return 0.0, float(fp * 2 * tokens * h + 4 * tokens)  # row gather: ids, rows, output
    if layer == "attention":
        return attention_cost(m, attn or AttnShape(0, 0, 0), tp, fp, kv_fp or fp)
    raise KeyError(layer)


def op_time_ns(flops: float, nbytes: float, peak: float, bw: float, e: Efficiency) -> float:
    return max(flops / (peak * e.eff_compute), nbytes / (bw * e.eff_memory)) * 1e9 + e.overhead_ns


def load_efficiency(path: Path, hardware: str | None = None) -> dict[str, Efficiency]:
    """Fitted factors: the hardware's own fit when it has measured bundles, else the default
    (fitted on all bundles together)."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text())
        table = doc.get("by_hardware", {}).get(hardware) or doc["default"]
        return {c: Efficiency(float(table[c]["eff_compute"]), float(table[c]["eff_memory"]),
                              float(table[c]["overhead_ns"])) for c in CATEGORIES}
    except FileNotFoundError:
        raise InputError(f"{path}: roofline fit not found (run scripts/fit_roofline.py)") from None
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise InputError(f"{path}: malformed roofline fit ({type(e).__name__}: {e})") from None


class RooflineTimer:
    """Same interface as ProfileTimer: durations(batch) -> {layer: ns}."""

    source = "roofline"

    def __init__(self, model: ModelSpec, arch: Architecture, hw: HardwareSpec, dtype_bytes: int, tp: int,
                 efficiency: dict[str, Efficiency] | None = None, *, dtype: str | None = None,
                 kv_dtype_bytes: int | None = None, fit_path: Path | None = None):
        self.model, self.hw, self.tp = model, hw, tp
        self.fp, self.kv_fp = dtype_bytes, kv_dtype_bytes or dtype_bytes
        dtype = dtype or {1: "fp8", 2: "bfloat16", 4: "float32"}[dtype_bytes]
        self.peak, self.bw = hw.peak_flops(dtype), hw.mem_bw
        if efficiency is None:
            efficiency = load_efficiency(fit_path or Path(hw.path).with_name(FIT_FILE), hw.key)
        self.eff = efficiency
        layers = list(dict.fromkeys(arch.prologue + arch.block_layers + arch.head))
        self._dense = [l for l in layers if CATEGORY.get(l) and arch.category.get(l) == "dense"]
        self._per_seq = [l for l in layers if CATEGORY.get(l) and arch.category.get(l) == "per_sequence"]
        self._attn = [l for l in layers if CATEGORY.get(l) == "attention"]
        self.skipped = sorted(l for l in layers if l not in CATEGORY)  # e.g. moe: no model yet
        self._cache: dict[tuple, dict[str, int]] = {}

    def _ns(self, layer: str, tokens: int, seqs: int, attn: AttnShape | None) -> int:
        fl, by = op_cost(self.model, layer, tokens, seqs, attn, self.tp, self.fp, self.kv_fp)
        return max(1, int(op_time_ns(fl, by, self.peak, self.bw, self.eff[CATEGORY[layer]])))

    def durations(self, batch: Batch) -> dict[str, int]:
        # Dense and per-sequence ops depend only on (tokens, requests): cached. Attention changes
        # every decode step (histories grow), and costs a few arithmetic operations anyway.
        key = (batch.total_len, batch.num_reqs)
        base = self._cache.get(key)
        if base is None:
            tokens = max(1, batch.total_len)
            base = {l: self._ns(l, tokens, batch.num_reqs, None) for l in self._dense + self._per_seq}
            if len(self._cache) >= 1 << 16:
                self._cache.clear()
            self._cache[key] = base
        out = dict(base)
        if self._attn:
            a = AttnShape.of([(e.num_new, e.computed_before) for e in batch.entries if e.is_prefill],
                             batch.decode_histories)
            if a.query_tokens:
                t = self._ns("attention", batch.total_len, batch.num_reqs, a)
                for l in self._attn:
                    out[l] = t
        return out

    def describe(self) -> str:
        return f"roofline on {self.hw.key} ({self.hw.name}), tp={self.tp}"
