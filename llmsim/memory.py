"""Per-device memory: weights and KV bytes of each pipeline stage, and the KV block count."""
from dataclasses import dataclass

from .config.model import ModelSpec
from .errors import InputError
from .stage_split import stage_layer_counts
from .units import GIB


def block_weight_bytes(m: ModelSpec, tp: int, fp: int) -> int:
    h, f = m.hidden_size, m.intermediate_size
    return (2 * h * fp  # two RMSNorms, replicated
            + h * ((m.q_dim + 2 * m.kv_dim) // tp) * fp  # qkv
            + (m.q_dim // tp) * h * fp  # o_proj
            + h * 2 * (f // tp) * fp  # gate_up
            + (f // tp) * h * fp)  # down


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


def stage_memory(m: ModelSpec, tp: int, pp: int, fp: int, kv_fp: int) -> tuple[StageMemory, ...]:
    per_block = block_weight_bytes(m, tp, fp)
    vocab = (m.vocab_size // tp) * m.hidden_size * fp
    out = []
    counts = stage_layer_counts(m.num_layers, pp)
    for s, n in enumerate(counts):
        w = n * per_block
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
                num_blocks_override: int = 0) -> MemoryPlan:
    """Blocks per device: mem_size x util - the stage's weights - reserved_bytes(stage) (the vLLM
    capacity model's activation peak and non-torch memory; nothing in the reference's model)."""
    stages = stage_memory(m, tp, pp, fp, kv_fp)
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
