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
from .layer_timer import LayerTimer

# layer name -> op category (the unit the efficiency factors are fitted for)
CATEGORY = {
    "embedding": "embedding",
    "layernorm": "norm", "final_layernorm": "norm", "qk_norm": "norm",
    "rotary_emb": "elementwise", "act_fn": "elementwise",
    "qkv_proj": "gemm", "o_proj": "gemm", "gate_up_proj": "gemm", "down_proj": "gemm",
    "attention": "attention",
    "lm_head": "lm_head", "sampler": "sampler",
}
# attention is fitted as two parts (a prefill chunk and decode steps behave very differently)
CATEGORIES = ("gemm", "attention_prefill", "attention_decode", "norm", "elementwise", "embedding",
              "lm_head", "sampler")
MEMORY_BOUND = frozenset({"norm", "elementwise", "embedding", "sampler", "attention_decode"})  # eff_compute := 1
Q_TILE = 128  # FlashAttention query block: a prefill chunk pays for whole tiles of queries
FIT_FILE = "roofline_fit.json"


@dataclass(frozen=True)
class Efficiency:
    eff_compute: float  # achieved fraction of peak FLOP/s
    eff_memory: float  # achieved fraction of memory bandwidth
    overhead_ns: float  # fixed cost per op (eager-mode launch, small-kernel tail)
    per_seq_ns: float = 0.0  # attention_decode: fixed cost per decode request
    span_ns: float = 0.0  # attention_prefill: ns per key of the longest context (one tile's serial walk)


@dataclass(frozen=True)
class AttnShape:
    """Attention work of a batch. *_ctx: sum over query tokens of the context each attends to
    (causal inside a prefill chunk); prefill_kv: KV tokens the prefill rows read (each request's
    context once); tiled_ctx: the same sum over all rows with each request's queries rounded up
    to whole Q_TILE tiles (the varlen kernel pads them); max_ctx: longest request context."""
    prefill_tokens: int = 0
    prefill_ctx: int = 0
    prefill_kv: int = 0
    n_decode: int = 0
    decode_ctx: int = 0  # = decode KV tokens: one query per request sees its whole context
    tiled_ctx: int = 0
    max_ctx: int = 0

    @classmethod
    def of(cls, prefills, decode_histories) -> "AttnShape":
        """prefills: (chunk, history) pairs; decode_histories: tokens before each decode step."""
        n = len(decode_histories)
        return cls.from_stats(prefills, n, sum(decode_histories), max(decode_histories) if n else 0)

    @classmethod
    def from_stats(cls, prefills, n_decode: int, kd_sum: int, kd_max: int) -> "AttnShape":
        """As of(), from the decode histories' count, sum and maximum."""
        q = ctx = kv = tiled = top = 0
        for c, k in prefills:
            q, ctx, kv, top = q + c, ctx + c * k + c * (c + 1) // 2, kv + k + c, max(top, k + c)  # query i sees k+i+1
            full, rest = divmod(c, Q_TILE)  # full tile j (0-based) sees k + (j + 1) * Q_TILE keys
            tiled += Q_TILE * (full * k + Q_TILE * full * (full + 1) // 2) + (Q_TILE * (k + c) if rest else 0)
        n, dctx = n_decode, kd_sum + n_decode
        if n:
            top = max(top, kd_max + 1)
        return cls(q, ctx, kv, n, dctx, tiled + Q_TILE * dctx, top)

    @property
    def query_tokens(self) -> int:
        return self.prefill_tokens + self.n_decode

def _gemm(tokens: int, k: int, n: int, fp: int) -> tuple[float, float]:
    # weights read once, input read, output written (all in the model dtype)
    return 2.0 * tokens * k * n, float(fp * (k * n + tokens * k + tokens * n))


def _attn_io(m: ModelSpec, q: int, kv: int, tp: int, fp: int, kv_fp: int) -> tuple[int, int, int]:
    hq, hkv = m.num_heads // tp, max(1, m.num_kv_heads // tp)
    # KV read from the cache + the new K/V written into it; Q read and O written
    return hq, hkv, 2 * hkv * m.head_dim * kv_fp * (kv + q) + 2 * hq * m.head_dim * fp * q


def attention_cost(m: ModelSpec, a: AttnShape, tp: int, fp: int, kv_fp: int) -> tuple[float, float]:
    """Exact FLOPs (QK^T and PV, 2 per multiply-add each) and bytes of the whole attention op."""
    hq, _, by = _attn_io(m, a.query_tokens, a.prefill_kv + a.decode_ctx, tp, fp, kv_fp)
    return 4.0 * hq * m.head_dim * (a.prefill_ctx + a.decode_ctx), float(by)


def attention_exec(m: ModelSpec, a: AttnShape, tp: int, fp: int, kv_fp: int) -> tuple[float, float]:
    """(FLOPs, bytes) as executed. A batch with a prefill runs every row through the varlen
    kernel, which pads each request to whole query tiles (decode rows too); a decode-only batch
    runs the split-KV decode kernel, which does the exact work."""
    fl, by = attention_cost(m, a, tp, fp, kv_fp)
    if a.prefill_tokens:
        fl = 4.0 * (m.num_heads // tp) * m.head_dim * a.tiled_ctx
    return fl, by


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
        return attention_cost(m, attn or AttnShape(), tp, fp, kv_fp or fp)
    raise KeyError(layer)


def moe_router_ops(m: ModelSpec, tokens: int, tp: int, fp: int) -> list[tuple[str, float, float]]:
    """(category, FLOPs, bytes) of an MoE layer's work on the rank's own tokens before dispatch:
    the router gate GEMM (ReplicatedLinear hidden -> E, on every rank), the top-k softmax (reads
    the logits, writes fp32 weights and int32 ids per pick) and a shared expert (a TP-sharded MLP;
    Qwen2-MoE's sigmoid gate hidden -> 1 with it)."""
    e, h = m.moe, m.hidden_size
    ops = [("gemm", *_gemm(tokens, h, e.num_experts, fp)),
           ("elementwise", 5.0 * tokens * e.num_experts, float(fp * tokens * e.num_experts + 8 * tokens * e.top_k))]
    if e.shared_intermediate_size:
        s = e.shared_intermediate_size // tp
        ops += [("gemm", *_gemm(tokens, h, 2 * s, fp)),
                ("elementwise", 5.0 * tokens * s, float(fp * 3 * tokens * s)),
                ("gemm", *_gemm(tokens, s, h, fp))]
        if e.shared_expert_gate:
            ops.append(("gemm", *_gemm(tokens, h, 1, fp)))
    return ops


def moe_expert_ops(m: ModelSpec, tokens: int, pairs: int, experts: int, inter: int,
                   fp: int) -> list[tuple[str, float, float]]:
    """(category, FLOPs, bytes) of one EP rank's fused expert kernels: `pairs` (token, expert) rows
    over `experts` activated experts of width `inter` (the rank's slice), `tokens` distinct tokens.
    Only activated experts' weights are read, which is why the activated count sets a small
    batch's cost. w13 GEMM (rows gathered per pair) -> SiLU(gate) * up -> w2 GEMM -> the top-k
    weighted sum back to one row per token."""
    h = m.hidden_size
    return [("gemm", 2.0 * pairs * h * 2 * inter, float(fp * (experts * h * 2 * inter + pairs * h + pairs * 2 * inter))),
            ("elementwise", 5.0 * pairs * inter, float(fp * 3 * pairs * inter)),
            ("gemm", 2.0 * pairs * inter * h, float(fp * (experts * inter * h + pairs * inter + pairs * h))),
            ("elementwise", 2.0 * pairs * h, float(fp * (pairs * h + tokens * h)))]


def op_time_ns(flops: float, nbytes: float, peak: float, bw: float, e: Efficiency) -> float:
    return max(flops / (peak * e.eff_compute), nbytes / (bw * e.eff_memory)) * 1e9 + e.overhead_ns


def attention_time_ns(m: ModelSpec, a: AttnShape, tp: int, fp: int, kv_fp: int, peak: float, bw: float,
                      ep: Efficiency, ed: Efficiency) -> float:
    """Prefill/mixed batches: roofline, but never faster than one tile walking the longest
    context (a lone long request leaves most SMs idle). Decode-only batches: roofline plus a
    per-request cost."""
    fl, by = attention_exec(m, a, tp, fp, kv_fp)
    if a.prefill_tokens:
        return max(op_time_ns(fl, by, peak, bw, ep) - ep.overhead_ns, a.max_ctx * ep.span_ns) + ep.overhead_ns
    return op_time_ns(fl, by, peak, bw, ed) + ed.per_seq_ns * a.n_decode


def load_efficiency(path: Path, hardware: str | None = None) -> dict[str, Efficiency]:
    """Fitted factors: the hardware's own fit when it has measured bundles, else the default
    (fitted on all bundles together)."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text())
        table = doc.get("by_hardware", {}).get(hardware) or doc["default"]
        return {c: Efficiency(float(table[c]["eff_compute"]), float(table[c]["eff_memory"]),
                              float(table[c]["overhead_ns"]), float(table[c].get("per_seq_ns", 0)),
                              float(table[c].get("span_ns", 0)))
                for c in CATEGORIES}
    except FileNotFoundError:
        raise InputError(f"{path}: roofline fit not found (run scripts/fit_roofline.py)") from None
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise InputError(f"{path}: malformed roofline fit ({type(e).__name__}: {e})") from None


class RooflineTimer(LayerTimer):
    """Same interface as ProfileTimer: durations(batch) -> {layer: ns}."""

    source = "roofline"

    def __init__(self, model: ModelSpec, arch: Architecture, hw: HardwareSpec, dtype_bytes: int, tp: int,
                 efficiency: dict[str, Efficiency] | None = None, *, dtype: str | None = None,
                 kv_dtype_bytes: int | None = None, fit_path: Path | None = None, ep: int = 1,
                 expert_tp: int | None = None):
        """ep, expert_tp: how the experts are split, as in memory.moe_mlp_weight_bytes."""
        self.model, self.hw, self.tp = model, hw, tp
        moe = model.moe
        # EP ranks hold whole experts; without EP each rank holds a slice of every expert.
        self.expert_inter = 0 if moe is None else (
            moe.expert_intermediate_size if ep > 1 else moe.expert_intermediate_size // (expert_tp or tp))
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
        self._moe = [l for l in layers if arch.category.get(l) == "moe"] if model.moe is not None else []
        self.skipped = sorted(l for l in layers if l not in CATEGORY and l not in self._moe)
        self._cache: dict[tuple, dict[str, int]] = {}

    def _ns(self, layer: str, tokens: int, seqs: int) -> int:
        fl, by = op_cost(self.model, layer, tokens, seqs, None, self.tp, self.fp, self.kv_fp)
        return max(1, int(op_time_ns(fl, by, self.peak, self.bw, self.eff[CATEGORY[layer]])))

    def base_durations(self, total_len: int, num_reqs: int) -> dict[str, int]:
        """Dense and per-sequence ops depend only on (tokens, requests): cached."""
        key = (total_len, num_reqs)
        base = self._cache.get(key)
        if base is None:
            tokens = max(1, total_len)
            base = {l: self._ns(l, tokens, num_reqs) for l in self._dense + self._per_seq}
            if len(self._cache) >= 1 << 16:
                self._cache.clear()
            self._cache[key] = base
        return dict(base)

    def attention_ns(self, batch: Batch) -> int:
        """Each attention layer's duration (it changes every decode step); 0 = no attention op."""
        if not self._attn:
            return 0
        a = AttnShape.from_stats([(e.num_new, e.computed_before) for e in batch.entries if e.is_prefill],
                                 batch.n_decode, batch.kd_sum, batch.kd_max)
        if not a.query_tokens:
            return 0
        return max(1, int(attention_time_ns(self.model, a, self.tp, self.fp, self.kv_fp, self.peak, self.bw,
                                            self.eff["attention_prefill"], self.eff["attention_decode"])))


    def _ops_ns(self, ops) -> float:
        return sum(op_time_ns(fl, by, self.peak, self.bw, self.eff[c]) for c, fl, by in ops)

    def moe_ns(self, batch_tokens: int, loads) -> int:
        """The router (and any shared expert) on this rank's batch_tokens, then the slowest EP
        rank's experts. The fused expert kernels take the dense GEMM and element-wise fits:
        nothing measured fits a grouped GEMM on its own (docs/moe.md)."""
        m = self.model
        experts = max((self._ops_ns(moe_expert_ops(m, l.tokens, l.pairs, l.experts, self.expert_inter, self.fp))
                       for l in loads if l.pairs > 0), default=0.0)  # a rank without rows launches nothing
        router = self._ops_ns(moe_router_ops(m, batch_tokens, self.tp, self.fp)) if batch_tokens > 0 else 0.0
        return max(1, int(router + experts)) if batch_tokens > 0 or experts else 0

    def describe(self) -> str:
        return f"roofline on {self.hw.key} ({self.hw.name}), tp={self.tp}"
