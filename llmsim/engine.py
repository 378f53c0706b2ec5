"""The discrete-event loop: arrivals, batch formation, backend stage completions (integer ns)."""
import heapq
from dataclasses import dataclass, field

from .backends.embedded import EmbeddedBackend, StageEvent
from .batch import Batch
from .graph.builder import build_graph
from .graph.stage_cost import StageCosts
from .instance import Instance
from .request import Request
from .router import Router

# Completions are handled before stage frees, and both before new batches are formed at a tick.
_BATCH_DONE, _STAGE0_FREE = 0, 1
# Nothing runs before 1 ns: ASTRA-Sim (and so the reference) starts every NPU with a start-up
# event of at least 1 ns, so a request arriving at 0 is scheduled at 1 on every backend.
START_NS = 1


@dataclass
class Heartbeat:
    t_ns: int
    batch_reqs: int
    prompt_tokens: int
    gen_tokens: int
    npu_mem_bytes: int
    running: int
    waiting: int


@dataclass
class IterationRecord:
    batch_id: int
    instance: int
    stage: int
    npu: int
    start_ns: int
    end_ns: int
    requests: int
    prefill_tokens: int
    decode_tokens: int


@dataclass
class SimResult:
    finished: list[list[Request]]  # per instance, in completion order
    unfinished: list[tuple[Request, str]]
    end_ns: int
    prompt_tokens: int
    gen_tokens: int
    iterations: int
    heartbeats: list[Heartbeat] = field(default_factory=list)
    iteration_log: list[IterationRecord] = field(default_factory=list)


class Engine:
    def __init__(self, instances: list[Instance], backend, requests: list[Request], *,
                 routing_policy: str = "LOAD", log_interval_ns: int = 0, on_heartbeat=None,
                 record_iterations: bool = False, on_graph=None):
        self.instances = instances
        self.backend = backend
        self.requests = requests
        self.router = Router([i.scheduler for i in instances], routing_policy)
        self.log_interval_ns = log_interval_ns
        self.on_heartbeat = on_heartbeat
        self.record_iterations = record_iterations
        self.on_graph = on_graph
        self._heap: list = []  # backend events: (t, kind, seq, payload)
        self._released: list = []  # session calls released by a completion: (t, id, request)
        self._seq = 0
        self._stage0_busy = [False] * len(instances)
        # The embedded backend needs only per-stage times, cached per batch shape; graphs are
        # built when something consumes them (trace dumps, a backend that times graphs itself).
        self._costs = None
        if (on_graph is None and isinstance(backend, EmbeddedBackend)
                and type(backend).stage_times is EmbeddedBackend.stage_times):
            self._costs = [StageCosts(i.layout, i.timer, backend) for i in instances]

    def _push(self, t: int, kind: int, payload) -> None:
        heapq.heappush(self._heap, (t, kind, self._seq, payload))
        self._seq += 1

    def _capacity_reason(self, inst: Instance, req: Request) -> str | None:
        s = inst.scheduler
        if req.target_len > s.max_model_len:
            return (f"prompt + output = {req.target_len} tokens exceeds the maximum model length "
                    f"{s.max_model_len} of {inst.model.name}")
        if not s.chunked and req.target_len - 1 > s.token_budget:
            return (f"chunked prefill is off and it may need {req.target_len - 1} tokens in one step "
                    f"(prompt + output, recomputed after a preemption) but the token budget is {s.token_budget}")
        need = inst.pool.blocks_for(req.target_len - 1)  # the last token's KV is never written
        if need > inst.pool.num_blocks:
            return f"needs {need} KV blocks but instance {inst.index} has {inst.pool.num_blocks}"
        return None

    def _graph(self, inst: Instance, batch: Batch):
        durations = inst.timer.durations(batch)
        return build_graph(inst.layout, batch, durations)

    # -- steps shared by every driving loop (this one and the ASTRA-Sim bridge's) ------------------
    def _reset(self) -> None:
        self._a = 0  # next request of self.requests to arrive
        self.finished: list[list[Request]] = [[] for _ in self.instances]
        self.unfinished: list[tuple[Request, str]] = []
        self.batches: dict[tuple[int, int], Batch] = {}
        self.prompt_total = self.gen_total = self.iterations = 0
        self._hb_prompt = self._hb_gen = self._last_batch_reqs = 0
        self._next_log = self.log_interval_ns if self.log_interval_ns > 0 else None
        self._heartbeats: list[Heartbeat] = []
        self.iter_log: list[IterationRecord] = []

    def next_arrival_ns(self) -> int | None:
        """The next request to arrive, from the trace or a released session call."""
        t = self.requests[self._a].arrival_ns if self._a < len(self.requests) else None
        if self._released and (t is None or self._released[0][0] < t):
            t = self._released[0][0]
        return t

    def complete_batch(self, i: int, batch_id: int, now: int) -> None:
        """The batch's last stage finished: stamp its tokens; release finished sessions' next calls."""
        done = self.instances[i].scheduler.complete(self.batches.pop((i, batch_id)), now)
        self.prompt_total += done.prompt_tokens
        self.gen_total += done.gen_tokens
        self._hb_prompt += done.prompt_tokens
        self._hb_gen += done.gen_tokens
        self.finished[i].extend(done.finished)
        for req in done.finished:
            nxt = req.next_in_session
            if nxt is not None:  # the session's next call, after the tool runs
                nxt.arrival_ns = now + req.tool_duration_ns
                heapq.heappush(self._released, (nxt.arrival_ns, nxt.id, nxt))

    def deliver_arrivals(self, now: int) -> set[int]:
        """Route every request that arrived at or before now (released session calls included)."""
        reqs = self.requests
        if (self._a >= len(reqs) or reqs[self._a].arrival_ns > now) and (
                not self._released or self._released[0][0] > now):
            return set()
        arrived = []
        while self._a < len(reqs) and reqs[self._a].arrival_ns <= now:
            arrived.append(reqs[self._a])
            self._a += 1
        while self._released and self._released[0][0] <= now:
            arrived.append(heapq.heappop(self._released)[2])
        arrived.sort(key=lambda r: (r.arrival_ns, r.id))
        touched = set()
        for req in arrived:
            i = self.router.pick()
            reason = self._capacity_reason(self.instances[i], req)
            if reason:
                req.instance = i
                self.unfinished.append((req, reason))
                continue
            self.instances[i].scheduler.add_request(req)
            touched.add(i)
        return touched

    def form_batch(self, i: int, now: int, want_graph: bool = True):
        """Ask instance i's scheduler for a batch; returns (batch, graph or None) or None."""
        inst = self.instances[i]
        batch = inst.scheduler.schedule(now)
        if batch is None:
            return None
        self._last_batch_reqs = batch.num_reqs
        self.iterations += 1
        self.batches[(i, batch.id)] = batch
        if not want_graph:
            return batch, None
        graph = self._graph(inst, batch)
        if self.on_graph:
            self.on_graph(graph)
        return batch, graph

    def record(self, batch: Batch, events) -> None:
        if self.record_iterations:
            self.iter_log += [IterationRecord(batch.id, batch.instance, e.stage, e.npu, e.start_ns, e.end_ns,
                                              batch.num_reqs, batch.prefill_tokens, batch.decode_tokens)
                              for e in events]

    def result(self, now: int) -> SimResult:
        unfinished = self.unfinished
        for inst in self.instances:
            s = inst.scheduler
            s.settle()
            for req in list(s.running) + list(s.waiting):
                unfinished.append((req, "left in the queue when the run ended (scheduler could not admit it)"))
        for req, _ in list(unfinished):
            nxt = req.next_in_session
            while nxt is not None:
                unfinished.append((nxt, f"an earlier call of its session (request {req.id}) did not finish"))
                nxt = nxt.next_in_session
        self._heartbeats_before(now + 1)  # the interval that ends exactly at the last event too
        unfinished.sort(key=lambda x: x[0].id)
        return SimResult(self.finished, unfinished, now, self.prompt_total, self.gen_total, self.iterations,
                         self._heartbeats, self.iter_log)

    # -- the embedded backend's loop: it returns stage times when a graph is submitted -------------
    def run(self) -> SimResult:
        # The steps above, with the per-tick checks inlined: this loop runs once or twice per batch.
        self._reset()
        costs = self._costs
        heap, released, busy = self._heap, self._released, self._stage0_busy
        reqs = self.requests
        n_reqs = len(reqs)
        pop, push = heapq.heappop, heapq.heappush
        where = [(inst.layout.first_npu, inst.layout.tp_size) for inst in self.instances]
        now = 0
        while True:
            t_heap = heap[0][0] if heap else None
            t_arr = reqs[self._a].arrival_ns if self._a < n_reqs else None
            if released and (t_arr is None or released[0][0] < t_arr):
                t_arr = released[0][0]
            if t_heap is None and t_arr is None:
                break
            now = t_heap if t_arr is None or (t_heap is not None and t_heap <= t_arr) else t_arr
            if now < START_NS:
                now = START_NS
            if self._next_log is not None and self._next_log < now:
                self._heartbeats_before(now)
            touched = []  # instances with news, each once
            while heap and heap[0][0] == now:
                _, kind, _, payload = pop(heap)
                if kind == _BATCH_DONE:
                    i = payload[0]
                    self.complete_batch(i, payload[1], now)
                else:
                    i = payload
                    busy[i] = False
                if i not in touched:
                    touched.append(i)
            # (a completion may have released a session call due now)
            if (self._a < n_reqs and reqs[self._a].arrival_ns <= now) or (released and released[0][0] <= now):
                for i in self.deliver_arrivals(now):
                    if i not in touched:
                        touched.append(i)
            if len(touched) > 1:
                touched.sort()
            for i in touched:
                if busy[i]:
                    continue
                formed = self.form_batch(i, now, want_graph=costs is None)
                if formed is None:
                    continue
                batch, graph = formed
                events: list[StageEvent] | None = None
                if costs is None:
                    events = self.backend.submit(graph, now)
                elif self.record_iterations:
                    events = self.backend.place(i, *where[i], batch.id, costs[i].times(batch), now)
                else:  # the common case: only the two end times are needed
                    stage0_end, end = self.backend.place_ends(i, *where[i], batch.id, costs[i].times(batch), now)
                if events is not None:
                    stage0_end, end = events[0].first_rank_end_ns, events[-1].end_ns
                busy[i] = True
                seq = self._seq
                push(heap, (stage0_end, _STAGE0_FREE, seq, i))
                push(heap, (end, _BATCH_DONE, seq + 1, (i, batch.id)))
                self._seq = seq + 2
                if self.record_iterations:
                    self.record(batch, events)
        return self.result(now)

    def _heartbeats_before(self, t_ns: int) -> None:
        """Emit the heartbeat of every log interval that ends before t_ns (window (end-interval, end])."""
        while self._next_log is not None and self._next_log < t_ns:
            scheds = [i.scheduler for i in self.instances]
            hb = Heartbeat(self._next_log, self._last_batch_reqs, self._hb_prompt, self._hb_gen, self._npu_mem(),
                           sum(len(s.running) for s in scheds), sum(len(s.waiting) for s in scheds))
            self._heartbeats.append(hb)
            if self.on_heartbeat:
                self.on_heartbeat(hb, self.log_interval_ns)
            self._hb_prompt = self._hb_gen = 0
            self._next_log += self.log_interval_ns

    def _npu_mem(self) -> int:
        return max(i.memory.used_bytes(i.pool.num_used) for i in self.instances)
