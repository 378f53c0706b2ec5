"""A scheduled iteration: which requests run how many new tokens."""
from dataclasses import dataclass

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


@dataclass(eq=False)
class Batch:
    id: int
    instance: int
    sched_ns: int
    entries: list[Entry]
    total_len: int = 0
    prefill_tokens: int = 0  # sum of prefill chunk lengths
    kv_prefill: int = 0  # sum of prefill histories
    decode_histories: tuple[int, ...] = ()
    num_prefill: int = 0

    @classmethod
    def build(cls, batch_id: int, instance: int, sched_ns: int, entries: list[Entry]) -> "Batch":
        decode = []
        total = prefill = kv_prefill = n_prefill = 0
        for e in entries:
            n = e.num_new
            total += n
            if n > 1:  # is_prefill, inlined: this runs for every request of every step
                prefill += n
                kv_prefill += e.computed_before
                n_prefill += 1
            else:
                decode.append(e.computed_before)
        return cls(batch_id, instance, sched_ns, entries, total, prefill, kv_prefill, tuple(decode), n_prefill)

    @property
    def num_reqs(self) -> int:
        return len(self.entries)

    @property
    def decode_tokens(self) -> int:
        return len(self.decode_histories)
