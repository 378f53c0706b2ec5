"""A data-parallel group's lockstep steps on the binary, for both flavours.

llmsim's lockstep loop (llmsim/dp.py) forms each step; its ranks' graphs (llmsim/graph/dp_step.py)
are written under one prefix, the MoE dispatch and combine as ALL_GATHER and REDUCE_SCATTER over
the group's dimension, and run together in a run of their own. Each rank's finish is its busy time.
Under the congestion-unaware network a step's timing does not depend on other steps, so each
distinct set of traces runs once and is cached by its bytes.
"""
import hashlib
from pathlib import Path

from llmsim.errors import InputError



def check_group(cluster, flavor: str) -> None:
    """The bridge runs one DP group, alone in the cluster, on the reference's flat layout: there the
    group's collectives span whole dimensions (a group beside others would need comm groups)."""
    names = {i.dp_group for i in cluster.instances}
    if names == {None}:
        return
    if len(names) > 1:
        raise InputError(f"{cluster.path}: dp_group: on astra-sim ({flavor}) a data-parallel group must be the whole "
                         "cluster (its collectives span a whole dimension of ASTRA-Sim's network); use --backend "
                         "embedded for several groups or instances beside one")
    if cluster.network is not None:
        raise InputError(f"{cluster.path}: dp_group: on astra-sim ({flavor}) a data-parallel group needs the flat "
                         "network of link_bw / link_latency (its collectives span a whole dimension); drop "
                         "\"network\" or use --backend embedded")


class DPSteps:
    """write(graph, prefix) writes a graph's files as its flavour wants them; run(prefix, what,
    needed NPUs) -> {npu: finish ns} runs the binary once on a workload."""

    def __init__(self, workdir: Path, write, run, traces):
        self.workdir, self.write, self.run, self.traces = workdir, write, run, traces
        self._cache: dict[str, tuple[list[int], Path]] = {}

    def busy_ns(self, graphs) -> list[int]:
        """Each rank's busy time for the step (its stage-0 rank-0 NPU's finish)."""
        prefix = self.workdir / f"dp_step{graphs[0].dp_step}" / "llm"
        for g in graphs:
            self.write(g, prefix)
        npus = [g.npu(0, 0) for g in graphs]
        key = hashlib.sha256(b"".join(Path(f"{prefix}.{n}.et").read_bytes()
                                      for g in graphs for n in range(g.first_npu, g.first_npu + g.tp_size))).hexdigest()
        if key in self._cache:
            busy, first = self._cache[key]
            self.traces.same_as(prefix, first)
            return busy
        self.traces.written(prefix)
        finish = self.run(prefix, f"data-parallel step {graphs[0].dp_step}", npus)
        self.traces.done(prefix)
        busy = [finish[n] for n in npus]
        self._cache[key] = (busy, prefix)
        return busy

    @staticmethod
    def place(placement, insts, batches, busy: list[int], t_ns: int, detail: bool, splits=None):
        """The ranks' measured busy times on their NPUs' timelines (host I/O is inside them);
        splits: each rank's (compute, send) per stage, for the accounting."""
        return placement.place_dp(insts, batches, [[(b, 0, 0)] for b in busy], t_ns, detail, splits)
