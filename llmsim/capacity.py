"""vLLM's KV-cache capacity: what its memory profiling leaves for KV blocks.

vLLM (v1 gpu worker, determine_available_memory) gives the KV cache
    gpu_memory_utilization x total device memory
    - weights - peak activation of a profiling forward pass - non-torch memory.
The reference simulator subtracts only the weights, so its cache is too large whenever it fills
(it needed mem_util 0.833919 instead of 0.9 to match vLLM's 2,588 blocks on an RTX 4090).

The activation peak below is an estimate from the largest live tensors; non-torch memory (CUDA
context, cuBLAS/NCCL workspaces, CUDA-graph pool) cannot be derived from first principles and is a
per-device constant. A block count read from a vLLM log (`--num-gpu-blocks`) overrides all of it.
"""
from dataclasses import dataclass

from .config.model import ModelSpec

# CUDA 12 context plus cuBLAS workspaces is typically 0.5-0.8 GiB per GPU; 0.75 GiB is used unless
# the hardware file says otherwise. (Chosen in that range; on the one vLLM run we have, RTX 4090,
# it predicts 2,629 blocks against vLLM's 2,588: +1.6 %.)
DEFAULT_NON_TORCH_BYTES = 3 << 28


@dataclass(frozen=True)
class Capacity:
    requested_bytes: int
    weight_bytes: int
    activation_bytes: int
    non_torch_bytes: int

    @property
    def kv_bytes(self) -> int:
        return self.requested_bytes - self.weight_bytes - self.activation_bytes - self.non_torch_bytes


def activation_peak_bytes(m: ModelSpec, tp: int, act_bytes: int, max_num_batched_tokens: int,
                          max_num_seqs: int, last_stage: bool = True, expert_tp: int | None = None) -> int:
    """Peak of vLLM's profiling run: a forward pass over max_num_batched_tokens tokens, then (on the
    last stage) a dummy sampler run over min(max_num_seqs, tokens) rows of full-vocabulary logits.
    expert_tp: how an MoE model's experts are sliced (1 with expert parallelism; default tp)."""
    t = max_num_batched_tokens
    f = m.intermediate_size // tp
    residual = 2 * t * m.hidden_size * act_bytes  # hidden states + residual stream
    mlp = t * (2 * f + f) * act_bytes  # gate_up output and the activation's output, both live
    if m.moe is not None:
        mlp = moe_activation_bytes(m, tp, act_bytes, t, expert_tp)
    attn = t * ((m.q_dim + 2 * m.kv_dim) // tp + m.q_dim // tp) * act_bytes
    forward = residual + max(mlp, attn)
    if not last_stage:
        return forward
    rows = min(max_num_seqs, t)
    # logits in the model dtype, their fp32 copy, and fp32 probabilities
    sampler = rows * m.vocab_size * (act_bytes + 4 + 4) + t * m.hidden_size * act_bytes
    return max(forward, sampler)


def moe_activation_bytes(m: ModelSpec, tp: int, act_bytes: int, tokens: int, expert_tp: int | None = None) -> int:
    """An MoE layer's live tensors over `tokens` tokens, each expert 1/expert_tp wide on the rank
    (default tp: no expert parallelism; 1 with it, the workspace still sized for every token's k
    rows), as vLLM's fused_experts allocates them: router logits (tokens x E),
    top-k weights (fp32) and ids (int32), the w13 output (tokens x k x 2I/tp), the activation's
    output (tokens x k x I/tp) and the w2 output before the weighted sum (tokens x k x hidden); a
    shared expert's MLP output beside them. Approximate: the moe_align sorting buffers and
    fused_moe's chunking of very large batches (VLLM_FUSED_MOE_CHUNK_SIZE) are left out, and
    a model mixing dense layers takes the larger of the two."""
    e, h = m.moe, m.hidden_size
    i = e.expert_intermediate_size // (expert_tp or tp)
    rows = tokens * e.top_k
    out = tokens * e.num_experts * act_bytes + rows * 8 + rows * (2 * i + i + h) * act_bytes
    if e.shared_intermediate_size:
        out += tokens * 3 * (e.shared_intermediate_size // tp) * act_bytes
    if e.num_moe_layers < m.num_layers:
        out = max(out, tokens * 3 * (m.intermediate_size // tp) * act_bytes)
    return out


def vllm_capacity(total_device_bytes: int, mem_util: float, weight_bytes: int, activation_bytes: int,
                  non_torch_bytes: int = DEFAULT_NON_TORCH_BYTES) -> Capacity:
    return Capacity(int(total_device_bytes * mem_util), weight_bytes, activation_bytes, non_torch_bytes)
