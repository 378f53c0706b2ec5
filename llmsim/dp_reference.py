"""LLMServingSim 2.0's data-parallel MoE group, for `--dp-sync reference` (set by `--compat
llmservingsim`): the reference's own run of a `dp_group`, read from its source (casys-kaist/
LLMServingSim 5daddb2: serving/__main__.py's dp_pending barrier, trace_generator._emit_moe_block,
gate_function._balanced_route_ep) and timed as its ASTRA-Sim fork runs the traces. docs/moe.md.

- Requests go to a rank by the run's router (LOAD, as for any instances), not vLLM's DP balancer.
- Each rank schedules when its own batch finishes. The group starts when every rank has a batch:
  an idle rank makes a 1-token dummy (one decode of history 1) only once a peer has a batch, so a
  group with no work runs nothing (no waves, no wave-end steps).
- Every batch is padded to the group's largest total_len T: dense layers run T tokens, lm_head and
  the sampler T - own tokens more sequences; attention keeps the rank's own requests.
- Each MoE layer: an ALL_GATHER of (T // ep)(hidden + experts) x dtype bytes, the expert block at
  T tokens, a REDUCE_SCATTER of T x hidden x dtype bytes, on the link between the ranks. With
  --moe-routing reference the block is the reference's: its balanced load of T tokens
  (perf/routing.reference_loads), rank 0's looked up on moe.csv by tokens; else the instance's
  routing model times it (the slowest EP rank).
- The fork asks its NPUs in id order: ranks before the last to join start when its first node
  ends (the next event), the others at once; a poll with nothing running waits the fork's 1 ms idle
  step. ASTRA-Sim ends a rank's collective at max(its issue, the latest peer issue + the
  collective's time) (measured on the fork: two ranks issuing 100 us apart), so the ranks meet at
  every MoE layer and leave it offset; each rank's batch completes at its own finish.
"""
from dataclasses import dataclass

from .backends.base import StageEvent
from .backends.fabric import dp_link
from .backends.network import ring_allgather_ns, ring_reducescatter_ns
from .engine import START_NS
from .errors import InputError
from .perf.routing import reference_loads
from .results import SimResult

IDLE_STEP_NS = 1_000_000  # the fork's EventQueue::add_current_time() when nothing is pending


@dataclass(frozen=True)
class _Dummy:
    """The reference's dummy batch: Batch(total_len=1, kv_len=1, one decode of history 1)."""
    total_len: int = 1
    prefill_tokens: int = 0
    kv_prefill: int = 0
    n_decode: int = 1
    kd_sum: int = 1
    kd_max: int = 1
    kd_min: int = 1
    num_reqs: int = 0


DUMMY = _Dummy()


class _Ranks:
    """Per-rank costs of one padded group step, from the instance's timer (tp = pp = 1)."""

    def __init__(self, insts, backend, cluster):
        self.insts = insts
        inst = insts[0]
        arch, self.timer = inst.layout.arch, inst.timer
        cat = arch.category
        block = list(arch.block_layers)
        cut = next(k for k, l in enumerate(block) if cat.get(l) == "moe")
        self.prologue, self.pre, self.post, self.head = arch.prologue, block[:cut], block[cut + 1:], arch.head
        self.layers = inst.model.num_layers
        self.cat = cat
        self.costs = [backend.stage_costs(i) for i in insts]
        m = inst.model
        self.h, self.e, self.k, self.b = m.hidden_size, m.moe.num_experts, m.moe.top_k, inst.layout.act_bytes
        self.ep = inst.config.ep_size
        self.policy = inst.args.moe_routing  # "reference": the reference's balanced load, rank 0 by tokens
        self.link = dp_link(cluster, [i.config for i in insts])
        self.mem_bw = inst.config.npu_mem.bw_gbps
        self._moe: dict[int, tuple[int, int, int]] = {}

    def moe(self, t: int) -> tuple[int, int, int]:
        """(all-gather, expert block, reduce-scatter) ns of one MoE layer at padded T tokens."""
        got = self._moe.get(t)
        if got is None:
            n = len(self.insts)
            load = reference_loads(t, self.e, self.k, self.ep)[0]
            bundle = getattr(self.timer, "bundle", None)
            if (self.policy == "reference" and bundle is not None and getattr(self.timer, "moe_timer", None) is None
                    and load.tokens > 0):
                expert = bundle.moe_ns(load.tokens, max(1, load.experts))
            else:
                expert = self.timer.moe_tokens_ns(t, ("dp-reference", t))
            got = self._moe[t] = (
                ring_allgather_ns(self.link, max(1, t // self.ep) * (self.h + self.e) * self.b, n),
                expert,
                ring_reducescatter_ns(self.link, t * self.h * self.b, n, local_mem_bw_gbps=self.mem_bw))
        return got

    def parts(self, r: int, batch, t: int) -> tuple[int, int, int, int, int]:
        """(first node, before the first MoE layer, each later layer before its MoE, after each MoE
        layer, the tail) ns of rank r's step padded to t tokens."""
        d = self.timer.base_durations(t, max(batch.num_reqs, batch.num_reqs + t - batch.total_len, 1))
        attn = self.timer.attention_ns(batch)
        ns = lambda names: sum(attn if self.cat.get(l) == "attention" else d.get(l, 0) for l in names)
        load, store = self.costs[r].host_ns(t)
        first = load if load else d.get(self.prologue[0], 1) if self.prologue else 1
        pre = ns(self.pre)
        return first, load + ns(self.prologue) + pre, pre, ns(self.post), ns(self.head) + store


def collective_ends(issues: list[int], x: int) -> list[int]:
    """When each rank's collective ends on ASTRA-Sim: max(its issue, the latest other rank's issue
    + the collective's time x). A rank that issued early waits for the others' data; one that
    issued late finds it buffered. (For two ranks, measured on the fork.)"""
    return [max(a, max(issues[:r] + issues[r + 1:]) + x) for r, a in enumerate(issues)]


def step_ends(starts: list[int], parts: list[tuple], moe: tuple[int, int, int], layers: int) -> list[int]:
    """Each rank's finish (parts: _Ranks.parts), the ranks meeting at every MoE layer's collectives."""
    ag, expert, rs = moe
    at = [s + p[1] for s, p in zip(starts, parts)]
    for layer in range(layers):
        if layer:
            at = [a + p[3] + p[2] for a, p in zip(at, parts)]
        at = collective_ends([a + expert for a in collective_ends(at, ag)], rs)
    return [a + p[3] + p[4] for a, p in zip(at, parts)]


class ReferenceDPEngine:
    """One DP group driven as LLMServingSim drives it on its ASTRA-Sim fork (module docstring)."""

    def __init__(self, session, backend, cluster):
        for i in session.instances:
            if i.config.tp_size != 1:
                raise InputError(f"{i.config.where}.tp_size: --dp-sync reference (the reference's DP group) is "
                                 "modelled with tp_size 1, as the reference's validated run; use --dp-sync vllm")
            if i.config.ep_size == 1:
                raise InputError(f"{i.config.where}.ep_size: --dp-sync reference (the reference's DP group) is "
                                 "modelled with expert parallelism (ep_size = the group's size), as the reference's "
                                 "validated run; use --dp-sync vllm")
        self.session = session
        self.ranks = _Ranks(session.instances, backend, cluster)

    def run(self) -> SimResult:
        s, n = self.session, len(self.session.instances)
        pending: list = [None] * n  # a formed batch (or DUMMY) waiting for the group
        running: list = [None] * n  # (batch or DUMMY, start, finish) of the step in flight
        now = last_event = START_NS
        while True:
            if any(running):
                t = min(x[2] for x in running if x)
                self._polls_between(now, t, pending, running)
                now = last_event = t
                self._deliver(now)
                for r in range(n):
                    if running[r] and running[r][2] == now:
                        self._complete(r, running[r], now)
                        running[r] = None
            elif any(p is not None for p in pending):
                now += IDLE_STEP_NS  # a rank polled before its peer's batch: the fork's next (idle) step
                self._deliver(now)
            else:
                nxt = s.next_arrival_ns()
                if nxt is None:
                    break  # whatever still waits cannot be scheduled: reported unfinished
                # nothing runs: the fork steps 1 ms at a time and routes arrivals at its polls
                now = last_event + -(-(max(nxt, now) - last_event) // IDLE_STEP_NS) * IDLE_STEP_NS
                self._deliver(now)
            self._poll(now, pending, running)
        return s.finish(now)

    def _complete(self, r: int, step, now: int) -> None:
        b, start, _ = step
        if b is DUMMY:
            return
        s = self.session
        if s.record_iterations:
            s.record(b, [StageEvent(r, 0, s.instances[r].config.first_npu, b.id, start, now, now)])
        s.complete_batch(r, b.id, now)

    def _deliver(self, t: int) -> None:
        s = self.session
        if s.next_heartbeat_ns is not None and s.next_heartbeat_ns < t:
            s.heartbeat(t)
        s.deliver_arrivals(t)

    def _polls_between(self, now: int, until: int, pending, running) -> None:
        """While some rank runs, its nodes' events poll the idle ranks: an arrival is routed and
        scheduled about when it arrives (the first such event; taken at the arrival itself)."""
        s = self.session
        while True:
            ta = s.next_arrival_ns()
            if ta is None or ta >= until:
                return
            ta = max(ta, now)
            self._deliver(ta)
            self._poll(ta, pending, running)

    def _poll(self, t: int, pending, running) -> bool:
        """One pass of the fork's poll loop at t over the ranks not running, in NPU order. True when
        the group started."""
        s = self.session
        for r in range(len(pending)):
            if running[r] or pending[r] is not None:
                continue
            formed = s.form_batch(r, t, False)
            if formed is not None:
                pending[r] = formed[0]
            elif any(p is not None for p in pending):
                pending[r] = DUMMY
            if all(p is not None for p in pending):
                self._start(r, t, pending, running)
                return True
        return False

    def _start(self, last: int, t: int, pending, running) -> None:
        s, ranks = self.session, self.ranks
        top = max(b.total_len for b in pending)
        parts = [ranks.parts(r, b, top) for r, b in enumerate(pending)]
        # ranks polled before the last joiner in this pass get their workloads at the next event
        starts = [t + parts[last][0] if r < last else t for r in range(len(pending))]
        ends = step_ends(starts, parts, ranks.moe(top), ranks.layers)
        counts = s.dp.counts(s.groups[0][0])
        counts["steps"] += 1
        for r, b in enumerate(pending):
            if b is DUMMY:
                counts["dummy_batches"] += 1
            counts["padded_tokens"] += top - b.total_len
            running[r] = (b, starts[r], ends[r])
            pending[r] = None
