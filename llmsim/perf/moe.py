"""Timing one MoE layer's expert block from per-EP-rank loads (perf/routing.py).

The EP ranks compute their experts in parallel and meet at the combine collective, so the layer
takes as long as its slowest rank. The dispatch/combine collectives themselves are not in here:
they belong on the network model (docs/moe.md).

The measured table (moe.csv, `tokens,activated_experts,time_us`) times Qwen3MoeSparseMoeBlock, gate
included, on one GPU holding every expert (tp1, vLLM 0.19, eager): T tokens there make T * top_k
(token, expert) rows over `activated_experts` experts. A rank's load is looked up in one of two ways
(`token_key`):

- "pairs" (default): at the token count that makes the rank's rows, ceil(pairs / top_k), so the
  lookup sees the rank's GEMM rows and the weights it reads;
- "tokens": at the tokens that reach the rank (RankLoad.tokens), as the reference's trace
  generator does; with top_k spread over several ranks it charges each rank for rows it does not
  compute.
"""
from __future__ import annotations

from typing import Callable, Sequence

from .routing import RankLoad

TOKEN_KEYS = ("pairs", "tokens")


def profile_tokens(load: RankLoad, top_k: int, token_key: str = "pairs") -> int:
    """The moe.csv `tokens` a rank is looked up at."""
    if token_key == "pairs":
        return -(-load.pairs // top_k)
    if token_key == "tokens":
        return load.tokens
    raise ValueError(f"token_key '{token_key}' (choose from {', '.join(TOKEN_KEYS)})")


def slowest_rank_ns(rank_ns: Callable[[RankLoad], int], loads: Sequence[RankLoad]) -> int:
    """The layer's expert time: the slowest rank (rank_ns gives 0 for a rank without work)."""
    return max((rank_ns(l) for l in loads), default=0)


def profile_rank_ns(moe_ns: Callable[[int, int], int], load: RankLoad, top_k: int, token_key: str = "pairs") -> int:
    """One rank from the measured table (moe_ns(tokens, activated_experts) is ProfileBundle.moe_ns);
    0 when the rank's lookup tokens are 0 (the reference emits no expert row for it either)."""
    tokens = profile_tokens(load, top_k, token_key)
    return moe_ns(tokens, max(1, load.experts)) if tokens > 0 else 0
