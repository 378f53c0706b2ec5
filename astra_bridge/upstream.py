"""Upstream ASTRA-Sim: one run of the binary per distinct iteration graph.

Upstream runs one workload to completion and exits (no stdin protocol). Under its congestion-unaware
network a graph's timing does not depend on other graphs, so each distinct graph is run once, in
isolation, and its per-stage busy times are cached; the pipeline overlap between batches is then
composed on our side by the same placement the embedded backend uses (llmsim/backends/placement.py).
"""
import hashlib
import math
import re
import shutil
import subprocess
from pathlib import Path

from llmsim.backends.base import BatchTiming, StageTimingBackend
from llmsim.backends.network import mem_ns
from llmsim.backends.placement import Placement
from llmsim.config.cluster import ClusterConfig
from llmsim.graph.iteration import IterationGraph

from .chakra.codec import comp_node, global_metadata, write_et
from .inputs import upstream_dims, write_inputs
from .process import BackendError
from .traces import write_graph

_FINISHED = re.compile(r"sys\[(\d+)\] finished, (\d+) cycles")


class UpstreamBackend(StageTimingBackend):
    name = "astra-sim-upstream"
    needs_graphs = True

    def __init__(self, cluster: ClusterConfig, binary: Path, workdir: Path, timeout_s: float = 60.0,
                 remove_workdir: bool = False):
        self.cluster = cluster
        self.binary, self.workdir, self.timeout_s = Path(binary), Path(workdir), timeout_s
        self.remove_workdir = remove_workdir  # a temporary run folder goes with close()
        self.paths = write_inputs(cluster, self.workdir, "upstream")
        self.multi_dim = len(upstream_dims(cluster)) > 1
        self.total_npus = math.prod(upstream_dims(cluster))
        self._host = {i.index: cluster.cpu_mem[i.node] for i in cluster.instances}
        self.placement = Placement(cluster)
        self._cache: dict[str, list[int]] = {}

    def submit(self, inst, batch, graph, t_ns: int, detail: bool = False) -> BatchTiming:
        # ASTRA-Sim's measured stage times already include host-memory loads and stores.
        times = [(busy, 0, 0) for busy in self._stage_busy(graph)]
        events = self.placement.place(graph.instance, graph.first_npu, graph.tp_size, graph.batch_id, times, t_ns)
        return BatchTiming(events[0].first_rank_end_ns, events[-1].end_ns, events if detail else None)

    def close(self) -> None:
        if self.remove_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.remove_workdir = False

    def _stage_busy(self, graph: IterationGraph) -> list[int]:
        prefix = self.workdir / "graphs" / f"instance{graph.instance}_batch{graph.batch_id}" / "llm"
        host = self._host[graph.instance]
        write_graph(graph, prefix, "upstream", self.multi_dim,
                    mem_cost_ns=lambda size: mem_ns(host.bw_gbps, host.latency_ns, size))
        # Upstream simulates the whole system: other NPUs get a 1 us compute node (it rejects an
        # empty workload); they exchange nothing with ours, so our timing is unaffected.
        mine = {graph.npu(s, r) for s in range(graph.pp_size) for r in range(graph.tp_size)}
        idle = [comp_node("upstream", 0, "idle", 1000)]
        for npu in range(self.total_npus):
            if npu not in mine:
                write_et(f"{prefix}.{npu}.et", global_metadata(schema="1.0.2-chakra.0.0.4"), idle)
        key = hashlib.sha256(b"".join(Path(f"{prefix}.{n}.et").read_bytes() for n in sorted(mine))).hexdigest()
        if key not in self._cache:
            finish = self._run(prefix, graph)
            ends = [finish[graph.npu(s, 0)] for s in range(graph.pp_size)]
            # A stage starts when its RECV completes, i.e. when the previous stage's SEND lands.
            self._cache[key] = [ends[0]] + [b - a for a, b in zip(ends, ends[1:])]
        return self._cache[key]

    def _run(self, prefix: Path, graph: IterationGraph) -> dict[int, int]:
        cmd = [str(self.binary), f"--workload-configuration={prefix}",
               f"--system-configuration={self.paths.system}", f"--network-configuration={self.paths.network}",
               f"--remote-memory-configuration={self.paths.memory}"]
        what = f"instance {graph.instance} batch {graph.batch_id}"
        try:
            done = subprocess.run(cmd, cwd=prefix.parent, capture_output=True, text=True, timeout=self.timeout_s,
                                  start_new_session=True)
        except subprocess.TimeoutExpired:
            raise BackendError(f"{self.binary}: no result for {what} within {self.timeout_s:g} s (a hung trace?)") from None
        except OSError as e:
            raise BackendError(f"{self.binary}: cannot run ({e.strerror})") from None
        finish = {int(n): int(t) for n, t in _FINISHED.findall(done.stdout)}
        missing = [graph.npu(s, 0) for s in range(graph.pp_size) if graph.npu(s, 0) not in finish]
        if done.returncode or missing:
            last = (done.stderr.strip() or done.stdout.strip()).splitlines()[-1:] or [""]
            raise BackendError(f"{self.binary}: {what}: exit code {done.returncode}, NPUs {missing} never finished; "
                               f"last output: {last[0][:200]!r}")
        return finish
