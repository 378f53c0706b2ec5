"""Mixture-of-experts facts from a Hugging Face config.json: which decoder layers carry an expert
block, how many experts, how many a token picks, their size, and any shared expert.

The layer rules are those of vLLM's model files (vllm/model_executor/models/): Qwen2-MoE and
Qwen3-MoE put experts in layer i when i is not in `mlp_only_layers` and (i + 1) is a multiple of
`decoder_sparse_step` (the others keep a dense MLP of `intermediate_size`); Mixtral and PhiMoE put
experts in every layer, with `intermediate_size` the size of one expert; DeepSeek-MoE (v1) keeps
the first `first_k_dense_replace` layers dense and then every `moe_layer_freq`-th layer is MoE.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ._fields import Fields

# Multi-head latent attention (DeepSeek-V2/V3, Kimi-K2): the KV cache holds a compressed latent,
# not per-head K and V, so llmsim's attention, KV bytes and profiles would all be wrong for it.
MLA_FIELDS = ("kv_lora_rank", "q_lora_rank")
EXPERT_COUNT_FIELDS = ("num_experts", "num_local_experts", "n_routed_experts")


@dataclass(frozen=True)
class MoeSpec:
    num_experts: int  # routed experts per MoE layer
    top_k: int  # experts each token is routed to (num_experts_per_tok)
    expert_intermediate_size: int  # one expert's MLP width (gate/up output, down input)
    moe_layers: tuple[int, ...]  # decoder layer indices (0-based) whose MLP is the expert block
    shared_intermediate_size: int = 0  # an always-on shared expert's width (0: none)
    shared_expert_gate: bool = False  # Qwen2-MoE scales the shared expert by sigmoid(Linear(hidden, 1))
    norm_topk_prob: bool = False  # top-k weights renormalised (no cost difference; recorded for the metadata)

    def is_moe_layer(self, layer: int) -> bool:
        return layer in self.moe_layers

    @property
    def num_moe_layers(self) -> int:
        return len(self.moe_layers)


def _int(f: Fields, raw: dict, key: str, default=None, minimum: int = 1) -> int:
    val = raw.get(key, default)
    if isinstance(val, bool) or not isinstance(val, int) or val < minimum:
        f.fail(f"expected an integer >= {minimum}, got {val!r}", key)
    return val


def refuse_unmodelled_attention(f: Fields, raw: dict[str, Any]) -> None:
    for key in MLA_FIELDS:
        if raw.get(key) is not None:
            f.fail("multi-head latent attention (DeepSeek-V2/V3, Kimi) is not modelled: llmsim times and "
                   "sizes standard multi-head / grouped-query attention only", key)


def parse_moe(f: Fields, raw: dict[str, Any], num_layers: int) -> MoeSpec | None:
    """The expert layout of a config, or None for a dense model (no expert-count field, or 0)."""
    key = next((k for k in EXPERT_COUNT_FIELDS if raw.get(k)), None)
    if key is None:
        return None
    experts = _int(f, raw, key)
    top_k = _int(f, raw, "num_experts_per_tok")
    if top_k > experts:
        f.fail(f"{top_k} experts per token but only {experts} experts ({key})", "num_experts_per_tok")
    # Mixtral/PhiMoE have no moe_intermediate_size: their intermediate_size is the expert's.
    size_key = "moe_intermediate_size" if "moe_intermediate_size" in raw else "intermediate_size"
    expert_size = _int(f, raw, size_key)
    shared = 0
    if raw.get("shared_expert_intermediate_size"):  # Qwen2-MoE
        shared = _int(f, raw, "shared_expert_intermediate_size")
    elif raw.get("n_shared_experts"):  # DeepSeek-MoE: n shared experts fused into one MLP
        shared = _int(f, raw, "n_shared_experts") * expert_size
    return MoeSpec(
        num_experts=experts,
        top_k=top_k,
        expert_intermediate_size=expert_size,
        moe_layers=_moe_layers(f, raw, num_layers),
        shared_intermediate_size=shared,
        shared_expert_gate=bool(raw.get("shared_expert_intermediate_size")),
        norm_topk_prob=bool(raw.get("norm_topk_prob", False)),
    )


def _moe_layers(f: Fields, raw: dict[str, Any], num_layers: int) -> tuple[int, ...]:
    if "first_k_dense_replace" in raw or "moe_layer_freq" in raw:  # DeepSeek-MoE
        first = _int(f, raw, "first_k_dense_replace", 0, minimum=0)
        freq = _int(f, raw, "moe_layer_freq", 1)
        return tuple(i for i in range(num_layers) if i >= first and i % freq == 0)
    step = _int(f, raw, "decoder_sparse_step", 1)
    only = raw.get("mlp_only_layers") or []
    if not isinstance(only, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in only):
        f.fail(f"expected a list of layer indices, got {only!r}", "mlp_only_layers")
    dense = set(only)
    return tuple(i for i in range(num_layers) if i not in dense and (i + 1) % step == 0)
