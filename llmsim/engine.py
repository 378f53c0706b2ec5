"""The discrete-event loop for backends that time stages in process: the engine owns the clock
(integer ns) and drives a Session through its steps; events are arrivals and stage completions.

When a batch is formed (pp > 1) follows EngineArgs.batch_formation. "vllm" is vLLM's
EngineCore.step_with_batch_queue (async scheduling off, as vLLM runs pipeline parallelism): it
schedules batches until its queue of pp_size is full or the scheduler has nothing new, then
blocks on the oldest batch's result, so the next batch is formed when that batch completes; it
waits for stage 0 on the workers. Only an engine with nothing in flight takes a new request in
at once (it waits on its input queue). "reference" forms a batch whenever stage 0 is free and
fewer than pp_size batches are in flight (LLMServingSim)."""
import heapq

from .accounting import Accountant, why_idle
from .backends.base import StageTimingBackend
from .results import SimResult
from .session import Session

# Completions (a batch's, a DP group step's) are handled before stage frees, and all before new
# batches are formed at a tick.
_BATCH_DONE, _GROUP_DONE, _STAGE0_FREE = 0, 1, 2
# Nothing runs before 1 ns: ASTRA-Sim (and so the reference) starts every NPU with a start-up
# event of at least 1 ns, so a request arriving at 0 is scheduled at 1 on every backend.
START_NS = 1


class Engine:
    def __init__(self, session: Session, backend: StageTimingBackend, accountant: Accountant | None = None,
                 groups=()):
        """groups: lockstep DP groups (dp.GroupStepper), each stepping its ranks as one."""
        self.session = session
        self.backend = backend
        self.accountant = accountant  # per-stage busy/idle accounting (needs every batch's stage events)
        self.groups = {i: g for g in groups for i in g.members}

    def run(self) -> SimResult:
        s, backend = self.session, self.backend
        instances = s.instances
        want_graph = backend.needs_graphs
        acct = self.accountant
        record = s.record_iterations
        detail = record or acct is not None
        submit = getattr(backend, "submit", None)  # a clock-owning backend here steps DP groups only
        heap: list = []  # (t, kind, seq, payload)
        seq = 0
        busy = [False] * len(instances)  # stage 0 of each instance ("reference" rule)
        # "vllm" rule: may the engine schedule now? Yes after a completion; no once the scheduler
        # had nothing new (the engine then blocks on its oldest batch) until the next completion.
        queue_rule = [inst.args.batch_formation == "vllm" and inst.config.pp_size > 1 for inst in instances]
        may_form = [True] * len(instances)
        refused = [0] * len(instances)  # requests waiting when the scheduler last had nothing new
        inflight = [inst.scheduler.inflight for inst in instances]
        pp = [inst.config.pp_size for inst in instances]
        pop, push = heapq.heappop, heapq.heappush
        now = 0
        t_arr = s.next_arrival_ns()  # changes only when arrivals are delivered or a call is released
        group_of = self.groups
        groups = list(dict.fromkeys(group_of.values()))
        while True:
            if heap:
                t_heap = heap[0][0]
                now = t_heap if t_arr is None or t_heap <= t_arr else t_arr
            elif t_arr is None:
                break
            else:
                now = t_arr
            if now < START_NS:
                now = START_NS
            if s.next_heartbeat_ns is not None and s.next_heartbeat_ns < now:
                s.heartbeat(now)
            touched = []  # instances with news, each once
            released = False
            while heap and heap[0][0] == now:
                _, kind, _, payload = pop(heap)
                if kind == _GROUP_DONE:
                    released |= payload.done(now)
                    continue
                if kind == _BATCH_DONE:
                    i = payload[0]
                    released |= s.complete_batch(i, payload[1], now)
                    may_form[i] = True
                else:
                    i = payload
                    busy[i] = False
                if i not in touched:
                    touched.append(i)
            if released:  # a finished call released its session's next one, maybe due now
                t_arr = s.next_arrival_ns()
            if t_arr is not None and t_arr <= now:
                for i in s.deliver_arrivals(now):
                    if i not in touched:
                        touched.append(i)
                t_arr = s.next_arrival_ns()
            if len(touched) > 1:
                touched.sort()
            for g in groups:  # a free group steps whenever it can (a paused one once a request is in)
                end = g.try_step(now)
                if end is not None:
                    push(heap, (end, _GROUP_DONE, seq, g))
                    seq += 1
            for i in touched:
                if i in group_of:
                    continue
                if queue_rule[i]:
                    if inflight[i] and not may_form[i]:
                        continue  # blocked on the oldest batch in flight
                elif busy[i]:
                    continue
                while True:
                    formed = s.form_batch(i, now, want_graph)
                    if formed is None:
                        may_form[i] = False
                        refused[i] = len(instances[i].scheduler.waiting)
                        break
                    batch, graph = formed
                    stage0_free, end, events = submit(instances[i], batch, graph, now, detail)
                    push(heap, (end, _BATCH_DONE, seq, (i, batch.id)))
                    seq += 1
                    if record:
                        s.record(batch, events)
                    if acct is not None:
                        acct.batch(i, now, len(inflight[i]) == 1, events)
                    if not queue_rule[i]:
                        busy[i] = True
                        push(heap, (stage0_free, _STAGE0_FREE, seq, i))
                        seq += 1
                        break
                    if len(inflight[i]) >= pp[i]:  # the queue is full: the scheduler would refuse
                        may_form[i] = False
                        refused[i] = len(instances[i].scheduler.waiting)
                        break
            if s.dirty:  # a step scheduled an event of the session's own (a KV transfer: disagg.py)
                s.dirty = False
                t_arr = s.next_arrival_ns()
            if acct is not None:
                for i in touched:
                    if i in group_of:  # the group sets its ranks' states
                        continue
                    sched = instances[i].scheduler
                    acct.state(i, now, why_idle(len(inflight[i]), pp[i], len(sched.waiting),
                                                len(sched.running), queue_rule[i] and not may_form[i], refused[i],
                                                instances[i].args.max_num_seqs))
        if acct is not None:
            acct.finish(now)
        return s.finish(now)
