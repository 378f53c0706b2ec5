"""vLLM's pipeline partition of decoder layers (vllm.distributed.utils.get_pp_indices)."""


def stage_layer_counts(num_layers: int, pp_size: int) -> list[int]:
    """Layers per stage: floor(L/pp) each; the remainder goes one each to the stages just
    before the last (pp-2, pp-3, ...), which carry no lm_head."""
    if not 1 <= pp_size <= num_layers:
        raise ValueError(f"pp_size {pp_size} must be between 1 and the number of layers {num_layers}")
    counts = [num_layers // pp_size] * pp_size
    for k in range(num_layers % pp_size):
        counts[pp_size - 2 - k] += 1
    return counts

