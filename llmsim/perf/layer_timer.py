"""What every timer shares: a batch's per-layer durations from its non-attention layers (timed
by tokens or by requests) and one attention time for all attention layers."""
from ..batch import Batch


class LayerTimer:
    """Subclasses set _per_seq and _attn (layer names) and provide base_durations(total_len,
    num_reqs) and attention_ns(batch) (0 = no attention op)."""

    _per_seq: list[str]
    _attn: list[str]
    _moe: list[str] = []  # expert-block layers: timed by moe_ns, not in base_durations

    @property
    def moe_layers(self) -> list[str]:
        """Layers timed per batch from the expert routing (moe_ns); empty for a dense model."""
        return self._moe

    def moe_ns(self, batch_tokens: int, loads) -> int:
        """One MoE layer of a batch with `batch_tokens` tokens on this rank whose experts see
        `loads` (a RankLoad per EP rank, perf/routing.py)."""
        raise NotImplementedError(f"{type(self).__name__} does not time expert blocks")

    @property
    def attention_layers(self) -> list[str]:
        return self._attn

    @property
    def per_sequence_layers(self) -> list[str]:
        """Layers timed by request count alone (the rest of base_durations by token count alone)."""
        return self._per_seq

    def durations(self, batch: Batch) -> dict[str, int]:
        out = self.base_durations(batch.total_len, batch.num_reqs)
        t = self.attention_ns(batch)
        if t > 0:
            for l in self._attn:
                out[l] = t
        return out
