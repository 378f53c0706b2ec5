"""Per-device memory: weights and KV bytes of each pipeline stage, and the KV block count."""
from dataclasses import dataclass

from .config.model import ModelSpec
from .errors import InputError
from .stage_split import stage_layer_counts
from .units import GIB


def block_weight_bytes(m: ModelSpec, tp: int, fp: int) -> int:
    """A dense decoder layer on one TP rank."""
    return attention_weight_bytes(m, tp, fp) + mlp_weight_bytes(m.hidden_size, m.intermediate_size, tp, fp)


def attention_weight_bytes(m: ModelSpec, tp: int, fp: int) -> int:
    h = m.hidden_size
    return (2 * h * fp  # two RMSNorms, replicated
            + h * ((m.q_dim + 2 * m.kv_dim) // tp) * fp  # qkv
            + (m.q_dim // tp) * h * fp)  # o_proj


def mlp_weight_bytes(h: int, f: int, tp: int, fp: int) -> int:
    return (h * 2 * (f // tp) * fp  # gate_up (column-parallel)
            + (f // tp) * h * fp)  # down (row-parallel)


def local_experts(num_experts: int, ep: int) -> int:
    """Experts on the fullest EP rank: vLLM's determine_expert_map gives the first
    num_experts % ep ranks one expert more than the others (every rank allocates for its own)."""
    return -(-num_experts // ep)


def moe_mlp_weight_bytes(m: ModelSpec, tp: int, fp: int, ep: int = 1, expert_tp: int | None = None) -> int:
    """The expert block of one MoE layer on one rank, as vLLM's FusedMoE holds it.

    ep > 1 (enable_expert_parallel): each EP rank holds its experts whole (gate, up, down of
    local_experts(E, ep) experts). ep == 1: every rank holds all experts, sliced along the
    intermediate dim over `expert_tp` ranks (vLLM flattens TP across DP for the experts: pass
    tp * dp; default tp). The router gate (ReplicatedLinear(hidden, E)) is on every rank; a shared
    expert is an ordinary TP-sharded MLP, and Qwen2-MoE's shared-expert gate (hidden -> 1) is
    replicated.
    """
    e, h = m.moe, m.hidden_size
    if ep > 1:
        experts = local_experts(e.num_experts, ep) * 3 * h * e.expert_intermediate_size * fp
    else:
        experts = e.num_experts * mlp_weight_bytes(h, e.expert_intermediate_size, expert_tp or tp, fp)
    shared = mlp_weight_bytes(h, e.shared_intermediate_size, tp, fp) if e.shared_intermediate_size else 0
    return h * e.num_experts * fp + experts + shared + (h * fp if e.shared_expert_gate else 0)


def layer_weight_bytes(m: ModelSpec, layer: int, tp: int, fp: int, ep: int = 1, expert_tp: int | None = None) -> int:
    """Decoder layer `layer` (0-based) on one rank: its MLP is the expert block or a dense MLP."""
    if m.moe is None or not m.moe.is_moe_layer(layer):
        return block_weight_bytes(m, tp, fp)
    return attention_weight_bytes(m, tp, fp) + moe_mlp_weight_bytes(m, tp, fp, ep, expert_tp)


@dataclass(frozen=True)
class StageMemory:
    layers: int
    weight_bytes: int
    kv_bytes_per_token: int


@dataclass(frozen=True)
class MemoryPlan:
    stages: tuple[StageMemory, ...]
    block_size: int
    num_blocks: int

    def used_bytes(self, used_blocks: int) -> int:
        """The largest per-device footprint: a stage's weights plus its share of the held blocks."""
        return max(s.weight_bytes + used_blocks * self.block_size * s.kv_bytes_per_token for s in self.stages)


def stage_memory(m: ModelSpec, tp: int, pp: int, fp: int, kv_fp: int, ep: int = 1,
                 expert_tp: int | None = None) -> tuple[StageMemory, ...]:
    """ep, expert_tp: how the expert weights are split (moe_mlp_weight_bytes); dense models ignore them."""
    per_block = block_weight_bytes(m, tp, fp)
    vocab = (m.vocab_size // tp) * m.hidden_size * fp
    out = []
    counts = stage_layer_counts(m.num_layers, pp)
    first = 0
    for s, n in enumerate(counts):
        if m.moe is None:
            w = n * per_block
        else:
            w = sum(layer_weight_bytes(m, i, tp, fp, ep, expert_tp) for i in range(first, first + n))
        first += n
        if s == 0:
            w += vocab  # embedding
        if s == pp - 1:
            w += m.hidden_size * fp  # final norm
            if not (m.tie_word_embeddings and pp == 1):
                w += vocab  # lm_head
        # KV heads are split over TP ranks, and replicated once tp exceeds them.
        kv = 2 * max(1, m.num_kv_heads // tp) * m.head_dim * n * kv_fp
        out.append(StageMemory(n, w, kv))
    return tuple(out)


def plan_memory(m: ModelSpec, tp: int, pp: int, fp: int, kv_fp: int, mem_size_bytes: int,
                mem_util: float, block_size: int, where: str, reserved_bytes=None,
                num_blocks_override: int = 0, ep: int = 1, expert_tp: int | None = None) -> MemoryPlan:
    """Blocks per device: mem_size x util - the stage's weights - reserved_bytes(stage) (the vLLM
    capacity model's activation peak and non-torch memory; nothing in the reference's model)."""
    stages = stage_memory(m, tp, pp, fp, kv_fp, ep, expert_tp)
    capacity = int(mem_size_bytes * mem_util)
    # Every device allocates the same number of blocks (vLLM takes the minimum over workers).
    blocks = []
    for s, st in enumerate(stages):
        reserved = reserved_bytes(s) if reserved_bytes else 0
        free = capacity - st.weight_bytes - reserved
        per_block = st.kv_bytes_per_token * block_size
        if free < per_block:
            need = (st.weight_bytes + reserved + per_block) / GIB
            extra = f", activations and runtime ({reserved / GIB:.1f} GB)" if reserved else ""
            raise InputError(
                f"{where}: {m.name} does not fit: pipeline stage {s} of {pp} (tp={tp}) needs "
                f"{need:.1f} GB for weights{extra} and one KV block but {capacity / GIB:.1f} GB is available "
                f"({mem_size_bytes / GIB:.0f} GB x utilisation {mem_util}); raise pp_size/tp_size or use larger devices")
        blocks.append(free // per_block)
    return MemoryPlan(stages, block_size, num_blocks_override or min(blocks))
