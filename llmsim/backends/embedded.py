"""The default backend: iteration graphs executed in process with ASTRA-Sim's analytical semantics.

A stage's busy time is its ops run serially (compute durations, ring all-reduces, the SEND of its
activation); placement.py composes the stages of consecutive batches into overlapping timelines.
The engine's hot path hands in no graph: per-shape stage costs (stage_cost.py), built from the
same builder and network model, give the same times (tests/test_fast_path.py).
"""
from ..config.cluster import ClusterConfig
from ..graph.iteration import IterationGraph, OpKind, StageProgram
from .base import BatchTiming, StageEvent, StageTimingBackend
from .fabric import InstanceLinks, allgather_ns, allreduce_ns, dp_collective_ns, instance_links
from .network import mem_ns, p2p_ns
from .placement import Placement, StageSplit, StageTimes
from .stage_cost import StageCosts

__all__ = ["EmbeddedBackend", "StageEvent"]

_timing = tuple.__new__
_DP_COLLECTIVES = (OpKind.DP_ALLGATHER, OpKind.DP_REDUCESCATTER, OpKind.DP_ALLREDUCE, OpKind.DP_ALLTOALL)


class EmbeddedBackend(StageTimingBackend):
    name = "embedded"
    needs_graphs = False
    supports_disaggregation = True
    supports_data_parallel = True

    def __init__(self, cluster: ClusterConfig):
        self._links = {i.index: instance_links(cluster, i) for i in cluster.instances}
        self._host = {i.index: cluster.cpu_mem[i.node] for i in cluster.instances}
        self._local_bw = {i.index: i.npu_mem.bw_gbps for i in cluster.instances}
        self._total_npus = cluster.total_npus
        self.placement = Placement(cluster)
        self._where: dict[int, tuple] = {}  # instance -> (its stage costs, index, first NPU, tp)
        self._cluster = cluster

    # -- the network model: a stage's busy time ------------------------------------------------
    def _op_ns(self, op, links: InstanceLinks, stage: int, local_bw: float) -> int:
        k = op.kind
        if k is OpKind.COMPUTE:
            return op.duration_ns
        if k is OpKind.ALLREDUCE:
            return allreduce_ns(links, op.size_bytes, local_mem_bw_gbps=local_bw, total_npus=self._total_npus)
        if k is OpKind.SEND:
            return p2p_ns(links.boundary[stage], op.size_bytes)
        if k is OpKind.ALLGATHER:
            return allgather_ns(links, op.size_bytes)
        if k in _DP_COLLECTIVES:
            return dp_collective_ns(links, k, op.size_bytes, local_bw)
        return 0  # RECV waits; host-memory ops are placed by the placement (they queue across ranks)

    def stage_busy_ns(self, prog: StageProgram, instance: int, local_bw: float) -> int:
        """Time the stage's NPUs are busy once their RECV (if any) has completed."""
        f, links, s = self._op_ns, self._links[instance], prog.stage
        block = 0
        for o in prog.block_ops:  # the hot part: one decoder layer, repeated n_blocks times
            block += o.duration_ns if o.kind is OpKind.COMPUTE else f(o, links, s, local_bw)
        return (sum(f(o, links, s, local_bw) for o in prog.head_ops) + prog.n_blocks * block
                + sum(f(o, links, s, local_bw) for o in prog.tail_ops))

    def send_ns(self, prog: StageProgram, instance: int) -> int:
        """The SENDs that end a stage (what the next stage waits on once they start)."""
        links = self._links[instance]
        return sum(self._op_ns(o, links, prog.stage, 0.0) for o in prog.tail_ops if o.kind is OpKind.SEND)

    def stage_split(self, graph: IterationGraph) -> StageSplit:
        """Per stage: (compute ns, SEND ns at its end)."""
        comp = lambda ops: sum(o.duration_ns for o in ops if o.kind is OpKind.COMPUTE)
        return [(comp(p.head_ops) + p.n_blocks * comp(p.block_ops) + comp(p.tail_ops), self.send_ns(p, graph.instance))
                for p in graph.stages]

    def stage_times(self, graph: IterationGraph) -> StageTimes:
        """Per stage: (busy ns between input and output, host load ns per rank, host store ns per rank)."""
        host, local_bw = self._host[graph.instance], self._local_bw[graph.instance]
        out = []
        for prog in graph.stages:
            mem = lambda ops, kind: sum(mem_ns(host.bw_gbps, host.latency_ns, o.size_bytes) for o in ops if o.kind is kind)
            out.append((self.stage_busy_ns(prog, graph.instance, local_bw),
                        mem(prog.head_ops, OpKind.MEM_LOAD), mem(prog.tail_ops, OpKind.MEM_STORE)))
        return out

    # -- the contract ----------------------------------------------------------------------------
    def _costs(self, inst) -> tuple:
        where = self._where.get(inst.index)
        if where is None:
            layout = inst.layout
            costs = StageCosts(layout, inst.timer, self)
            where = self._where[inst.index] = (costs.times, inst.index, layout.first_npu, layout.tp_size, costs)
        return where

    def stage_costs(self, inst) -> StageCosts:
        """The instance's per-shape stage costs (a DP group's reference step reads them: dp_reference.py)."""
        return self._costs(inst)[4]

    def submit(self, inst, batch, graph, t_ns: int, detail: bool = False) -> BatchTiming:
        times_of, index, first_npu, tp, costs = self._costs(inst)
        if detail:
            # a graph given is timed as built (it may be dumped as traces); else from the batch's shape
            if graph is not None:
                times, split = self.stage_times(graph), self.stage_split(graph)
            else:
                times, split = costs.times_split(batch)
            events = self.placement.place(index, first_npu, tp, batch.id, times, t_ns, split)
            return BatchTiming(events[0].first_rank_end_ns, events[-1].end_ns, events)
        times = self.stage_times(graph) if graph is not None else times_of(batch)
        stage0, end = self.placement.place_ends(index, first_npu, tp, batch.id, times, t_ns)
        return _timing(BatchTiming, (stage0, end, None))  # BatchTiming(stage0, end, None), at half the cost

    def submit_dp_step(self, insts, batches, tokens: list[int], step, graphs, t_ns: int, detail: bool = False):
        """Each rank's step timed from its shape (StageCosts.dp_times: its layers on its tokens, every
        MoE layer the step's expert block and its dispatch and combine); graphs,
        when given, are timed as built instead (they equal: tests/test_dp_groups.py)."""
        first = insts[0]
        links, local_bw = self._links[first.index], self._local_bw[first.index]
        comm = sum(dp_collective_ns(links, kind, size, local_bw) for kind, size in step.collectives)
        splits = None
        if graphs is not None:
            times = [self.stage_times(g) for g in graphs]
            if detail:
                splits = [self.stage_split(g) for g in graphs]
        else:
            costs = [self._costs(inst)[4] for inst in insts]
            times = [c.dp_times(batch, n, step.moe_ns + comm) for c, batch, n in zip(costs, batches, tokens)]
            if detail:
                splits = [None if batch is None else c.dp_split(batch, n, step.moe_ns)
                          for c, batch, n in zip(costs, batches, tokens)]
        return self.placement.place_dp(insts, batches, times, t_ns, detail, splits)
