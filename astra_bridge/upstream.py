"""Upstream ASTRA-Sim: one run of the binary per distinct iteration graph.

Upstream runs one workload to completion and exits (no stdin protocol). Under its congestion-unaware
network a graph's timing does not depend on other graphs, so each distinct graph is run once, in
isolation, and its per-stage busy times are cached; the pipeline overlap between batches is then
composed on our side by the same placement the embedded backend uses (llmsim/backends/placement.py).
"""
import hashlib
import math
import re
import os
import signal
import subprocess
import threading
import time
from collections import deque
from pathlib import Path

from llmsim.backends.base import BatchTiming, StageTimingBackend
from llmsim.backends.embedded import EmbeddedBackend
from llmsim.backends.network import mem_ns
from llmsim.backends.placement import Placement
from llmsim.config.cluster import ClusterConfig
from llmsim.graph.iteration import IterationGraph

from .chakra.codec import comp_node, global_metadata, write_et
from .dp_steps import DPSteps, check_group
from .inputs import astra_layout, write_inputs
from .kv_transfer import rank_pairs, write_kv_transfer
from .run_folder import RunFolder, TraceFiles
from .process import BackendError
from .traces import write_graph

_FINISHED = re.compile(r"sys\[(\d+)\] finished, (\d+) cycles")


class UpstreamBackend(StageTimingBackend):
    name = "astra-sim-upstream"
    needs_graphs = True
    supports_disaggregation = True
    supports_data_parallel = True

    def __init__(self, cluster: ClusterConfig, binary: Path, workdir: Path, timeout_s: float = 60.0,
                 run_folder: RunFolder | None = None, keep_traces: bool = False):
        self.cluster = cluster
        self.binary, self.workdir, self.timeout_s = Path(binary), Path(workdir), timeout_s
        self.run_folder = run_folder  # locked for the run; released (a temporary one removed) by close()
        self.paths = write_inputs(cluster, self.workdir, "upstream")
        layout = astra_layout(cluster, "upstream")
        self.layout = layout if cluster.network is not None else None  # None: ASTRA-Sim numbers NPUs as we do
        self.multi_dim = len(layout.dims) > 1
        self.total_npus = math.prod(layout.dims)
        self._host = {i.index: cluster.cpu_mem[i.node] for i in cluster.instances}
        self.placement = Placement(cluster)
        self._cache: dict[str, tuple[list[int], Path]] = {}  # trace digest -> (stage times, first prefix)
        self.traces = TraceFiles(self.workdir / "graphs", keep_traces)
        self._model = EmbeddedBackend(cluster)  # splits a stage's busy time into compute and SEND for the accounting
        check_group(cluster, "upstream")
        self._dp = DPSteps(self.workdir / "graphs", "upstream", self.total_npus,
                           self.layout.id if self.layout is not None else (lambda n: n), self._write_anonymous,
                           self._run_prefix, self.traces)

    def submit_dp_step(self, insts, batches, tokens, step, graphs, t_ns: int, detail: bool = False):
        splits = [self._model.stage_split(g) for g in graphs] if detail else None
        return self._dp.place(self.placement, insts, batches, self._dp.busy_ns(graphs), t_ns, detail, splits)

    def _write_anonymous(self, graph: IterationGraph, prefix: Path, dp_pg=None) -> None:
        host = self._host[graph.instance]
        write_graph(graph, prefix, "upstream", self.multi_dim,
                    mem_cost_ns=lambda size: mem_ns(host.bw_gbps, host.latency_ns, size), anonymous=True,
                    layout=self.layout, dp_pg=dp_pg)

    def submit(self, inst, batch, graph, t_ns: int, detail: bool = False) -> BatchTiming:
        # ASTRA-Sim's measured stage times already include host-memory loads and stores.
        times = [(busy, 0, 0) for busy in self._stage_busy(graph)]
        split = self._model.stage_split(graph) if detail else None
        events = self.placement.place(graph.instance, graph.first_npu, graph.tp_size, graph.batch_id, times, t_ns, split)
        return BatchTiming(events[0].first_rank_end_ns, events[-1].end_ns, events if detail else None)

    def close(self) -> None:
        if self.run_folder is not None:
            self.run_folder.release()

    def kv_transfer_ns(self, src: int, dst: int, shard_bytes: int) -> int:
        """A prefill instance's KV to a decode instance, run on ASTRA-Sim (kv_transfer.py), cached."""
        key = ("kv", src, dst, shard_bytes)
        if key not in self._cache:
            ident = self.layout.id if self.layout is not None else (lambda n: n)
            pairs = rank_pairs(self.cluster, src, dst, ident)
            prefix = write_kv_transfer(self.workdir / "graphs" / f"kv_{src}_{dst}_{shard_bytes}" / "llm", pairs,
                                       shard_bytes, "upstream", self.total_npus)
            finish = self._run_prefix(prefix, f"KV transfer instance {src} -> {dst}", [d for _, d in pairs])
            self._cache[key] = (max(finish[d] for _, d in pairs), prefix)
            self.traces.written(prefix)
            self.traces.done(prefix)
        return self._cache[key][0]

    def _run_prefix(self, prefix: Path, what: str, needed: list[int], comm_group: Path | None = None) -> dict[int, int]:
        """Run the binary on one workload; the NPUs in `needed` must report their finish."""
        cmd = [str(self.binary), f"--workload-configuration={prefix}",
               f"--system-configuration={self.paths.system}", f"--network-configuration={self.paths.network}",
               f"--remote-memory-configuration={self.paths.memory}"]
        if comm_group is not None:
            cmd.append(f"--comm-group-configuration={comm_group}")
        finish, code, last, why = _run_bounded(cmd, prefix.parent, self.timeout_s, self.binary)
        if why:
            raise BackendError(f"{self.binary}: {what}: {why}; last output: {last[:200]!r}")
        missing = [n for n in needed if n not in finish]
        if code or missing:
            raise BackendError(f"{self.binary}: {what}: exit code {code}, NPUs {missing} never finished; "
                               f"last output: {last[:200]!r}")
        return finish

    def _stage_busy(self, graph: IterationGraph) -> list[int]:
        prefix = self.workdir / "graphs" / f"instance{graph.instance}_batch{graph.batch_id}" / "llm"
        self._write_anonymous(graph, prefix)
        ident = self.layout.id if self.layout is not None else (lambda n: n)
        # Upstream simulates the whole system: other NPUs get a 1 us compute node (it rejects an
        # empty workload); they exchange nothing with ours, so our timing is unaffected.
        mine = {ident(graph.npu(s, r)) for s in range(graph.pp_size) for r in range(graph.tp_size)}
        idle = [comp_node("upstream", 0, "idle", 1000)]
        for npu in range(self.total_npus):
            if npu not in mine:
                write_et(f"{prefix}.{npu}.et", global_metadata(schema="1.0.2-chakra.0.0.4"), idle)
        key = hashlib.sha256(b"".join(Path(f"{prefix}.{n}.et").read_bytes() for n in sorted(mine))).hexdigest()
        if key in self._cache:
            busy, first = self._cache[key]
            self.traces.same_as(prefix, first)
            return busy
        self.traces.written(prefix)
        finish = self._run(prefix, graph, ident)
        self.traces.done(prefix)
        ends = [finish[ident(graph.npu(s, 0))] for s in range(graph.pp_size)]
        # A stage starts when its RECV completes, i.e. when the previous stage's SEND lands.
        busy = [ends[0]] + [b - a for a, b in zip(ends, ends[1:])]
        self._cache[key] = (busy, prefix)
        return busy

    def _run(self, prefix: Path, graph: IterationGraph, ident) -> dict[int, int]:
        return self._run_prefix(prefix, f"instance {graph.instance} batch {graph.batch_id}",
                                [ident(graph.npu(s, 0)) for s in range(graph.pp_size)])


_MAX_OUTPUT = 64 << 20  # bytes of output read before the binary is deemed to be flooding


def _run_bounded(cmd: list[str], cwd: Path, timeout_s: float, binary: Path):
    """Run one upstream binary in its own process group; read its output streaming and bounded.

    Returns (finish times by NPU, exit code, last non-empty output line, why it was stopped or "").
    The whole group (the binary and anything it started) is killed on every path.
    """
    try:
        proc = subprocess.Popen(cmd, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, start_new_session=True)
    except OSError as e:
        raise BackendError(f"{binary}: cannot run ({e.strerror})") from None
    finish: dict[int, int] = {}
    out_tail, err_tail = deque(maxlen=20), deque(maxlen=20)
    seen = [0]
    flooded = threading.Event()

    def read(stream, tail, parse):
        for raw in iter(lambda: stream.readline(65536), b""):
            seen[0] += len(raw)
            line = raw.decode("utf-8", errors="replace").rstrip()
            if parse:
                for n, t in _FINISHED.findall(line):
                    finish[int(n)] = int(t)
            if line.strip():
                tail.append(line)
            if seen[0] > _MAX_OUTPUT:
                flooded.set()
                return

    threads = [threading.Thread(target=read, args=(proc.stdout, out_tail, True), daemon=True),
               threading.Thread(target=read, args=(proc.stderr, err_tail, False), daemon=True)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + timeout_s
    why = ""
    try:
        while True:
            if flooded.is_set():
                why = f"printed more than {_MAX_OUTPUT >> 20} MB of output"
                break
            if proc.poll() is not None and not any(t.is_alive() for t in threads):
                break
            if time.monotonic() > deadline:
                why = (f"no result within {timeout_s:g} s" if proc.poll() is None else
                       f"exited (code {proc.returncode}) but something it started kept running past {timeout_s:g} s")
                break
            time.sleep(0.02)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        for t in threads:
            t.join(timeout=2)
        for f in (proc.stdout, proc.stderr):
            try:
                f.close()
            except (OSError, ValueError):
                pass
    last = (list(err_tail) or list(out_tail) or [""])[-1]
    return finish, proc.returncode, last, why
