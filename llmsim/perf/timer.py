"""Per-layer durations of a batch from a measured profile bundle."""
from ..batch import Batch
from .architecture import Architecture
from .layer_timer import LayerTimer
from .profile import ProfileBundle


class ProfileTimer(LayerTimer):
    """Keys as in the reference: dense layers by batch tokens, per-sequence layers by request
    count, attention by (prefill chunk sum, prefill history sum, decode histories)."""

    source = "profile"

    def __init__(self, bundle: ProfileBundle, arch: Architecture):
        self.bundle = bundle
        layers = arch.prologue + arch.block_layers + arch.head
        self._dense = [l for l in dict.fromkeys(layers) if arch.category.get(l) == "dense" and l in bundle.layers]
        self._per_seq = [l for l in dict.fromkeys(layers) if arch.category.get(l) == "per_sequence" and l in bundle.layers]
        self._attn = [l for l in dict.fromkeys(layers) if arch.category.get(l) == "attention"]
        self.skipped = sorted(l for l in dict.fromkeys(layers) if l not in bundle.layers and arch.category.get(l) != "attention")

    def describe(self) -> str:
        return f"measured profile {self.bundle.hardware}/{self.bundle.variant}/tp{self.bundle.tp}"

    def base_durations(self, total_len: int, num_reqs: int) -> dict[str, int]:
        """Every layer but attention: they depend only on (batch tokens, requests)."""
        b = self.bundle
        out = {l: b.dense_ns(l, max(1, total_len)) for l in self._dense}
        for l in self._per_seq:
            out[l] = b.per_sequence_ns(l, num_reqs)
        return out

    def attention_ns(self, batch: Batch) -> int:
        """Each attention layer's duration; 0 when the bundle has no row (the layer is skipped)."""
        if not self._attn:
            return 0
        return self.bundle.attention_ns_from_stats(batch.prefill_tokens, batch.kv_prefill, batch.n_decode,
                                                   batch.kd_sum, batch.kd_max, batch.kd_min)

