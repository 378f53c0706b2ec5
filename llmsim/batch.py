"""A scheduled iteration: which requests run how many new tokens."""
from dataclasses import dataclass, field

from .request import Request


@dataclass(eq=False, slots=True)
class Entry:
    req: Request
    num_new: int
    computed_before: int
    epoch: int  # req.num_preemptions at scheduling; a later preemption makes this entry stale

    @property
    def is_prefill(self) -> bool:
        # As in the reference: a one-token prompt remainder is timed like a decode.
        return self.num_new > 1


@dataclass(eq=False, slots=True)
class Batch:
    """Per-request entries, plus (fast path) decode lanes that stand for many one-token entries.
    Timers read only the summary fields, which cover both."""
    id: int
    instance: int
    sched_ns: int
    entries: list[Entry]
    total_len: int = 0
    prefill_tokens: int = 0  # sum of prefill chunk lengths
    kv_prefill: int = 0  # sum of prefill histories
    # decode requests' histories (tokens already computed): count, sum, max, min
    n_decode: int = 0
    kd_sum: int = 0
    kd_max: int = 0
    kd_min: int = 0
    lanes: list = field(default_factory=list)  # (lane, formation index) pairs; see decode_lanes.py
    num_reqs: int = 0

    @classmethod
    def build(cls, batch_id: int, instance: int, sched_ns: int, entries: list[Entry]) -> "Batch":
        decode = []
        total = prefill = kv_prefill = 0
        for e in entries:
            n = e.num_new
            total += n
            if n > 1:  # is_prefill, inlined: this runs for every request of every step
                prefill += n
                kv_prefill += e.computed_before
            else:
                decode.append(e.computed_before)
        if decode:
            return cls(batch_id, instance, sched_ns, entries, total, prefill, kv_prefill,
                       len(decode), sum(decode), max(decode), min(decode), num_reqs=len(entries))
        return cls(batch_id, instance, sched_ns, entries, total, prefill, kv_prefill, num_reqs=len(entries))

    def add_decode(self, n: int, kd_sum: int, kd_max: int, kd_min: int) -> None:
        """Fold n one-token decode entries with these history statistics into the summary."""
        if self.n_decode:
            kd_max, kd_min = max(kd_max, self.kd_max), min(kd_min, self.kd_min)
        self.n_decode += n
        self.kd_sum += kd_sum
        self.kd_max, self.kd_min = kd_max, kd_min
        self.total_len += n
        self.num_reqs += n

    @property
    def decode_tokens(self) -> int:
        return self.n_decode
