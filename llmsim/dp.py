"""Data-parallel groups (cluster config `dp_group`) as vLLM 0.19 serves a mixture-of-experts model
with data_parallel_size > 1 and expert parallelism (docs/moe.md, "Data parallelism").

- Each DP rank is an instance: its own scheduler and KV cache (vLLM: one DPEngineCoreProc each).
- Requests go to a rank as the API server's DP load balancer picks it (DPLBAsyncMPClient
  .get_core_engine_for_request, vllm/v1/engine/core_client.py): the least waiting * 4 + running,
  the first such rank from rank 0 on, read from counts the DP coordinator publishes at most every
  100 ms (DPCoordinator, vllm/v1/engine/coordinator.py: stats_update_interval_ms = 100), to which
  the client adds one waiting request per request it routes in between.
- The ranks step in lockstep: every MoE layer all-gathers the tokens of every rank, so each step
  of a rank meets the same step of the others. A rank with nothing scheduled runs a dummy batch
  (DPEngineCoreProc.run_busy_loop -> execute_dummy_batch: a 1-token forward) while the group's
  wave runs; the wave ends at a step that is a multiple of 32 when no rank has unfinished requests
  (_has_global_unfinished_reqs all-reduces only every 32 steps). When the step runs under CUDA
  graphs (its largest rank within the capture sizes: min(2 x max_num_seqs, 512)), every rank is
  padded to the largest rank's tokens (vllm/v1/worker/dp_utils.py coordinate_batch_across_dp).
- A group step takes the slowest rank's time (max over ranks of its step, each MoE layer charged
  the gathered tokens' expert block and the all-gather / reduce-scatter: graph/dp_step.py, timed by
  the backend's submit_dp_step); the ranks' non-MoE work is not aligned layer by layer.
"""
from .accounting import DP_DUMMY, DP_PEER, Accountant, why_idle
from .engine import START_NS
from .graph.dp_step import dp_step, rank_graph
from .results import SimResult
from .session import Session

PUBLISH_NS = 100_000_000  # DPCoordinator's stats_update_interval_ms default (100 ms)
WAITING_WEIGHT = 4  # score = waiting * 4 + running (core_client.py)
WAVE_SYNC_STEPS = 32  # DPEngineCoreProc._has_global_unfinished_reqs: an all-reduce every 32 steps
CUDA_GRAPH_MAX = 512  # vLLM's default largest CUDA graph: min(max_num_seqs * 2, 512)


def is_data_parallel(instances) -> bool:
    return any(i.config.dp_group is not None for i in instances)


def is_lockstep(instances) -> bool:
    """A DP group of a mixture-of-experts model steps in lockstep (its MoE layers meet every step);
    a dense model's DP ranks are independent engines (vLLM: EngineCoreProc, not DPEngineCoreProc),
    served as any instances, routed by the DP load balancer."""
    return is_data_parallel(instances) and instances[0].model.moe is not None


def cuda_graph_max_tokens(max_num_seqs: int, max_num_batched_tokens: int) -> int:
    """The largest step vLLM runs under a CUDA graph by default (its capture sizes end there)."""
    return min(2 * max_num_seqs, CUDA_GRAPH_MAX, max_num_batched_tokens)


def dp_tokens(batches, capture_max: int) -> list[int]:
    """The tokens each rank runs: its batch's (a dummy batch: 1), every rank padded to the largest
    when that fits a CUDA graph (vLLM pads DP ranks only when the synced cudagraph mode is not NONE)."""
    tokens = [b.total_len if b is not None else 1 for b in batches]
    top = max(tokens)
    return [top] * len(tokens) if top <= capture_max else tokens


class DPBalancer:
    """vLLM's DP load balancer: stale per-rank (waiting, running) counts plus local increments."""

    def __init__(self, schedulers):
        self.schedulers = schedulers
        self.counts = [[0, 0] for _ in schedulers]  # the client's lb_engines: (waiting, running)
        self._seen: list = []  # the counts the engines last reported: (t, counts)
        self._tick = -1  # the coordinator's last publish tick applied
        self._last = [(0, 0) for _ in schedulers]  # the counts last reported

    def observe(self, t: int) -> None:
        """The engines report their counts after a step (DPEngineCoreProc._maybe_publish_request_counts)."""
        counts = [(len(s.waiting), len(s.running)) for s in self.schedulers]
        if counts != self._last:  # an engine reports only when its counts changed
            self._last = counts
            self._seen.append((t, counts))

    def pick(self, now: int) -> int:
        tick = now // PUBLISH_NS
        if tick > self._tick:  # the coordinator published what the engines reported by its tick
            self._tick = tick
            while len(self._seen) > 1 and self._seen[1][0] <= tick * PUBLISH_NS:
                self._seen.pop(0)
            if self._seen and self._seen[0][0] <= tick * PUBLISH_NS:
                counts = self._seen.pop(0)[1]
                self.counts = [list(c) for c in counts]
        best, best_score = 0, None
        for i, (waiting, running) in enumerate(self.counts):
            score = waiting * WAITING_WEIGHT + running
            if best_score is None or score < best_score:
                best, best_score = i, score
        self.counts[best][0] += 1  # one client: client_count 1
        return best


class DPSession(Session):
    """The step API with one data-parallel group: arrivals routed by DPBalancer."""

    def __init__(self, instances, requests, *, balancer: bool = True, **kw):
        """balancer: route by vLLM's DP load balancer; False: by the run's router (the reference's)."""
        super().__init__(instances, requests, **kw)
        self.balancer = DPBalancer([i.scheduler for i in instances]) if balancer else None
        self.lockstep = is_lockstep(instances)
        self.dummy_batches = 0
        self.padded_tokens = 0
        self.group_steps = 0

    def _pick(self, now: int) -> int:
        return self.balancer.pick(now) if self.balancer is not None else super()._pick(now)

    def complete_batch(self, i: int, batch_id: int, now: int) -> bool:
        done = super().complete_batch(i, batch_id, now)
        if not self.lockstep and self.balancer is not None:  # an independent engine reports after its step
            self.balancer.observe(now)
        return done

    def finish(self, now: int) -> SimResult:
        result = super().finish(now)
        result.dp = {"group": self.instances[0].config.dp_group, "ranks": len(self.instances),
                     "lockstep": self.lockstep, "steps": self.group_steps, "dummy_batches": self.dummy_batches,
                     "padded_tokens": self.padded_tokens}
        return result


class DPEngine:
    """The lockstep loop of one data-parallel group on a backend that supports_data_parallel."""

    def __init__(self, session: DPSession, backend, accountant: Accountant | None = None):
        self.session = session
        self.backend = backend
        self.acct = accountant  # per-rank busy/idle accounting (dp_peer, dp_dummy among the causes)

    def _idle(self, t: int) -> None:
        """The group forms nothing from t: every rank's idle cause (no request, or none that fits)."""
        if self.acct is not None:
            for i, inst in enumerate(self.session.instances):
                sched = inst.scheduler
                self.acct.state(i, t, why_idle(0, 1, len(sched.waiting), len(sched.running), False,
                                               len(sched.waiting), inst.args.max_num_seqs))

    def _beat(self, t: int) -> None:
        s = self.session
        if s.next_heartbeat_ns is not None and s.next_heartbeat_ns < t:
            s.heartbeat(t)

    def _deliver_until(self, t: int, inclusive: bool) -> None:
        """Route every arrival before t (at t too when inclusive), each at its own time."""
        s = self.session
        while True:
            ta = s.next_arrival_ns()
            if ta is None or ta > t or (ta == t and not inclusive):
                return
            ta = max(ta, START_NS)
            self._beat(ta)
            s.deliver_arrivals(ta)

    def run(self) -> SimResult:
        s, backend = self.session, self.backend
        insts = s.instances
        scheds = [i.scheduler for i in insts]
        args = insts[0].args
        capture = cuda_graph_max_tokens(args.max_num_seqs, args.max_num_batched_tokens)
        acct = self.acct
        detail = s.record_iterations or acct is not None
        now, running, counter = 0, False, 0
        while True:
            if not running:  # paused: wait for a request; a new one starts a wave on every rank
                self._idle(now)
                if not any(x.has_work for x in scheds):
                    ta = s.next_arrival_ns()
                    if ta is None:
                        break
                    now = max(now, ta)
                now = max(now, START_NS)
                self._deliver_until(now, True)
                running, counter = True, 0
            formed = [s.form_batch(i, now, False, dump=False) for i in range(len(insts))]
            batches = [f[0] if f is not None else None for f in formed]
            if all(b is None for b in batches) and any(x.has_work for x in scheds):
                self._idle(now)
                ta = s.next_arrival_ns()  # nothing can be scheduled until a request arrives
                if ta is None:
                    break
                now = max(now, ta)
                self._deliver_until(now, True)
                continue
            tokens = dp_tokens(batches, capture)
            step_no = s.group_steps
            step = dp_step(insts, tokens, step_no)
            graphs = None
            if backend.needs_graphs or s.on_graph:
                graphs = [rank_graph(inst, b, n, step, step_no) for inst, b, n in zip(insts, batches, tokens)]
                if s.on_graph:
                    for g in graphs:
                        s.on_graph(g)
            s.group_steps += 1
            s.dummy_batches += sum(b is None for b in batches)
            s.padded_tokens += sum(n - (b.total_len if b is not None else 1) for n, b in zip(tokens, batches))
            end, events = backend.submit_dp_step(insts, batches, tokens, step, graphs, now, detail)
            if acct is not None:
                for i, b in enumerate(batches):
                    if b is None:
                        acct.state(i, now, DP_DUMMY)
                    else:
                        acct.batch(i, now, True, events[i])
                        acct.state(i, events[i][-1].end_ns, DP_PEER)
            self._deliver_until(end, False)  # requests arriving during the step wait for the next one
            now = end
            self._beat(now)
            for i, b in enumerate(batches):
                if b is not None:
                    if detail:
                        s.record(b, events[i])
                    s.complete_batch(i, b.id, now)
            self._deliver_until(now, True)
            s.balancer.observe(now)
            counter += 1
            if counter % WAVE_SYNC_STEPS == 0 and not any(x.has_work for x in scheds):
                running = False  # the wave is complete: every rank pauses
        if acct is not None:
            acct.finish(now)
        return s.finish(now)
