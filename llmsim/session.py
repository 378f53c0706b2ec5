"""The step API: one run's state, and the steps every driving loop composes.

Like vLLM's schedule() / update_from_output() pair, a driver creates a Session (the start of
the run) and calls, as its clock advances: deliver_arrivals(now); form_batch(i, now);
complete_batch(i, batch_id, now); heartbeat(now); and finish(now) -> SimResult. A Session runs
once: its schedulers hold the run's state. The engine (engine.py) drives a Session for
backends that time stages in process; a backend that owns the clock (the ASTRA-Sim fork) drives
one itself. Neither reaches into the other's state.
"""
import heapq

from .batch import Batch
from .graph.builder import build_graph
from .graph.iteration import IterationGraph
from .instance import Instance
from .request import Request
from .results import Heartbeat, InstanceBeat, IterationRecord, SimResult
from .router import DEFAULT_SEED, Router


# Idle log intervals in a row beyond which none is reported (a shorter quiet gap still is).
IDLE_SKIP_INTERVALS = 1000


class Session:
    def __init__(self, instances: list[Instance], requests: list[Request], *, routing_policy: str = "LOAD",
                 log_interval_ns: int = 0, on_heartbeat=None, record_iterations: bool = False, on_graph=None,
                 seed: int = DEFAULT_SEED):
        self.instances = instances
        self.requests = requests  # in (arrival, id) order
        self.router = Router([i.scheduler for i in instances], routing_policy, seed)
        self.log_interval_ns = log_interval_ns
        self.on_heartbeat = on_heartbeat
        self.record_iterations = record_iterations
        self.on_graph = on_graph
        self._a = 0  # next request of self.requests to arrive
        self._released: list = []  # session calls released by a completion: (t, id, request)
        self.finished: list[list[Request]] = [[] for _ in self.instances]
        self.unfinished: list[tuple[Request, str]] = []
        self.in_flight: dict[tuple[int, int], Batch] = {}  # (instance, batch id) -> batch
        self.prompt_total = self.gen_total = self.iterations = 0
        self._last_batch_reqs = 0
        self._hb_inst = [[0, 0] for _ in instances]  # per instance: prompt, generated tokens this interval
        # the end of the next log interval (None: no heartbeats); drivers compare their clock with it
        self.next_heartbeat_ns = self.log_interval_ns if self.log_interval_ns > 0 else None
        self.heartbeats: list[Heartbeat] = []
        # (t, instance, running, waiting, KV blocks used) at every batch formation, when wanted (a timeline)
        self.samples: list | None = None
        self.on_progress = None  # (requests finished so far, now) after every batch completion
        self._n_finished = 0
        self.iteration_log: list[IterationRecord] = []
        # set when a step scheduled an event of its own (a KV transfer's end: disagg.py), so a
        # driver that caches next_arrival_ns() asks again
        self.dirty = False

    @property
    def wants_graphs(self) -> bool:
        return self.on_graph is not None

    # -- arrivals ------------------------------------------------------------------------------
    def next_arrival_ns(self) -> int | None:
        """The next request to arrive, from the trace or a released session call."""
        t = self.requests[self._a].arrival_ns if self._a < len(self.requests) else None
        if self._released and (t is None or self._released[0][0] < t):
            t = self._released[0][0]
        return t

    def deliver_arrivals(self, now: int) -> list[int]:
        """Route every request that arrived at or before now (released session calls included);
        returns the instances that took one. A request its instance can never serve is unfinished."""
        arrived = self._arrived(now)
        if not arrived:
            return []
        touched = []
        for req in arrived:
            i = self._pick(now)
            sched = self.instances[i].scheduler
            reason = sched.admission_error(req)
            if reason:
                req.instance = i
                self.unfinished.append((req, reason))
                continue
            sched.add_request(req)
            if i not in touched:
                touched.append(i)
        return touched

    def _pick(self, now: int) -> int:
        """The instance an arriving request goes to (a DP group's balancer overrides it: dp.py)."""
        return self.router.pick()

    def _arrived(self, now: int) -> list[Request]:
        """Requests of the trace and released session calls due at or before now, in (arrival, id) order."""
        reqs = self.requests
        if (self._a >= len(reqs) or reqs[self._a].arrival_ns > now) and (
                not self._released or self._released[0][0] > now):
            return []
        arrived = []
        while self._a < len(reqs) and reqs[self._a].arrival_ns <= now:
            arrived.append(reqs[self._a])
            self._a += 1
        while self._released and self._released[0][0] <= now:
            arrived.append(heapq.heappop(self._released)[2])
        arrived.sort(key=lambda r: (r.arrival_ns, r.id))
        return arrived

    def idle(self) -> bool:
        """Nothing left to arrive and no instance has work."""
        return self.next_arrival_ns() is None and not any(i.scheduler.has_work for i in self.instances)

    # -- batches -------------------------------------------------------------------------------
    def form_batch(self, i: int, now: int, want_graph: bool = True,
                   dump: bool = True) -> tuple[Batch, IterationGraph | None] | None:
        """Ask instance i's scheduler for a batch; the graph is built when wanted or when
        on_graph (a trace dump) consumes it (dump False: the caller dumps its own graphs)."""
        inst = self.instances[i]
        batch = inst.scheduler.schedule(now)
        if batch is None:
            return None
        self._last_batch_reqs = batch.num_reqs
        self.iterations += 1
        if self.samples is not None:
            sched = inst.scheduler
            self.samples.append((now, i, len(sched.running), len(sched.waiting), inst.pool.num_used))
        self.in_flight[(i, batch.id)] = batch
        if not (want_graph or (dump and self.on_graph)):
            return batch, None
        graph = build_graph(inst.layout, batch, inst.timer.durations(batch))
        if dump and self.on_graph:
            self.on_graph(graph)
        return batch, graph

    def record(self, batch: Batch, events) -> None:
        """The batch's stage events, for the iteration log."""
        if self.record_iterations:
            self.iteration_log += [IterationRecord(batch.id, batch.instance, e.stage, e.npu, e.start_ns, e.end_ns,
                                                   batch.num_reqs, batch.prefill_tokens, batch.decode_tokens)
                                   for e in events]

    def complete_batch(self, i: int, batch_id: int, now: int) -> bool:
        """The batch's last stage finished: stamp its tokens; release finished sessions' next calls.
        Returns whether a call was released (it may be due now)."""
        done = self.instances[i].scheduler.complete(self.in_flight.pop((i, batch_id)), now)
        self._count(i, done.prompt_tokens, done.gen_tokens)
        return self._retired(i, done.finished, now)

    def _count(self, i: int, prompt_tokens: int, gen_tokens: int) -> None:
        self.prompt_total += prompt_tokens
        self.gen_total += gen_tokens
        tally = self._hb_inst[i]
        tally[0] += prompt_tokens
        tally[1] += gen_tokens

    def _retired(self, i: int, finished: list[Request], now: int) -> bool:
        """Requests that finished on instance i at now; returns whether a session call was released."""
        self.finished[i].extend(finished)
        if self.on_progress is not None:
            self._n_finished += len(finished)
            self.on_progress(self._n_finished, now)
        released = False
        for req in finished:
            nxt = req.next_in_session
            if nxt is not None:  # the session's next call, after the tool runs
                nxt.arrival_ns = now + req.tool_duration_ns
                heapq.heappush(self._released, (nxt.arrival_ns, nxt.id, nxt))
                released = True
        return released

    # -- progress and the end ------------------------------------------------------------------
    def heartbeat(self, t_ns: int) -> None:
        """Emit the heartbeat of every log interval that ends before t_ns (window (end-interval, end])."""
        while self.next_heartbeat_ns is not None and self.next_heartbeat_ns < t_ns:
            scheds = [i.scheduler for i in self.instances]
            running, waiting = sum(len(s.running) for s in scheds), sum(len(s.waiting) for s in scheds)
            iv = self.log_interval_ns
            prompt, gen = sum(p for p, _ in self._hb_inst), sum(g for _, g in self._hb_inst)
            if (t_ns - self.next_heartbeat_ns > IDLE_SKIP_INTERVALS * iv and not (
                    prompt or gen or running or waiting or self.in_flight)):
                # A long idle stretch (e.g. up to an epoch-ns trace's first arrival): nothing happens in
                # it, so no heartbeat; skip to the interval that holds t_ns.
                self.next_heartbeat_ns += -(-(t_ns - self.next_heartbeat_ns) // iv) * iv
                break
            per = [InstanceBeat(len(i.scheduler.running), len(i.scheduler.waiting), i.pool.num_used,
                                i.memory.num_blocks, p, g) for i, (p, g) in zip(self.instances, self._hb_inst)]
            hb = Heartbeat(self.next_heartbeat_ns, self._last_batch_reqs, prompt, gen, self._npu_mem(), running, waiting,
                           per)
            self._hb_inst = [[0, 0] for _ in self.instances]
            self.heartbeats.append(hb)
            if self.on_heartbeat:
                self.on_heartbeat(hb, self.log_interval_ns)
            self.next_heartbeat_ns += self.log_interval_ns

    def _leftover(self, inst: Instance) -> list[Request]:
        return inst.scheduler.leftover()

    def _npu_mem(self) -> int:
        return max(i.memory.used_bytes(i.pool.num_used) for i in self.instances)

    def finish(self, now: int) -> SimResult:
        """The run ended at now: every request is either finished or unfinished with a reason."""
        unfinished = self.unfinished
        for inst in self.instances:
            for req in self._leftover(inst):
                unfinished.append((req, "left in the queue when the run ended (scheduler could not admit it)"))
        for req, _ in list(unfinished):
            nxt = req.next_in_session
            while nxt is not None:
                unfinished.append((nxt, f"an earlier call of its session (request {req.id}) did not finish"))
                nxt = nxt.next_in_session
        self.heartbeat(now + 1)  # the interval that ends exactly at the last event too
        unfinished.sort(key=lambda x: x[0].id)
        return SimResult(self.finished, unfinished, now, self.prompt_total, self.gen_total, self.iterations,
                         self.heartbeats, self.iteration_log, samples=self.samples)
