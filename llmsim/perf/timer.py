"""Per-layer durations of a batch from a measured profile bundle."""
from ..batch import Batch
from .architecture import Architecture
from .layer_timer import LayerTimer
from .moe import TOKEN_KEYS, profile_rank_ns, slowest_rank_ns
from .profile import ProfileBundle


class ProfileTimer(LayerTimer):
    """Keys as in the reference: dense layers by batch tokens, per-sequence layers by request
    count, attention by (prefill chunk sum, prefill history sum, decode histories)."""

    source = "profile"

    def __init__(self, bundle: ProfileBundle, arch: Architecture, *, top_k: int = 0, moe_token_key: str = "pairs",
                 moe_timer=None, moe_note: str = ""):
        """top_k, moe_token_key: an MoE model's experts per token and how a rank's load keys the
        moe.csv lookup (perf/moe.py); unused for dense models. moe_timer: another timer (the
        roofline) that times the expert block instead of moe.csv, for blocks the table cannot
        time (experts TP-sharded, or no moe.csv). moe_note: what describe() adds about the expert
        block when moe.csv times it for another layout than the bundle's tp (expert parallelism:
        each EP rank looked up on its own)."""
        self.bundle = bundle
        if moe_token_key not in TOKEN_KEYS:
            raise ValueError(f"moe_token_key '{moe_token_key}' (choose from {', '.join(TOKEN_KEYS)})")
        self.top_k, self.moe_token_key = top_k, moe_token_key
        layers = arch.prologue + arch.block_layers + arch.head
        self.moe_timer, self.moe_note = moe_timer, moe_note
        self._moe = [l for l in dict.fromkeys(layers)
                     if arch.category.get(l) == "moe" and (l in bundle.layers or moe_timer is not None)]
        self._dense = [l for l in dict.fromkeys(layers) if arch.category.get(l) == "dense" and l in bundle.layers]
        self._per_seq = [l for l in dict.fromkeys(layers) if arch.category.get(l) == "per_sequence" and l in bundle.layers]
        self._attn = [l for l in dict.fromkeys(layers) if arch.category.get(l) == "attention"]
        self.skipped = sorted(l for l in dict.fromkeys(layers)
                              if l not in bundle.layers and l not in self._moe and arch.category.get(l) != "attention")

    def describe(self) -> str:
        own = f"measured profile {self.bundle.hardware}/{self.bundle.variant}/tp{self.bundle.tp}"
        if self.moe_timer is not None:
            return f"{own}, expert block from the {self.moe_timer.describe()}"
        return f"{own}, {self.moe_note}" if self.moe_note else own

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

    def moe_ns(self, batch_tokens: int, loads) -> int:
        """The measured expert block (gate included) of the slowest EP rank; batch_tokens is unused
        (the table's gate runs inside the block it times). With moe_timer, that timer's moe_ns."""
        if self.moe_timer is not None:
            return self.moe_timer.moe_ns(batch_tokens, loads)
        if self.top_k < 1:
            raise ValueError("ProfileTimer needs top_k (the model's experts per token) to time an expert block")
        return slowest_rank_ns(lambda l: profile_rank_ns(self.bundle.moe_ns, l, self.top_k, self.moe_token_key), loads)
