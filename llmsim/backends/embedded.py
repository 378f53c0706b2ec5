"""The default backend: executes IterationGraphs in process with ASTRA-Sim's analytical semantics.

Each NPU runs its graphs one at a time in submission order, its ops serially. A stage after the
first starts with a RECV that completes when the previous stage's SEND has delivered; the stages of
consecutive batches therefore overlap (up to pp_size batches in flight), and bubbles and stage
imbalance show in the timeline. The TP ranks of a stage run identical programs and meet at every
all-reduce, so they share one timeline, except where ASTRA-Sim serialises them: their host-memory
load (stage 0) and store (last stage) queue one after another at the host memory.
"""
from bisect import bisect_right
from typing import NamedTuple

from ..config.cluster import ClusterConfig
from ..graph.iteration import IterationGraph, OpKind, StageProgram
from .network import Link, mem_ns, p2p_ns, ring_allreduce_ns


class StageEvent(NamedTuple):  # a tuple: one is made per stage per batch
    instance: int
    stage: int
    npu: int
    batch_id: int
    start_ns: int  # the stage starts (its input has arrived)
    end_ns: int  # its last rank is done
    first_rank_end_ns: int = -1  # rank 0 is done (differs only by a queued host-memory store)


class EmbeddedBackend:
    name = "embedded"

    def __init__(self, cluster: ClusterConfig):
        # Topology as the reference lays it out: TP on dimension 0, stages on the next one.
        bw, lat = cluster.link_bw_gbps, cluster.link_latency_ns
        dim = lambda vals, k: vals[k] if k < len(vals) else vals[0]  # a scalar is broadcast to every dimension
        self._tp_link = Link(bw[0], lat[0])
        k = 1 if max(len(bw), len(lat)) > 1 else 0
        self._pp_link = Link(dim(bw, k), dim(lat, k))
        self._host = {i.index: cluster.cpu_mem[i.node] for i in cluster.instances}
        self._local_bw = {i.index: i.npu_mem.bw_gbps for i in cluster.instances}
        self._total_npus = cluster.total_npus
        self._free = {i.index: [[0] * i.tp_size for _ in range(i.pp_size)] for i in cluster.instances}
        # ASTRA-Sim's remote memory is one FIFO shared by every NPU (we write tensor_device 0):
        # the busy intervals booked on it, oldest first.
        self._host_starts: list[int] = []
        self._host_ends: list[int] = []

    def _op_ns(self, op, tp: int, host, local_bw: float) -> int:
        k = op.kind
        if k is OpKind.COMPUTE:
            return op.duration_ns
        if k is OpKind.ALLREDUCE:
            return ring_allreduce_ns(self._tp_link, op.size_bytes, tp, local_mem_bw_gbps=local_bw,
                                     total_npus=self._total_npus)
        if k is OpKind.SEND:
            return p2p_ns(self._pp_link, op.size_bytes)
        return 0  # RECV waits; host-memory ops are placed by submit (they queue across ranks)

    def stage_busy_ns(self, prog: StageProgram, tp: int, host, local_bw: float) -> int:
        """Time the stage's NPUs are busy once their RECV (if any) has completed."""
        f = self._op_ns
        block = 0
        for o in prog.block_ops:  # the hot part: one decoder layer, repeated n_blocks times
            block += o.duration_ns if o.kind is OpKind.COMPUTE else f(o, tp, host, local_bw)
        return (sum(f(o, tp, host, local_bw) for o in prog.head_ops) + prog.n_blocks * block
                + sum(f(o, tp, host, local_bw) for o in prog.tail_ops))

    def stage_times(self, graph: IterationGraph) -> list[tuple[int, int, int]]:
        """Per stage: (busy ns between input and output, host load ns per rank, host store ns per rank)."""
        host, local_bw = self._host[graph.instance], self._local_bw[graph.instance]
        out = []
        for prog in graph.stages:
            mem = lambda ops, kind: sum(mem_ns(host.bw_gbps, host.latency_ns, o.size_bytes) for o in ops if o.kind is kind)
            out.append((self.stage_busy_ns(prog, graph.tp_size, host, local_bw),
                        mem(prog.head_ops, OpKind.MEM_LOAD), mem(prog.tail_ops, OpKind.MEM_STORE)))
        return out

    def submit(self, graph: IterationGraph, t_ns: int) -> list[StageEvent]:
        return self.place(graph.instance, graph.first_npu, graph.tp_size, graph.batch_id,
                          self.stage_times(graph), t_ns)

    def place(self, instance: int, first_npu: int, tp: int, batch_id: int,
              times: list[tuple[int, int, int]], t_ns: int) -> list[StageEvent]:
        """Place a batch's stages, given stage_times(), on their NPUs' timelines (pipeline overlap composed here)."""
        free = self._free[instance]
        events = []
        if tp == 1:  # the common case, without per-rank lists
            self._place1(instance, first_npu, batch_id, times, t_ns, events)
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
            events.append(StageEvent(instance, stage, first_npu + stage * tp, batch_id, min(begin), ends[-1], ends[0]))
        return events

    def place_ends(self, instance: int, first_npu: int, tp: int, batch_id: int,
                   times: list[tuple[int, int, int]], t_ns: int) -> tuple[int, int]:
        """place() for a caller that needs only (stage 0's rank-0 end, the last stage's end)."""
        if tp != 1:
            events = self.place(instance, first_npu, tp, batch_id, times, t_ns)
            return events[0].first_rank_end_ns, events[-1].end_ns
        return self._place1(instance, first_npu, batch_id, times, t_ns, None)

    def _place1(self, instance, first_npu, batch_id, times, t_ns, events) -> tuple[int, int]:
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
                events.append(StageEvent(instance, stage, first_npu + stage, batch_id, begin, end, end))
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
