"""Per-stage costs of a batch on the embedded backend without building its graph.

A stage's busy time is a sum of op durations, and each op depends on one thing: dense ops,
all-reduces, sends and host transfers on the batch's tokens, per-sequence ops (lm_head, sampler)
on its request count, attention ops on the attention time t. So busy = tokens part + requests
part + (attention ops) * t, each part cached on its own key. The parts come from probe graphs
built with the real builder and backend, so this path and the graph path (traces, ASTRA-Sim)
cannot drift apart; tests/test_fast_path.py checks them equal.
"""
from collections import Counter
from dataclasses import dataclass

from .builder import InstanceLayout, build_graph

_CACHE_CAP = 1 << 16


@dataclass
class _Probe:
    id: int
    total_len: int


class StageCosts:
    def __init__(self, layout: InstanceLayout, timer, backend):
        self.layout = layout
        self.timer = timer
        self.backend = backend
        self._per_seq = list(timer.per_sequence_layers)
        self._by_tokens: dict[int, list[tuple[int, int, int]]] = {}
        self._by_reqs: dict[int, list[int]] = {}
        # per stage: attention ops, and how many times each per-sequence layer runs
        self._attn_ops: list[int] = []
        self._seq_ops: list[Counter] = []
        probe = build_graph(layout, _Probe(0, 1), {l: 1 for l in [*timer.attention_layers, *self._per_seq]})
        attn = set(timer.attention_layers)
        for prog in probe.stages:
            names = Counter(op.name for op in prog.ops())
            self._attn_ops.append(sum(names[l] for l in attn))
            self._seq_ops.append(Counter({l: names[l] for l in self._per_seq}))

    def _tokens_part(self, total_len: int) -> list[tuple[int, int, int]]:
        durations = self.timer.base_durations(total_len, 1)
        for layer in self._per_seq:
            durations[layer] = 0
        return self.backend.stage_times(build_graph(self.layout, _Probe(0, total_len), durations))

    def _reqs_part(self, num_reqs: int) -> list[int]:
        d = self.timer.base_durations(1, num_reqs)
        return [sum(n * d[l] for l, n in ops.items()) for ops in self._seq_ops]

    def times(self, batch) -> list[tuple[int, int, int]]:
        """(busy, host load, host store) per stage, as EmbeddedBackend.stage_times of the batch's graph."""
        tok = self._by_tokens.get(batch.total_len)
        if tok is None:
            if len(self._by_tokens) >= _CACHE_CAP:
                self._by_tokens.clear()
            tok = self._by_tokens[batch.total_len] = self._tokens_part(batch.total_len)
        req = self._by_reqs.get(batch.num_reqs)
        if req is None:
            req = self._by_reqs[batch.num_reqs] = self._reqs_part(batch.num_reqs)
        t = self.timer.attention_ns(batch)
        return [(b + r + k * t, load, store) for (b, load, store), r, k in zip(tok, req, self._attn_ops)]
