"""Driving the LLMServingSim fork of ASTRA-Sim: one persistent process owns the clock.

Each report `sys[n] iteration k finished, T cycles` + `Waiting` gets one answer: a workload prefix,
`pass` or `exit`. Reports come from each instance's start NPU (stage 0, rank 0) and end NPU (last
NPU); middle NPUs are fed by their start NPU. A start NPU finishing a batch frees stage 0; the end
NPU finishing it completes the batch. Where the reference answers `pass` to an idle pipeline and
lets ASTRA-Sim creep forward in 1 ms steps, we hand it a wait workload that ends exactly at the
next arrival, so arrivals are scheduled when they happen, as on the embedded backend.

The fork owns the clock: this backend drives the run's Session (llmsim/session.py) through its
steps as the reports arrive. Protocol and files: docs/astra-sim-interface.md.

With pp > 1 and vLLM's batch formation (llmsim/engine.py), batches are formed when a batch
completes (or a request reaches an idle instance) and queue until the start NPU reports stage 0
free; with the reference's rule, when the start NPU reports stage 0 free.

Prefill/decode pools: KV transfers run on the same binary in runs of their own (kv_transfer.py);
prefill NPUs are numbered first (ASTRA-Sim asks NPUs in id order at a tick) and an idle stage 0
also wakes at every batch's predicted completion (docs/disaggregation.md).
"""
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from llmsim.backends.base import ClockOwningBackend, StageEvent
from llmsim.backends.embedded import EmbeddedBackend
from llmsim.backends.placement import Placement
from llmsim.errors import InputError
from llmsim.results import SimResult
from llmsim.session import Session

from .dp_steps import DPSteps, check_group
from .inputs import astra_layout, prefill_first, topology_dims, write_inputs
from .kv_transfer import rank_pairs, write_kv_transfer
from .run_folder import RunFolder, TraceFiles
from .process import AstraProcess, BackendError, run_on_fork
from .traces import write_graph, write_wait


@dataclass
class _Npu:
    """A reporting NPU: an instance's start NPU (stage 0, rank 0) or its end NPU (the last one)."""
    instance: int
    is_start: bool
    is_end: bool
    given: list = field(default_factory=lambda: [("wait", None)])  # handed, in order: (kind, batch or wait id)
    seen: int = -1  # the last workload it reported finished


@dataclass
class _Stage0:
    """An instance's stage 0 as the driver sees it."""
    wait_until: int  # when its last wait workload ends
    busy: bool = True  # until the start-up wait ends
    for_end: deque = field(default_factory=deque)  # batches started but not yet handed to the end NPU
    early: int | None = None  # pp=1, tp>1: a batch formed at the end NPU's report
    ready: deque = field(default_factory=deque)  # vLLM's batch queue: formed, waiting for stage 0
    may_form: bool = True  # vLLM's engine is not blocked on its oldest batch


class ForkBackend(ClockOwningBackend):
    name = "astra-sim-fork"
    supports_disaggregation = True
    supports_data_parallel = True  # each step in a run of its own (dp_steps.py), llmsim's lockstep loop

    def __init__(self, cluster, binary: Path, workdir: Path, timeout_s: float = 60.0,
                 run_folder: RunFolder | None = None, keep_traces: bool = False):
        self.cluster = cluster
        self.binary = Path(binary)
        self.workdir = Path(workdir)
        self.timeout_s = timeout_s
        self.run_folder = run_folder  # locked for the run; released (a temporary one removed) by close()
        self.multi_dim = len(topology_dims(cluster)) > 1
        # ASTRA-Sim's NPU numbers (a node-aware network reorders them; llmsim/config/network.py)
        self.layout = astra_layout(cluster) if cluster.network is not None else None
        self._pd = any(i.pd_type for i in cluster.instances)  # prefill/decode pools
        if self._pd:
            self.layout = prefill_first(cluster, self.layout or astra_layout(cluster))
        self._id = self.layout.id if self.layout is not None else (lambda n: n)
        if self.layout is not None:
            for inst in cluster.instances:
                ids = [self._id(p) for p in range(inst.first_npu, inst.first_npu + inst.num_npus)]
                if sorted(ids) != list(range(min(ids), max(ids) + 1)) or (ids[0], ids[-1]) != (min(ids), max(ids)):
                    raise InputError(f"{inst.where}: the fork needs each instance's NPUs numbered from its first stage "
                                     "to its last in one run of ASTRA-Sim ids, which this node layout breaks; use "
                                     "--astra-sim-flavor upstream or --backend embedded")
        self.traces = TraceFiles(self.workdir / "workload", keep_traces)
        self._waits = 0
        self.session: Session | None = None
        # The embedded model's timeline, run alongside: it predicts when batches in flight complete,
        # so stage 0 can sleep until then and a hung trace is recognised.
        self.shadow = EmbeddedBackend(cluster)
        self._predicted: dict[tuple[int, int], int] = {}
        self._sched_ns: dict[tuple[int, int], int] = {}  # when each batch in flight was formed
        self._end_ns = 0  # the last completion: the run's end, as on the embedded backend
        self._kv: dict[tuple[int, int, int], int] = {}  # (src, dst, shard bytes) -> transfer ns
        self.paths = None
        check_group(cluster, "llmservingsim")
        self._dp = DPSteps(self.workdir / "workload", "llmservingsim", cluster.total_npus, self._id,
                           self._write_anonymous, self._run_once, self.traces)
        self._dp_placement = None

    def _inputs(self):
        """ASTRA-Sim's input files, written once (by drive(), or by the first run of its own)."""
        if self.paths is None:
            self.paths = write_inputs(self.cluster, self.workdir, "llmservingsim")
        return self.paths

    def submit_dp_step(self, insts, batches, tokens, step, graphs, t_ns: int, detail: bool = False):
        self._inputs()
        if self._dp_placement is None:
            self._dp_placement = Placement(self.cluster)
        splits = [self.shadow.stage_split(g) for g in graphs] if detail else None
        return self._dp.place(self._dp_placement, insts, batches, self._dp.busy_ns(graphs), t_ns, detail, splits)

    def _write_anonymous(self, graph, prefix: Path, dp_pg=None) -> None:
        write_graph(graph, prefix, "llmservingsim", self.multi_dim, anonymous=True, layout=self.layout, dp_pg=dp_pg)

    def _run_once(self, prefix: Path, what: str, needed: list[int], comm_group: Path | None = None) -> dict[int, int]:
        return run_on_fork(self.binary, self._inputs(), prefix, needed, self.cluster.total_npus, self.timeout_s, what,
                           comm_group)

    def close(self) -> None:
        if self.run_folder is not None:
            self.run_folder.release()

    def kv_transfer_ns(self, src: int, dst: int, shard_bytes: int) -> int:
        """Prefill/decode disaggregation: the KV transfer run on the fork, in a process of its own
        (kv_transfer.py), once per shape; the run's persistent process is never given it."""
        key = (src, dst, shard_bytes)
        if key not in self._kv:
            pairs = rank_pairs(self.cluster, src, dst, self._id)
            prefix = write_kv_transfer(self.workdir / "workload" / f"kv_{src}_{dst}_{shard_bytes}" / "llm", pairs,
                                       shard_bytes, "llmservingsim", self.cluster.total_npus)
            self.traces.written(prefix)
            finish = self._run_once(prefix, "timing a KV transfer", [d for _, d in pairs])
            self._kv[key] = max(finish.values())
            self.traces.done(prefix)
        return self._kv[key]

    # -- files --------------------------------------------------------------------------------------
    def _batch_prefix(self, i: int, batch_id: int) -> Path:
        return self.workdir / "workload" / f"instance{i}_batch{batch_id}" / "llm"

    def _wait_path(self, n: int) -> Path:
        return self.workdir / "workload" / f"wait{n}" / "llm"

    def _wait_prefix(self, inst_cfg, n: int, until_ns: int, now: int) -> Path:
        """A wait for the start NPU; the NPUs it manages get an empty workload, so a busy middle
        stage is not held up."""
        others = [self._id(p) for p in range(inst_cfg.first_npu + 1, inst_cfg.first_npu + inst_cfg.num_npus)]
        return write_wait([self._id(inst_cfg.first_npu)], self._wait_path(n), "llmservingsim", until_ns - now,
                          empty=others)

    def _wake_time(self, i: int, now: int) -> int | None:
        """When instance i's stage 0 should next look for work: the next arrival or the predicted
        completion of one of its batches. None: answer `pass` (ASTRA-Sim polls it at its next
        event), also when one of its batches is overdue against the prediction."""
        # With prefill/decode pools, any batch's completion can hand this instance work (a prefill
        # done hands its request to a decode instance; a decode step starts KV transfers).
        mine = [t for (inst, _), t in self._predicted.items() if inst == i or self._pd]
        if any(t <= now for t in mine):
            return None
        nxt = self.session.next_arrival_ns()
        if nxt is not None and nxt > now:
            mine.append(nxt)
        return min(mine) if mine else None

    def _command(self, paths, first_wait: Path) -> list[str]:
        # in id order: each start NPU manages the ids up to the next one
        starts = [str(n) for n in sorted(self._id(i.first_npu) for i in self.cluster.instances)]
        ends = [str(n) for n in sorted(self._id(i.first_npu + i.num_npus - 1) for i in self.cluster.instances
                                       if i.num_npus > 1)]
        cmd = [str(self.binary), f"--workload-configuration={first_wait}",
               f"--system-configuration={paths.system}", f"--network-configuration={paths.network}",
               f"--memory-configuration={paths.memory}", f"--start-npu-ids={','.join(starts)},"]
        if ends:  # the fork cannot parse an empty list
            cmd.append(f"--end-npu-ids={','.join(ends)},")
        return cmd

    # -- the loop -------------------------------------------------------------------------------------
    def drive(self, session: Session) -> SimResult:
        self.session = s = session
        paths = self._inputs()
        first = max(1, s.next_arrival_ns() or 0)
        startup = write_wait(range(self.cluster.total_npus), self.workdir / "workload" / "event_handler" / "llm",
                             "llmservingsim", first)
        self._npus: dict[int, _Npu] = {}
        for inst in self.cluster.instances:
            first, last = self._id(inst.first_npu), self._id(inst.first_npu + inst.num_npus - 1)
            self._npus[first] = _Npu(inst.index, True, last == first)
            if last != first:
                self._npus[last] = _Npu(inst.index, False, True)
        self._stage0 = [_Stage0(wait_until=first) for _ in s.instances]
        self._queue_rule = [i.args.batch_formation == "vllm" and i.config.pp_size > 1 for i in s.instances]
        self._open_waits: list[list[int]] = [[] for _ in s.instances]  # waits handed since the last batch
        self._waits_before: dict[tuple[int, int], list[int]] = {}
        self._reported: dict[tuple[int, int], set] = {}  # pp=1, tp>1: which ranks have reported a batch
        proc = AstraProcess(self._command(paths, startup), str(self.workdir), self.timeout_s)
        now = 0
        try:
            while True:
                inflight = [f"instance {b.instance} batch {b.id}" for b in s.in_flight.values()]
                r = proc.next_report(f"batches in flight: {', '.join(inflight) or 'none'}")
                npu = self._npus.get(r.npu)
                if npu is None:
                    raise BackendError(f"ASTRA-Sim reported NPU {r.npu}, which starts or ends no instance")
                now = max(now, r.tick_ns)
                s.heartbeat(now)
                self._finished_upto(r.npu, npu, r.iteration, now)
                self._check_overdue(now)
                s.deliver_arrivals(now)
                for i, st in enumerate(self._stage0):
                    if self._queue_rule[i] and (st.may_form or not s.instances[i].scheduler.inflight):
                        self._fill_queue(i, st, now)
                if s.idle() and not s.in_flight:
                    if all(n.seen == len(n.given) - 1 for n in self._npus.values()):
                        proc.answer("exit")
                        break
                    proc.answer("pass")  # a wait workload is still running somewhere
                    continue
                if npu.is_start:
                    proc.answer(self._answer_start(npu, now))
                else:
                    proc.answer(self._answer_end(npu, now))
            verdict = proc.finish()
            if "Some Requests Remain" in verdict:
                raise BackendError(f"ASTRA-Sim: {verdict}")
        finally:
            proc.close()
            for n in (n for waits in [*self._open_waits, *self._waits_before.values()] for n in waits):
                self.traces.done(self._wait_path(n))  # the binary has exited: nothing reads them now
        return s.finish(self._end_ns)

    def _pp1_split(self, i: int) -> bool:
        """pp=1 with tp > 1: the start and end NPUs are two ranks of the only stage."""
        cfg = self.cluster.instances[i]
        return cfg.pp_size == 1 and cfg.num_npus > 1

    def _finished_upto(self, n: int, npu: "_Npu", iteration: int, now: int) -> None:
        """NPU n reports its workloads up to `iteration` finished: free stage 0, complete batches."""
        i = npu.instance
        for k in range(npu.seen + 1, iteration + 1):
            if k >= len(npu.given):
                raise BackendError(f"ASTRA-Sim says NPU {n} finished workload {k}, but only "
                                   f"{len(npu.given)} were given to it")
            kind, bid = npu.given[k]
            if npu.is_start:
                self._stage0[i].busy = False
            if kind != "batch":
                continue
            if self._pp1_split(i):
                # both ranks of the only stage run it: done when the second one reports
                ranks = self._reported.setdefault((i, bid), set())
                ranks.add(n)
                if len(ranks) == 2:
                    del self._reported[(i, bid)]
                    self._complete(i, bid, now)
            elif npu.is_end:
                self._complete(i, bid, now)
        npu.seen = max(npu.seen, iteration)

    def _hand(self, npu: "_Npu", bid: int) -> str:
        npu.given.append(("batch", bid))
        return str(self._batch_prefix(npu.instance, bid))

    def _answer_end(self, npu: "_Npu", now: int) -> str:
        """The end NPU: the next batch stage 0 has started, if any."""
        i, st = npu.instance, self._stage0[npu.instance]
        if st.for_end:
            return self._hand(npu, st.for_end.popleft())
        start = self._npus[self._id(self.cluster.instances[i].first_npu)]
        if self._pp1_split(i) and st.early is None and self._start_free(start, st.wait_until, now):
            # Both TP ranks of the only stage are free now: form the batch at this report so the
            # end rank starts it now too, not at the next event tick.
            bid = self._form(i, now)
            if bid is not None:
                st.early = bid
                return self._hand(npu, bid)
        return "pass"

    def _answer_start(self, npu: "_Npu", now: int) -> str:
        """The start NPU (stage 0, rank 0): a new batch when stage 0 is free, else maybe a wait."""
        i, st = npu.instance, self._stage0[npu.instance]
        bid = None
        if st.early is not None:
            bid, st.early = st.early, None
        elif self._queue_rule[i]:
            if not st.busy and st.ready:
                bid = st.ready.popleft()
                if not npu.is_end:
                    st.for_end.append(bid)
        elif not st.busy:
            bid = self._form(i, now)
            if bid is not None and not npu.is_end:
                st.for_end.append(bid)
        if bid is not None:
            st.busy = True
            return self._hand(npu, bid)
        if st.busy:
            return "pass"
        # Stage 0 is idle with nothing to run. ASTRA-Sim would poll it at its next event (any node
        # finishing anywhere, or a 1 ms idle step), so an arrival would be taken in late. Instead
        # it sleeps exactly until the next arrival or the predicted completion of a batch in
        # flight, whichever comes first.
        t = self._wake_time(i, now)
        if t is None:
            return "pass"
        self._waits += 1
        npu.given.append(("wait", self._waits))
        self._open_waits[i].append(self._waits)
        st.wait_until = t
        st.busy = True
        return str(self._wait_prefix(self.cluster.instances[i], self._waits, t, now))

    def _check_overdue(self, now: int) -> None:
        """A trace that cannot finish (a RECV without its SEND, say) makes ASTRA-Sim idle forward in
        1 ms steps for ever: stop once a batch is far past the embedded model's prediction."""
        for (i, bid), t in self._predicted.items():
            start = self._sched_ns[(i, bid)]
            if now - t > max(1_000_000_000, 10 * (t - start)):
                cfg = self.cluster.instances[i]
                npus = list(range(cfg.first_npu, cfg.first_npu + cfg.num_npus))
                raise BackendError(f"instance {i} batch {bid} (NPUs {npus}) has not finished at {now} ns; predicted "
                                   f"{t} ns: a hung trace (unmatched send/recv?) in {self._batch_prefix(i, bid)}.*.et")

    @staticmethod
    def _start_free(start: "_Npu", wait_until: int, now: int) -> bool:
        """pp=1: is the start NPU (the other rank of the same stage) done with its last workload?
        A wait ends exactly when we said; a batch only once that rank has reported it."""
        kind, _ = start.given[-1]
        if kind == "wait":
            return wait_until <= now
        return start.seen == len(start.given) - 1

    def _fill_queue(self, i: int, st: "_Stage0", now: int) -> None:
        """vLLM's engine schedules until its batch queue is full or nothing new can run, then blocks
        on its oldest batch until that completes."""
        while True:
            bid = self._form(i, now)
            if bid is None:
                st.may_form = False
                return
            st.ready.append(bid)

    def _form(self, i: int, now: int) -> int | None:
        formed = self.session.form_batch(i, now)
        if formed is None:
            return None
        batch, graph = formed
        prefix = write_graph(graph, self._batch_prefix(i, batch.id), "llmservingsim", self.multi_dim, layout=self.layout)
        self.traces.written(prefix)
        self._waits_before[(i, batch.id)], self._open_waits[i] = self._open_waits[i], []
        self._predicted[(i, batch.id)] = self.shadow.submit(self.session.instances[i], batch, graph, now).end_ns
        self._sched_ns[(i, batch.id)] = now
        return batch.id

    def _complete(self, i: int, bid: int, now: int) -> None:
        s = self.session
        batch = s.in_flight[(i, bid)]
        cfg = s.instances[i].config
        # ASTRA-Sim reports only the start and end NPUs: the iteration log gets one whole-batch row.
        s.record(batch, [StageEvent(i, cfg.pp_size - 1, cfg.first_npu + cfg.num_npus - 1, bid,
                                    self._sched_ns.pop((i, bid)), now)])
        del self._predicted[(i, bid)]
        # Every NPU of the instance is done with the batch, and so with the waits handed before it:
        # the NPUs a start NPU manages queue their empty wait workloads and open them in turn.
        self.traces.done(self._batch_prefix(i, bid))
        for n in self._waits_before.pop((i, bid)):
            self.traces.done(self._wait_path(n))
        self._end_ns = max(self._end_ns, now)
        s.complete_batch(i, bid, now)
        self._stage0[i].may_form = True
