"""Data-parallel groups (cluster config `dp_group`) as vLLM 0.19 serves a model with
data_parallel_size > 1 (docs/moe.md, "Data parallelism"). A mixture-of-experts group steps in
lockstep (below); a dense model's ranks are independent engines, only routed by the group's
balancer. A cluster may hold several groups and plain instances: the run's router picks an
endpoint (EndpointRouter), the group's balancer a rank; prefill/decode pools may hold groups
(dp_disagg.py).

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
from .graph.dp_step import dp_step, rank_graph
from .results import SimResult
from .router import DEFAULT_SEED, Router
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


class _EndpointLoad:
    """A DP group seen by the run's router as one endpoint: its ranks' queues together (the
    reference's LOAD score of a group is its ranks' waiting and running over their sequence slots)."""

    def __init__(self, schedulers):
        self._s = schedulers
        self.max_num_seqs = sum(x.max_num_seqs for x in schedulers)

    @property
    def waiting(self):
        return range(sum(len(x.waiting) + len(getattr(x, "loading", ())) for x in self._s))

    @property
    def running(self):
        return range(sum(len(x.running) for x in self._s))


class DPGroups:
    """A cluster's data-parallel groups: their members, each group's DP balancer (vLLM's API server
    in front of each deployment), which ones step in lockstep, and each lockstep group's counts."""

    def __init__(self, instances, balancer: bool = True):
        names = list(dict.fromkeys(i.config.dp_group for i in instances if i.config.dp_group is not None))
        self.instances = instances
        self.groups = [[i.index for i in instances if i.config.dp_group == n] for n in names]
        self.of = {i: g for g in self.groups for i in g}
        self.balancers = {g[0]: DPBalancer([instances[i].scheduler for i in g]) for g in self.groups} if balancer else {}
        self.independent = {g[0] for g in self.groups if not is_lockstep([instances[i] for i in g])}
        self.stats: dict[int, dict] = {}  # first rank -> steps, dummy batches, padding tokens (GroupStepper)
        self.steps = 0  # steps of all groups so far: numbers each step across the run (trace folders, draws)

    def balancer(self, first: int) -> "DPBalancer | None":
        return self.balancers.get(first)

    def observe_batch(self, i: int, now: int) -> None:
        """An independent engine (a dense model's rank) reports its counts after its step."""
        g = self.of.get(i)
        if g is not None and g[0] in self.independent and g[0] in self.balancers:
            self.balancers[g[0]].observe(now)

    def counts(self, first: int) -> dict:
        """The step counts of the group whose first rank is `first` (its stepping loop adds to them)."""
        return self.stats.setdefault(first, {"steps": 0, "dummy_batches": 0, "padded_tokens": 0})

    def summary(self) -> list[dict]:
        """Per group: its ranks, whether it steps in lockstep, its counts."""
        return [{"group": self.instances[g[0]].config.dp_group, "ranks": len(g), "lockstep": g[0] not in self.independent,
                 **self.counts(g[0])} for g in self.groups]


class EndpointRouter:
    """Arrivals over endpoints among `members` (instance indices): a plain instance, or a DP group as
    one (by the run's router policy), then within a group a rank by the group's balancer. With one
    endpoint the router has nothing to choose."""

    def __init__(self, dp: DPGroups, members: list[int], policy: str, seed: int):
        seen, self.endpoints = set(), []
        for i in members:
            g = dp.of.get(i, [i])
            if g[0] not in seen:
                seen.add(g[0])
                self.endpoints.append(g)
        insts = dp.instances
        loads = [insts[e[0]].scheduler if len(e) == 1 else _EndpointLoad([insts[i].scheduler for i in e])
                 for e in self.endpoints]
        self.router = Router(loads, policy, seed)
        self.dp = dp

    def pick(self, now: int) -> int:
        e = self.endpoints[self.router.pick() if len(self.endpoints) > 1 else 0]
        if len(e) == 1:
            return e[0]
        return e[self.dp.balancers[e[0]].pick(now)]


class WithGroups:
    """What a session with DP groups adds to its base (Session, or DisaggSession: dp_disagg.py): an
    independent rank reports its counts after its step; the result lists the groups."""
    dp: DPGroups

    def complete_batch(self, i: int, batch_id: int, now: int) -> bool:
        done = super().complete_batch(i, batch_id, now)
        self.dp.observe_batch(i, now)
        return done

    def finish(self, now: int) -> SimResult:
        result = super().finish(now)
        result.dp = self.dp.summary()
        return result


class DPSession(WithGroups, Session):
    """The step API with data-parallel groups (and plain instances beside them): arrivals routed by
    an EndpointRouter over the whole cluster."""

    def __init__(self, instances, requests, *, balancer: bool = True, **kw):
        """balancer: route within a group by vLLM's DP load balancer; False: by the run's router over
        the group's ranks (the reference's: one group, tp 1, dp_reference.py)."""
        super().__init__(instances, requests, **kw)
        self.dp = DPGroups(instances, balancer)
        self.groups = self.dp.groups
        self._endpoints = EndpointRouter(self.dp, list(range(len(instances))), kw.get("routing_policy", "LOAD"),
                                         kw.get("seed", DEFAULT_SEED)) if balancer else None

    def _pick(self, now: int) -> int:
        return self._endpoints.pick(now) if self._endpoints is not None else super()._pick(now)


class GroupStepper:
    """One lockstep DP group inside the engine's event loop (engine.py): when the group is free it
    forms every rank's batch and submits the step, as DPEngineCoreProc.run_busy_loop does on each
    rank; the engine calls done() at the step's end and try_step() once arrivals are delivered."""

    def __init__(self, session: DPSession, members: list[int], backend, accountant: Accountant | None = None):
        self.s, self.members, self.backend, self.acct = session, members, backend, accountant
        self.insts = [session.instances[i] for i in members]
        args = self.insts[0].args
        self.capture = cuda_graph_max_tokens(args.max_num_seqs, args.max_num_batched_tokens)
        self.balancer = session.dp.balancer(members[0])
        self.stats = session.dp.counts(members[0])
        self.busy = False  # a step in flight
        self.running = False  # the wave: steps go on (dummies included) until it ends
        self.counter = 0  # steps in this wave
        self.after_step = False
        self.batches: list = []

    def _has_work(self) -> bool:
        return any(i.scheduler.has_work for i in self.insts)

    def _idle(self, t: int) -> None:
        """The group forms nothing from t: every rank's idle cause (no request, or none that fits)."""
        if self.acct is not None:
            for i, inst in zip(self.members, self.insts):
                sched = inst.scheduler
                self.acct.state(i, t, why_idle(0, 1, len(sched.waiting), len(sched.running), False,
                                               len(sched.waiting), inst.args.max_num_seqs))

    def done(self, now: int) -> bool:
        """The step ended at now: every rank's batch completes. Returns whether a finished call
        released its session's next one."""
        released = False
        for i, b in zip(self.members, self.batches):
            if b is not None:
                released |= self.s.complete_batch(i, b.id, now)
        self.busy, self.after_step = False, True
        self.counter += 1
        return released

    def try_step(self, now: int) -> int | None:
        """Form and submit the group's next step at now; returns its end, or None (paused, or
        nothing can be scheduled until a request arrives)."""
        if self.busy:
            return None
        if self.after_step:  # the engines report their counts; a wave ends at a 32nd step with no work
            self.after_step = False
            if self.balancer is not None:
                self.balancer.observe(now)
            if self.counter % WAVE_SYNC_STEPS == 0 and not self._has_work():
                self.running = False
                self._idle(now)
        if not self.running:  # paused: a new request starts a wave on every rank
            if not self._has_work():
                return None
            self.running, self.counter = True, 0
        s, insts = self.s, self.insts
        batches = [s.form_batch(i, now, False, dump=False) for i in self.members]
        batches = [f[0] if f is not None else None for f in batches]
        if all(b is None for b in batches) and self._has_work():
            self._idle(now)  # nothing can be scheduled until a request arrives
            return None
        tokens = dp_tokens(batches, self.capture)
        step_no = s.dp.steps
        s.dp.steps += 1
        step = dp_step(insts, tokens, step_no)
        graphs = None
        if self.backend.needs_graphs or s.on_graph:
            graphs = [rank_graph(inst, b, n, step, step_no) for inst, b, n in zip(insts, batches, tokens)]
            if s.on_graph:
                for g in graphs:
                    s.on_graph(g)
        self.stats["steps"] += 1
        self.stats["dummy_batches"] += sum(b is None for b in batches)
        self.stats["padded_tokens"] += sum(n - (b.total_len if b is not None else 1) for n, b in zip(tokens, batches))
        acct = self.acct
        end, events = self.backend.submit_dp_step(insts, batches, tokens, step, graphs, now,
                                                  s.record_iterations or acct is not None)
        for r, (i, b) in enumerate(zip(self.members, batches)):
            if b is None:
                if acct is not None:
                    acct.state(i, now, DP_DUMMY)
                continue
            if s.record_iterations:
                s.record(b, events[r])
            if acct is not None:
                acct.batch(i, now, True, events[r])
                acct.state(i, events[r][-1].end_ns, DP_PEER)
        self.batches, self.busy = batches, True
        return end
