"""Per-stage costs of a batch on the embedded backend without building its graph.

Every op but attention depends only on (batch tokens, requests), and every attention op of a batch
lasts the same t, so a stage's busy time is base + count * t. Both parts come from probe graphs
built once per (tokens, requests) shape with the real builder and backend, so this path and the
graph path (traces, ASTRA-Sim) cannot drift apart; tests/test_fast_path.py checks them equal.
"""
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
        self._cache: dict[tuple[int, int], list[tuple[int, int, int, int]]] = {}
        self._slopes: list[int] | None = None

    def _busy(self, total_len: int, durations: dict[str, int]) -> list[tuple[int, int, int]]:
        return self.backend.stage_times(build_graph(self.layout, _Probe(0, total_len), durations))

    def _shape(self, total_len: int, num_reqs: int) -> list[tuple[int, int, int, int]]:
        base = self.timer.base_durations(total_len, num_reqs)
        t0 = self._busy(total_len, base)
        if self._slopes is None:  # attention ops per stage: the same for every shape
            with_attn = dict(base)
            for layer in self.timer.attention_layers:
                with_attn[layer] = 1
            self._slopes = [b1 - b0 for (b0, _, _), (b1, _, _) in zip(t0, self._busy(total_len, with_attn))]
        return [(b0, k, load, store) for (b0, load, store), k in zip(t0, self._slopes)]

    def times(self, batch) -> list[tuple[int, int, int]]:
        """(busy, host load, host store) per stage, as EmbeddedBackend.stage_times of the batch's graph."""
        key = (batch.total_len, batch.num_reqs)
        shape = self._cache.get(key)
        if shape is None:
            if len(self._cache) >= _CACHE_CAP:
                self._cache.clear()
            shape = self._cache[key] = self._shape(*key)
        t = self.timer.attention_ns(batch)
        if t > 0:
            return [(b0 + k * t, load, store) for b0, k, load, store in shape]
        return [(b0, load, store) for b0, _, load, store in shape]
