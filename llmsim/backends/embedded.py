"""The default backend: executes IterationGraphs in process with ASTRA-Sim's analytical semantics.

Each NPU runs its graphs one at a time in submission order, its ops serially. A stage after the
first starts with a RECV that completes when the previous stage's SEND has delivered; the stages of
consecutive batches therefore overlap (up to pp_size batches in flight), and bubbles and stage
imbalance show in the timeline. All TP ranks of a stage run identical programs, so one timeline
per stage stands for them.
"""
from dataclasses import dataclass

from ..config.cluster import ClusterConfig
from ..graph.iteration import IterationGraph, OpKind, StageProgram
from .network import Link, mem_ns, p2p_ns, ring_allreduce_ns


@dataclass(frozen=True)
class StageEvent:
    instance: int
    stage: int
    npu: int
    batch_id: int
    start_ns: int  # the stage starts computing (its input has arrived)
    end_ns: int


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
        self._free = {i.index: [0] * i.pp_size for i in cluster.instances}

    def _op_ns(self, op, tp: int, host, local_bw: float) -> int:
        k = op.kind
        if k is OpKind.COMPUTE:
            return op.duration_ns
        if k is OpKind.ALLREDUCE:
            return ring_allreduce_ns(self._tp_link, op.size_bytes, tp, local_mem_bw_gbps=local_bw,
                                     total_npus=self._total_npus)
        if k is OpKind.SEND:
            return p2p_ns(self._pp_link, op.size_bytes)
        if k in (OpKind.MEM_LOAD, OpKind.MEM_STORE):
            return mem_ns(host.bw_gbps, host.latency_ns, op.size_bytes)
        return 0  # RECV: waits, costs nothing itself

    def stage_busy_ns(self, prog: StageProgram, tp: int, host, local_bw: float) -> int:
        """Time the stage's NPUs are busy once their RECV (if any) has completed."""
        f = self._op_ns
        return (sum(f(o, tp, host, local_bw) for o in prog.head_ops)
                + prog.n_blocks * sum(f(o, tp, host, local_bw) for o in prog.block_ops)
                + sum(f(o, tp, host, local_bw) for o in prog.tail_ops))

    def stage_busy(self, graph: IterationGraph) -> list[int]:
        host, local_bw = self._host[graph.instance], self._local_bw[graph.instance]
        return [self.stage_busy_ns(prog, graph.tp_size, host, local_bw) for prog in graph.stages]

    def submit(self, graph: IterationGraph, t_ns: int) -> list[StageEvent]:
        """Place the graph's stages on their NPUs' timelines (pipeline overlap composed here)."""
        free = self._free[graph.instance]
        events = []
        ready = t_ns  # when this stage's input is available
        for prog, busy in zip(graph.stages, self.stage_busy(graph)):
            begin = max(free[prog.stage], t_ns, ready)
            end = begin + busy
            free[prog.stage] = end
            ready = end  # SEND is the stage's last op: the next stage's RECV completes with it
            events.append(StageEvent(graph.instance, prog.stage, graph.npu(prog.stage), graph.batch_id, begin, end))
        return events
