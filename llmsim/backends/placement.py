"""Placing a batch's stages on its NPUs' timelines, given each stage's busy time.

Each NPU runs its batches one at a time in submission order. A stage after the first starts when
the previous stage's SEND has delivered, so the stages of consecutive batches overlap (up to
pp_size batches in flight) and bubbles and stage imbalance show in the timeline. The TP ranks of a
stage meet at every all-reduce, so they share one timeline, except where ASTRA-Sim serialises
them: their host-memory load (stage 0) and store (last stage) queue one after another at the one
host memory of the system. Shared by every backend that times stages in process.
"""
from bisect import bisect_right

from ..config.cluster import ClusterConfig
from .base import StageEvent

# Per stage: (busy ns between input and output, host load ns per rank, host store ns per rank).
StageTimes = list[tuple[int, int, int]]
# Per stage, for the accounting (llmsim/accounting.py): (compute ns of the busy time, SEND ns at its end).
StageSplit = list[tuple[int, int]]
_NO_SPLIT = (0, 0)
_event = tuple.__new__  # _event(StageEvent, fields): a StageEvent without NamedTuple's argument handling


class Placement:
    def __init__(self, cluster: ClusterConfig):
        self._free = {i.index: [[0] * i.tp_size for _ in range(i.pp_size)] for i in cluster.instances}
        # ASTRA-Sim's remote memory is one FIFO shared by every NPU (we write tensor_device 0):
        # the busy intervals booked on it, oldest first.
        self._host_starts: list[int] = []
        self._host_ends: list[int] = []

    def place(self, instance: int, first_npu: int, tp: int, batch_id: int, times: StageTimes,
              t_ns: int, split: StageSplit | None = None) -> list[StageEvent]:
        """Place the batch's stages from t_ns; one event per stage (with split: its compute and send ns)."""
        free = self._free[instance]
        events = []
        if tp == 1:  # the common case, without per-rank lists
            self._place1(instance, first_npu, batch_id, times, t_ns, events, split)
            return events
        ready = [t_ns] * tp  # when each rank's input is available
        for stage, (busy, load, store) in enumerate(times):
            begin = [max(free[stage][r], t_ns, ready[r]) for r in range(tp)]
            ends = self._queued(begin, load, t_ns)  # ranks load the batch's input one after another
            # ranks meet at every all-reduce, so the last one to start sets the pace
            ends = [max(ends) + busy] * tp
            ends = self._queued(ends, store, t_ns)
            free[stage] = ends
            ready = ends  # SEND is the stage's last op: the next stage's RECV completes with it
            compute, send = split[stage] if split else _NO_SPLIT
            events.append(StageEvent(instance, stage, first_npu + stage * tp, batch_id, min(begin), ends[-1], ends[0],
                                     compute, send))
        return events

    def place_ends(self, instance: int, first_npu: int, tp: int, batch_id: int, times: StageTimes,
                   t_ns: int) -> tuple[int, int]:
        """place() for a caller that needs only (stage 0's rank-0 end, the last stage's end)."""
        if tp != 1:
            events = self.place(instance, first_npu, tp, batch_id, times, t_ns)
            return events[0].first_rank_end_ns, events[-1].end_ns
        return self._place1(instance, first_npu, batch_id, times, t_ns, None)

    def place_dp(self, insts, batches, times: list[StageTimes], t_ns: int, detail: bool,
                 splits: list[StageSplit | None] | None = None):
        """A data-parallel group's step: each rank's times placed on its NPUs from t_ns (a dummy
        batch as id -1). Returns (the step's end: the slowest rank's, per-rank events when detail,
        with splits[r]: their compute and send ns)."""
        end, events = 0, [] if detail else None
        for r, (inst, batch, rank_times) in enumerate(zip(insts, batches, times)):
            layout = inst.layout
            bid = batch.id if batch is not None else -1
            if detail:
                evs = self.place(inst.index, layout.first_npu, layout.tp_size, bid, rank_times, t_ns,
                                 splits[r] if splits else None)
                events.append(evs)
                e = evs[-1].end_ns
            else:
                e = self.place_ends(inst.index, layout.first_npu, layout.tp_size, bid, rank_times, t_ns)[1]
            end = max(end, e)
        return end, events

    def _place1(self, instance, first_npu, batch_id, times, t_ns, events, split=None) -> tuple[int, int]:
        free = self._free[instance]
        ready = t_ns
        first = -1
        for stage, (busy, load, store) in enumerate(times):
            begin = free[stage][0]
            if ready > begin:
                begin = ready
            end = self._queued1(begin, load, t_ns) + busy if load else begin + busy
            if store:
                end = self._queued1(end, store, t_ns)
            free[stage][0] = ready = end
            if first < 0:
                first = end
            if events is not None:
                compute, send = split[stage] if split else _NO_SPLIT
                events.append(_event(StageEvent, (instance, stage, first_npu + stage, batch_id, begin, end, end, compute,
                                                  send)))
        return first, ready

    def _queued(self, ready: list[int], each_ns: int, now_ns: int) -> list[int]:
        """Ranks passing (in rank order) through the host-memory FIFO, each_ns apiece."""
        if each_ns == 0:
            return ready
        return [self._queued1(t, each_ns, now_ns) for t in ready]

    def _queued1(self, t: int, each_ns: int, now_ns: int) -> int:
        """A transfer ready at t through the host-memory FIFO: it waits for any booked transfer it
        would overlap; returns its end. Bookings are disjoint, so both their starts and ends are
        sorted. now_ns is the submission time: batches are submitted in time order and no
        transfer starts before its submission, so bookings ending by now_ns are dropped."""
        starts, ends = self._host_starts, self._host_ends
        if len(ends) > 64 and ends[32] <= now_ns:
            del starts[:32], ends[:32]
        start = t
        i = bisect_right(ends, start)  # bookings ending at or before t cannot overlap
        n = len(starts)
        while i < n and starts[i] < start + each_ns:
            start = ends[i]
            i += 1
        starts.insert(i, start)
        ends.insert(i, start + each_ns)
        return start + each_ns
