"""Driving the LLMServingSim fork of ASTRA-Sim: one persistent process owns the clock.

Each report `sys[n] iteration k finished, T cycles` + `Waiting` gets one answer: a workload prefix,
`pass` or `exit`. Reports come from each instance's start NPU (stage 0, rank 0) and end NPU (last
NPU); middle NPUs are fed by their start NPU. A start NPU finishing a batch frees stage 0; the end
NPU finishing it completes the batch. Where the reference answers `pass` to an idle pipeline and
lets ASTRA-Sim creep forward in 1 ms steps, we hand it a wait workload that ends exactly at the
next arrival, so arrivals are scheduled when they happen, as on the embedded backend.

The fork owns the clock: this backend drives the run's Session (llmsim/session.py) through its
steps as the reports arrive. Protocol and files: docs/astra-sim-interface.md.
"""
import shutil
from collections import deque
from pathlib import Path

from llmsim.backends.base import ClockOwningBackend, StageEvent
from llmsim.backends.embedded import EmbeddedBackend
from llmsim.results import SimResult
from llmsim.session import Session

from .inputs import topology_dims, write_inputs
from .process import AstraProcess, BackendError
from .traces import write_graph, write_wait


class ForkBackend(ClockOwningBackend):
    name = "astra-sim-fork"

    def __init__(self, cluster, binary: Path, workdir: Path, timeout_s: float = 60.0, remove_workdir: bool = False):
        self.cluster = cluster
        self.binary = Path(binary)
        self.workdir = Path(workdir)
        self.timeout_s = timeout_s
        self.remove_workdir = remove_workdir  # a temporary run folder goes with close()
        self.multi_dim = len(topology_dims(cluster)) > 1
        self._waits = 0
        self.session: Session | None = None
        # The embedded model's timeline, run alongside: it predicts when batches in flight complete,
        # so stage 0 can sleep until then and a hung trace is recognised.
        self.shadow = EmbeddedBackend(cluster)
        self._predicted: dict[tuple[int, int], int] = {}
        self._sched_ns: dict[tuple[int, int], int] = {}  # when each batch in flight was formed
        self._end_ns = 0  # the last completion: the run's end, as on the embedded backend

    def close(self) -> None:
        if self.remove_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.remove_workdir = False

    # -- files --------------------------------------------------------------------------------------
    def _batch_prefix(self, i: int, batch_id: int) -> Path:
        return self.workdir / "workload" / f"instance{i}_batch{batch_id}" / "llm"

    def _wait_prefix(self, inst_cfg, until_ns: int, now: int) -> Path:
        """A wait for the start NPU; the NPUs it manages get an empty workload, so a busy middle
        stage is not held up."""
        self._waits += 1
        others = range(inst_cfg.first_npu + 1, inst_cfg.first_npu + inst_cfg.num_npus)
        return write_wait([inst_cfg.first_npu], self.workdir / "workload" / f"wait{self._waits}" / "llm",
                          "llmservingsim", until_ns - now, empty=others)

    def _wake_time(self, i: int, now: int) -> int | None:
        """When instance i's stage 0 should next look for work: the next arrival or the predicted
        completion of one of its batches. None: answer `pass` (ASTRA-Sim polls it at its next
        event), also when one of its batches is overdue against the prediction."""
        mine = [t for (inst, _), t in self._predicted.items() if inst == i]
        if any(t <= now for t in mine):
            return None
        nxt = self.session.next_arrival_ns()
        if nxt is not None and nxt > now:
            mine.append(nxt)
        return min(mine) if mine else None

    def _command(self, paths, first_wait: Path) -> list[str]:
        starts = [str(i.first_npu) for i in self.cluster.instances]
        ends = [str(i.first_npu + i.num_npus - 1) for i in self.cluster.instances if i.num_npus > 1]
        cmd = [str(self.binary), f"--workload-configuration={first_wait}",
               f"--system-configuration={paths.system}", f"--network-configuration={paths.network}",
               f"--memory-configuration={paths.memory}", f"--start-npu-ids={','.join(starts)},"]
        if ends:  # the fork cannot parse an empty list
            cmd.append(f"--end-npu-ids={','.join(ends)},")
        return cmd

    # -- the loop -------------------------------------------------------------------------------------
    def drive(self, session: Session) -> SimResult:
        self.session = s = session
        paths = write_inputs(self.cluster, self.workdir, "llmservingsim")
        all_npus = range(self.cluster.total_npus)
        first = s.next_arrival_ns() or 0
        startup = write_wait(all_npus, self.workdir / "workload" / "event_handler" / "llm", "llmservingsim", max(1, first))
        role = {}
        for inst in self.cluster.instances:
            last = inst.first_npu + inst.num_npus - 1
            role[inst.first_npu] = (inst.index, True, last == inst.first_npu)
            if last != inst.first_npu:
                role[last] = (inst.index, False, True)
        given = {n: [("wait", None)] for n in role}  # what each reporting NPU has been handed, in order
        seen = {n: -1 for n in role}
        n_inst = len(s.instances)
        stage0_busy = [True] * n_inst  # until the start-up wait ends
        for_end = [deque() for _ in range(n_inst)]  # batches formed but not yet handed to the end NPU
        early = [None] * n_inst  # pp=1, tp>1: batch formed at the end NPU's report
        wait_until = [max(1, first)] * n_inst
        reported: dict[tuple[int, int], set] = {}  # pp=1, tp>1: which rank has reported a batch
        proc = AstraProcess(self._command(paths, startup), str(self.workdir), self.timeout_s)
        now = 0
        try:
            while True:
                inflight = [f"instance {b.instance} batch {b.id}" for b in s.in_flight.values()]
                r = proc.next_report(f"batches in flight: {', '.join(inflight) or 'none'}")
                if r.npu not in role:
                    raise BackendError(f"ASTRA-Sim reported NPU {r.npu}, which starts or ends no instance")
                now = max(now, r.tick_ns)
                s.heartbeat(now)
                i, is_start, is_end = role[r.npu]
                inst = s.instances[i]
                for k in range(seen[r.npu] + 1, r.iteration + 1):
                    if k >= len(given[r.npu]):
                        raise BackendError(f"ASTRA-Sim says NPU {r.npu} finished workload {k}, but only "
                                           f"{len(given[r.npu])} were given to it")
                    kind, bid = given[r.npu][k]
                    if is_start:
                        stage0_busy[i] = False
                    if kind != "batch":
                        continue
                    if inst.config.pp_size == 1 and not (is_start and is_end):
                        # both ranks of the only stage run it: done when the second one reports
                        reported.setdefault((i, bid), set()).add(r.npu)
                        if len(reported[(i, bid)]) == 2:
                            del reported[(i, bid)]
                            self._complete(i, bid, now)
                    elif is_end:
                        self._complete(i, bid, now)
                seen[r.npu] = max(seen[r.npu], r.iteration)
                self._check_overdue(now)
                pp1_split = inst.config.pp_size == 1 and not (is_start and is_end)
                start_npu = inst.config.first_npu
                s.deliver_arrivals(now)
                if s.idle() and not s.in_flight:
                    if all(seen[n] == len(given[n]) - 1 for n in role):
                        proc.answer("exit")
                        break
                    proc.answer("pass")  # a wait workload is still running somewhere
                    continue
                answer = "pass"
                if is_end and not is_start:
                    if for_end[i]:
                        bid = for_end[i].popleft()
                        given[r.npu].append(("batch", bid))
                        answer = str(self._batch_prefix(i, bid))
                    elif (pp1_split and early[i] is None
                          and self._start_free(given[start_npu], seen[start_npu], wait_until[i], now)):
                        # Both TP ranks of the only stage are free now: form the batch at this report
                        # so the end rank starts it now too, not at the next event tick.
                        bid = self._form(i, now)
                        if bid is not None:
                            early[i] = bid
                            given[r.npu].append(("batch", bid))
                            answer = str(self._batch_prefix(i, bid))
                elif is_start:
                    bid = None
                    if early[i] is not None:
                        bid, early[i] = early[i], None
                    elif not stage0_busy[i]:
                        bid = self._form(i, now)
                        if bid is not None and not is_end:
                            for_end[i].append(bid)
                    if bid is not None:
                        given[r.npu].append(("batch", bid))
                        stage0_busy[i] = True
                        answer = str(self._batch_prefix(i, bid))
                    elif not stage0_busy[i]:
                        # Stage 0 is idle with nothing to run. ASTRA-Sim would poll it at its next
                        # event (any node finishing anywhere, or a 1 ms idle step), so an arrival
                        # would be taken in late. Instead it sleeps exactly until the next arrival
                        # or the predicted completion of a batch in flight, whichever comes first.
                        t = self._wake_time(i, now)
                        if t is not None:
                            given[r.npu].append(("wait", None))
                            wait_until[i] = t
                            stage0_busy[i] = True
                            answer = str(self._wait_prefix(inst.config, t, now))
                proc.answer(answer)
            verdict = proc.finish()
            if "Some Requests Remain" in verdict:
                raise BackendError(f"ASTRA-Sim: {verdict}")
        finally:
            proc.close()
        return s.finish(self._end_ns)

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

    def _start_free(self, start_given: list, start_seen: int, wait_until: int, now: int) -> bool:
        """pp=1: is the start NPU (the other rank of the same stage) done with its last workload?
        A wait ends exactly when we said; a batch only once that rank has reported it."""
        kind, _ = start_given[-1]
        if kind == "wait":
            return wait_until <= now
        return start_seen == len(start_given) - 1

    def _form(self, i: int, now: int) -> int | None:
        formed = self.session.form_batch(i, now)
        if formed is None:
            return None
        batch, graph = formed
        write_graph(graph, self._batch_prefix(i, batch.id), "llmservingsim", self.multi_dim)
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
        self._end_ns = max(self._end_ns, now)
        s.complete_batch(i, bid, now)
