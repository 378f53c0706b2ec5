"""Per-layer durations of a batch from a measured profile bundle."""
from ..batch import Batch
from .architecture import Architecture
from .profile import ProfileBundle


class ProfileTimer:
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

    def durations(self, batch: Batch) -> dict[str, int]:
        b = self.bundle
        out = {l: b.dense_ns(l, max(1, batch.total_len)) for l in self._dense}
        seqs = batch.num_reqs
        for l in self._per_seq:
            out[l] = b.per_sequence_ns(l, seqs)
        if self._attn:
            t = b.attention_ns(batch.prefill_tokens, batch.kv_prefill, batch.decode_histories)
            if t > 0:
                for l in self._attn:
                    out[l] = t
        return out
