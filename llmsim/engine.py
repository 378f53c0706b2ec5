"""The discrete-event loop for backends that time stages in process: the engine owns the clock
(integer ns) and drives a Session through its steps; events are arrivals and stage completions."""
import heapq

from .backends.base import StageTimingBackend
from .results import SimResult
from .session import Session

# Completions are handled before stage frees, and both before new batches are formed at a tick.
_BATCH_DONE, _STAGE0_FREE = 0, 1
# Nothing runs before 1 ns: ASTRA-Sim (and so the reference) starts every NPU with a start-up
# event of at least 1 ns, so a request arriving at 0 is scheduled at 1 on every backend.
START_NS = 1


class Engine:
    def __init__(self, session: Session, backend: StageTimingBackend):
        self.session = session
        self.backend = backend

    def run(self) -> SimResult:
        s, backend = self.session, self.backend
        instances = s.instances
        want_graph = backend.needs_graphs
        detail = s.record_iterations
        submit = backend.submit
        heap: list = []  # (t, kind, seq, payload)
        seq = 0
        busy = [False] * len(instances)  # stage 0 of each instance
        pop, push = heapq.heappop, heapq.heappush
        now = 0
        t_arr = s.next_arrival_ns()  # changes only when arrivals are delivered or a call is released
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
                if kind == _BATCH_DONE:
                    i = payload[0]
                    released |= s.complete_batch(i, payload[1], now)
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
            for i in touched:
                if busy[i]:
                    continue
                formed = s.form_batch(i, now, want_graph)
                if formed is None:
                    continue
                batch, graph = formed
                stage0_free, end, events = submit(instances[i], batch, graph, now, detail)
                busy[i] = True
                push(heap, (stage0_free, _STAGE0_FREE, seq, i))
                push(heap, (end, _BATCH_DONE, seq + 1, (i, batch.id)))
                seq += 2
                if detail:
                    s.record(batch, events)
        return s.finish(now)
