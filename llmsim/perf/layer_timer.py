"""What every timer shares: a batch's per-layer durations from its non-attention layers (timed
by tokens or by requests) and one attention time for all attention layers."""
from ..batch import Batch


class LayerTimer:
    """Subclasses set _per_seq and _attn (layer names) and provide base_durations(total_len,
    num_reqs) and attention_ns(batch) (0 = no attention op)."""

    _per_seq: list[str]
    _attn: list[str]
    _moe: list[str] = []  # expert-block layers: timed by moe_ns, not in base_durations
    _router = None  # an ExpertRouter (perf/routing.py) bound by the instance: MoE layers are timed per batch
    _moe_memo: dict | None = None  # deterministic routing: total_len -> ns
    _moe_last: tuple = (None, 0)  # (batch key, ns): one draw per batch, however often it is timed

    @property
    def moe_layers(self) -> list[str]:
        """Layers timed per batch from the expert routing (moe_ns); empty for a dense model."""
        return self._moe

    def moe_ns(self, batch_tokens: int, loads) -> int:
        """One MoE layer of a batch with `batch_tokens` tokens on this rank whose experts see
        `loads` (a RankLoad per EP rank, perf/routing.py)."""
        raise NotImplementedError(f"{type(self).__name__} does not time expert blocks")

    def bind_router(self, router) -> None:
        """Time this instance's MoE layers per batch from `router` (ExpertRouter, its EP degree
        included). A deterministic policy's loads depend on the token count alone (cached by it);
        a random one draws once per batch, in batch order, so a seeded run is reproducible."""
        self._router = router
        self._moe_memo = {} if router.deterministic else None
        self._moe_last = (None, 0)

    @property
    def router(self):
        """The bound ExpertRouter (None for a dense model)."""
        return self._router

    def moe_batch_ns(self, batch: Batch) -> int:
        """One MoE layer of this batch: moe_ns(total_len, router.route(total_len)); 0 without experts.
        All MoE layers of the batch take this one draw (the graph repeats one decoder block)."""
        if not self._moe or self._router is None:
            return 0
        return self.moe_tokens_ns(batch.total_len, (batch.instance, batch.id))

    def moe_tokens_ns(self, n: int, key, own: int | None = None) -> int:
        """One MoE layer whose experts see n tokens (a data-parallel group's gathered tokens:
        llmsim/dp.py), the router gate (and any shared expert) run on `own` tokens (the rank's, as
        vLLM computes the router logits before the dispatch; default n); key names the step, so a
        random policy draws once per step."""
        own = n if own is None else own
        memo = self._moe_memo
        if memo is not None:
            t = memo.get((n, own))
            if t is None:
                if len(memo) >= 1 << 16:
                    memo.clear()
                t = memo[(n, own)] = self.moe_ns(own, self._router.route(n))
            return t
        key = (*key, n, own)
        if self._moe_last[0] == key:
            return self._moe_last[1]
        t = self.moe_ns(own, self._router.route(n))
        self._moe_last = (key, t)
        return t

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
        if self._moe:  # present even at 0 (no router bound): the graph keeps its op and all-reduce
            t = self.moe_batch_ns(batch)
            for l in self._moe:
                out[l] = t
        return out
