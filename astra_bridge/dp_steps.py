"""A data-parallel group's lockstep steps on the binary, for both flavours.

llmsim's engine forms each step (llmsim/dp.py); its ranks' graphs (llmsim/graph/dp_step.py) are
written under one prefix, the MoE dispatch and combine as ALL_GATHER and REDUCE_SCATTER, and run
together in a run of their own. Each rank's finish is its busy time. Under the congestion-unaware
network a step's timing does not depend on other steps, so each distinct set of traces runs once
and is cached by its bytes.

A group that is the whole cluster spans the dimensions beside TP's (involved_dim). A group beside
other instances or groups gets communicator groups instead: one per TP rank index (the same TP rank
of every DP rank, vLLM's DP group), in a --comm-group-configuration file of the run; upstream names
the group on each collective (pg_name), the fork takes every collective of an NPU into the file's
group, so there a group beside others needs tp_size 1. The other NPUs run nothing (the fork) or a
1 us compute node (upstream rejects an empty workload).
"""
import hashlib
import json
from pathlib import Path

from llmsim.errors import InputError

from .chakra.codec import comp_node, global_metadata, write_et


def check_group(cluster, flavor: str) -> None:
    """What the bridge can run: DP groups on the reference's flat layout (a node-aware one would
    need hierarchical collectives across the group's dimensions); on the fork, a group beside
    others only with tp_size 1."""
    names = {i.dp_group for i in cluster.instances}
    if names == {None}:
        return
    if cluster.network is not None:
        raise InputError(f"{cluster.path}: dp_group: on astra-sim ({flavor}) a data-parallel group needs the flat "
                         "network of link_bw / link_latency (its collectives span a whole dimension); drop "
                         "\"network\" or use --backend embedded")
    alone = len(names) == 1
    if not alone and flavor == "llmservingsim" and any(i.dp_group and i.tp_size > 1 for i in cluster.instances):
        raise InputError(f"{cluster.path}: dp_group: on astra-sim-fork a data-parallel group beside other instances "
                         "or groups needs tp_size 1 (the fork puts every collective of an NPU into its comm group, "
                         "the TP all-reduces too); use --astra-sim-flavor upstream or --backend embedded")


class DPSteps:
    """write(graph, prefix, dp_pg) writes a graph's files as its flavour wants them; run(prefix,
    what, needed NPUs, comm_group file or None) -> {npu: finish ns} runs the binary once."""

    def __init__(self, workdir: Path, flavor: str, total_npus: int, ident, write, run, traces):
        self.workdir, self.flavor, self.total_npus, self.ident = workdir, flavor, total_npus, ident
        self.write, self.run, self.traces = write, run, traces
        self._cache: dict[str, tuple[list[int], Path]] = {}

    def busy_ns(self, graphs) -> list[int]:
        """Each rank's busy time for the step (its stage-0 rank-0 NPU's finish)."""
        prefix = self.workdir / f"dp_step{graphs[0].dp_step}" / "llm"
        prefix.parent.mkdir(parents=True, exist_ok=True)
        tp = graphs[0].tp_size
        mine = [self.ident(g.first_npu + r) for g in graphs for r in range(tp)]
        comm_group, dp_pg = None, None
        if len(mine) < self.total_npus:  # beside others: a communicator group per TP rank index
            groups = {str(r + 1): [self.ident(g.first_npu + r) for g in graphs] for r in range(tp)}
            comm_group = prefix.parent / "comm_group.json"
            comm_group.write_text(json.dumps(groups))
            dp_pg = lambda rank: str(rank + 1)
            meta = global_metadata(schema="1.0.2-chakra.0.0.4", input_file="idle")
            idle = [] if self.flavor == "llmservingsim" else [comp_node(self.flavor, 0, "idle", 1000)]
            for n in set(range(self.total_npus)) - set(mine):
                write_et(f"{prefix}.{n}.et", meta, idle)
        for g in graphs:
            self.write(g, prefix, dp_pg)
        npus = [self.ident(g.npu(0, 0)) for g in graphs]
        digest = hashlib.sha256(comm_group.read_bytes() if comm_group else b"")
        for n in mine:
            digest.update(Path(f"{prefix}.{n}.et").read_bytes())
        key = digest.hexdigest()
        if key in self._cache:
            busy, first = self._cache[key]
            self.traces.same_as(prefix, first)
            return busy
        self.traces.written(prefix)
        finish = self.run(prefix, f"data-parallel step {graphs[0].dp_step}", npus, comm_group)
        self.traces.done(prefix)
        busy = [finish[n] for n in npus]
        self._cache[key] = (busy, prefix)
        return busy

    @staticmethod
    def place(placement, insts, batches, busy: list[int], t_ns: int, detail: bool, splits=None):
        """The ranks' measured busy times on their NPUs' timelines (host I/O is inside them);
        splits: each rank's (compute, send) per stage, for the accounting."""
        return placement.place_dp(insts, batches, [[(b, 0, 0)] for b in busy], t_ns, detail, splits)
