"""Per-instance engine settings: CLI values, overridden by instance keys in the cluster config."""
from dataclasses import dataclass, replace

DTYPE_BYTES = {"float16": 2, "bfloat16": 2, "float32": 4, "fp8": 1, "int8": 1}
DTYPE_SHORT = {"float16": "fp16", "bfloat16": "bf16", "float32": "fp32", "fp8": "fp8", "int8": "int8"}


@dataclass(frozen=True)
class EngineArgs:
    max_num_seqs: int = 128
    max_num_batched_tokens: int = 2048
    long_prefill_token_threshold: int = 0
    dtype: str | None = None
    kv_cache_dtype: str = "auto"
    enable_prefix_caching: bool = True
    enable_chunked_prefill: bool = True
    reserve_full_isl: bool = True
    block_size: int = 16
    npu_memory_utilization: float = 0.9
    max_model_len: int = 0  # 0: the model's max_position_embeddings
    num_gpu_blocks: int = 0  # > 0 pins the KV block count (e.g. from a vLLM log)
    timing: str = "auto"  # "profile" (measured bundle), "roofline", or "auto": the bundle if one exists
    kv_capacity: str = "vllm"  # "vllm": mem x util - weights - activations - runtime; "reference": - weights only
    # With pp > 1 (pp = 1 is the same either way): "vllm": the next batch is formed when a batch
    # completes and frees a slot of the engine's batch queue (vLLM's step_with_batch_queue), or
    # when a request reaches an idle engine; "reference": when stage 0 is free and fewer than
    # pp batches are in flight (LLMServingSim).
    batch_formation: str = "vllm"
    # What crosses a stage boundary: "vllm": IntermediateTensors (hidden states and residual),
    # each TP rank sending its 1/tp slice and the receiving stage all-gathering them;
    # "reference": one activation tensor, whole, per rank.
    stage_transfer: str = "vllm"
    # Mixture-of-experts models: how a batch's tokens land on the experts (perf/routing.py POLICIES;
    # "expected": uniform top-k routing's expectation, docs/moe.md) and the seed of the random ones.
    moe_routing: str = "expected"
    moe_seed: int = 0
    # Data-parallel MoE groups (dp_group): "vllm": vLLM's DP engine cores in lockstep (llmsim/dp.py);
    # "reference": LLMServingSim 2.0's barrier, padding and collectives (llmsim/dp_reference.py).
    dp_sync: str = "vllm"
    # How a DP group's MoE layers move tokens (vLLM's --all2all-backend; graph/dp_step.py)
    all2all_backend: str = "allgather_reducescatter"

    def with_overrides(self, overrides: dict) -> "EngineArgs":
        return replace(self, **overrides) if overrides else self


# The rules in which llmsim departs from LLMServingSim on purpose and which `--compat llmservingsim`
# switches to the reference's (docs/differences.md): EngineArgs field -> the reference's value.
REFERENCE_RULES = {"kv_capacity": "reference", "batch_formation": "reference", "stage_transfer": "reference",
                   "dp_sync": "reference", "moe_routing": "reference"}
# The value each rule takes by default (llmsim's own).
DEFAULT_RULES = {k: "vllm" for k in REFERENCE_RULES} | {"moe_routing": "expected"}
COMPAT_MODES = ("vllm", "llmservingsim")

# instance key -> (type, check) ; the reference's per-instance runtime overrides we model.
OVERRIDE_KEYS = {
    "max_num_seqs": int,
    "max_num_batched_tokens": int,
    "long_prefill_token_threshold": int,
    "dtype": str,
    "kv_cache_dtype": str,
    "enable_prefix_caching": bool,
    "enable_chunked_prefill": bool,
    "reserve_full_isl": bool,
    "block_size": int,
}
# Reference keys that only matter for features outside the dense TP/PP path.
IGNORED_KEYS = {"enable_block_copy", "enable_local_offloading", "enable_attn_offloading",
                "enable_sub_batch_interleaving", "expert_routing_policy"}
