"""Per-instance scheduler with vLLM v1 rules (running first, then waiting; token budget; chunked
prefill; paged KV; recompute preemption from the tail; prefix caching; pp_size in-flight cap).

The scheduler never reads the clock: the engine passes now_ns in and reports completions back.
"""
from collections import deque
from dataclasses import dataclass
from typing import NamedTuple

from .batch import Batch, Entry
from .config.engine import EngineArgs
from .kv_cache import BlockPool
from .request import KV_LOADED, KV_LOADING, KV_PENDING, Request, Status

INF = float("inf")


@dataclass
class SchedulerStats:
    preemptions: int = 0
    recomputed_tokens: int = 0
    prefix_requested_tokens: int = 0
    prefix_hit_tokens: int = 0


class Completion(NamedTuple):  # one per batch
    prompt_tokens: int
    gen_tokens: int
    finished: list[Request]


class Scheduler:
    def __init__(self, instance: int, args: EngineArgs, pool: BlockPool, pp_size: int, max_model_len: int,
                 model_name: str = "the model"):
        self.instance = instance
        self.model_name = model_name
        self.pool = pool
        self.pp_size = pp_size
        self.max_model_len = max_model_len
        self.max_num_seqs = args.max_num_seqs or INF
        budget = args.max_num_batched_tokens or max_model_len
        self.token_budget = min(budget, max_model_len)
        self.threshold = args.long_prefill_token_threshold
        self.chunked = args.enable_chunked_prefill
        self.reserve_full_isl = args.reserve_full_isl
        self.waiting: deque[Request] = deque()
        self.running: list[Request] = []
        self.inflight: deque[Batch] = deque()
        self.next_batch_id = 0
        self.stats = SchedulerStats()
        # Disaggregated serving (disagg.py). A prefill instance keeps a finished request's blocks
        # until the decode side has read them (hold_kv); a decode instance's requests whose KV is
        # on the wire (loading), and those whose load started this step (loads, for the session).
        self.hold_kv = False
        self.loading: list[Request] = []
        self.loads: list[Request] = []

    # -- inputs from the engine ---------------------------------------------------------------
    def add_request(self, req: Request) -> None:
        req.instance = self.instance
        self.waiting.append(req)  # the engine delivers arrivals in (arrival, id) order

    def admission_error(self, req: Request) -> str | None:
        """Why this instance can never serve req (it would wait for ever), or None."""
        if req.target_len > self.max_model_len:
            return (f"prompt + output = {req.target_len} tokens exceeds the maximum model length "
                    f"{self.max_model_len} of {self.model_name}")
        if not self.chunked and req.target_len - 1 > self.token_budget:
            return (f"chunked prefill is off and it may need {req.target_len - 1} tokens in one step "
                    f"(prompt + output, recomputed after a preemption) but the token budget is {self.token_budget}")
        need = self.pool.blocks_for(req.target_len - 1)  # the last token's KV is never written
        if need > self.pool.num_blocks:
            return f"needs {need} KV blocks but instance {self.instance} has {self.pool.num_blocks}"
        return None

    @property
    def has_work(self) -> bool:
        return bool(self.waiting or self.running or self.inflight or self.loading)

    def leftover(self) -> list[Request]:
        """At the end of a run: the requests still running or waiting, their fields up to date."""
        return list(self.running) + list(self.waiting)

    # -- the primitives both this scheduler and the decode lanes (decode_lanes.py) build on --------
    def _cap(self, n: int) -> int:
        """Step sizing: a request's tokens this step, capped by the long-prefill threshold."""
        if 0 < self.threshold < n:
            return self.threshold
        return n

    def _emit(self, entries: list[Entry], n_running: int, now_ns: int) -> Batch:
        """Batch emission: entries from n_running on were admitted this step (stamped now);
        the batch joins the in-flight list."""
        for e in entries[n_running:]:
            if e.req.first_sched_ns < 0:
                e.req.first_sched_ns = now_ns
            e.req.num_computed = e.computed_before + e.num_new
        batch = Batch.build(self.next_batch_id, self.instance, now_ns, entries)
        self.next_batch_id += 1
        self.inflight.append(batch)
        return batch

    def _retire(self, finished: list[Request], t_ns: int) -> None:
        """In-order retirement: finished is in running order, the order their blocks return to
        the free list (which cached blocks are evicted first follows it)."""
        pool = self.pool
        for req in finished:
            # Freeing touches no hash mapping, so retiring after the whole batch is stamped is the
            # same as retiring in the loop; the order of frees is what matters (LRU free list).
            if not self.hold_kv:
                pool.free(req)
            req.end_ns = t_ns
            req.status = Status.FINISHED
            self.running.remove(req)

    def _preempt(self, victim: Request) -> None:
        self.pool.free(victim)
        victim.status = Status.PREEMPTED
        victim.num_computed = 0
        victim.num_preemptions += 1
        self.stats.preemptions += 1
        self.waiting.appendleft(victim)

    def schedule(self, now_ns: int) -> Batch | None:
        if len(self.inflight) >= self.pp_size:
            return None
        budget = self.token_budget
        scheduled: list[Entry] = []
        preempted = False
        # Phase A: running requests, in admission order.
        i = 0
        running = self.running
        pool = self.pool
        bs = pool.block_size
        hashing = pool.caching
        while i < len(running) and budget > 0:
            req = running[i]
            computed = req.num_computed
            num_new = req.num_tokens - computed
            if num_new <= 0:
                i += 1  # its previous step is still in flight
                continue
            num_new = self._cap(num_new if num_new < budget else budget)
            total = computed + num_new
            # A step that fits the blocks it holds with nothing to index needs no allocate() call.
            if total > len(req.blocks) * bs or (hashing and req.token_ids is not None):
                while not pool.allocate(req, num_new):
                    victim = running.pop()
                    self._preempt(victim)
                    preempted = True
                    if victim is req:
                        break
                else:
                    victim = None
                if preempted and victim is req:
                    break
            # Running requests were scheduled before (first_sched_ns is set): advance them now.
            req.num_computed = total
            scheduled.append(Entry(req, num_new, computed, req.num_preemptions))
            budget -= num_new
            i += 1
        n_running_entries = len(scheduled)
        if not preempted:
            budget = self._admit_waiting(budget, scheduled)
        if not scheduled:
            return None
        return self._emit(scheduled, n_running_entries, now_ns)

    def _admit_waiting(self, budget: int, scheduled: list[Entry]) -> int:
        """Phase B: admit waiting requests (FCFS) while budget, sequence cap and blocks allow."""
        pool = self.pool
        while self.waiting and budget > 0:
            if len(self.running) >= self.max_num_seqs:
                break
            req = self.waiting[0]
            if req.kv_remote == KV_PENDING:  # its prompt's KV is on a prefill instance
                if not self._start_load(req):
                    break
                continue
            hits = pool.lookup(req) if req.num_computed == 0 else []
            computed = req.num_computed + len(hits) * pool.block_size
            num_new = self._cap(req.num_tokens - computed)
            if not self.chunked and num_new > budget:
                break
            num_new = min(num_new, budget)
            if num_new <= 0:
                break
            if self.reserve_full_isl and not pool.can_fit(max(req.num_tokens, computed), hits, len(req.blocks)):
                break
            req.num_computed = computed
            if not pool.allocate(req, num_new, hits):
                req.num_computed -= len(hits) * pool.block_size
                break
            self.waiting.popleft()
            if req.status is Status.PREEMPTED:
                recomputed = max(0, req.num_tokens - computed)
                req.recomputed_tokens += recomputed
                self.stats.recomputed_tokens += recomputed
            elif req.kv_remote:
                req.kv_remote = 0  # its KV came from a prefill instance, which counted its prefix hits
            elif req.num_preemptions == 0:
                req.prefix_hit_tokens = computed
                self.stats.prefix_requested_tokens += req.prompt_len
                self.stats.prefix_hit_tokens += computed
            req.status = Status.RUNNING
            self.running.append(req)
            self._admitted(req)
            scheduled.append(Entry(req, num_new, computed, req.num_preemptions))
            budget -= num_new
        return budget

    def _start_load(self, req: Request) -> bool:
        """vLLM's remote prefill (NixlConnector.get_num_new_matched_tokens: all prompt tokens are
        external, loaded asynchronously): allocate the prompt's blocks, then the request waits for
        its KV outside the token budget. False when the blocks do not fit: it stays at the head of
        the queue, as any request that does not fit (never dropped). No hashing until the KV has
        arrived (vLLM's delay_cache_blocks)."""
        need = self.pool.blocks_for(req.num_tokens)
        if need > self.pool.num_free:
            return False
        self.pool.grow(req, need)
        self.waiting.popleft()
        req.kv_remote = KV_LOADING
        self.loading.append(req)
        self.loads.append(req)
        return True

    def kv_loaded(self, req: Request) -> None:
        """Its KV has arrived: as vLLM's _update_waiting_for_remote_kv, every prompt token but the
        last counts as computed (the step that computes the last one samples the first token), and
        it waits at the front of the queue behind the requests loaded before it (vLLM keeps
        requests waiting for remote KV at the head of its waiting queue)."""
        self.loading.remove(req)
        req.num_computed = req.num_tokens - 1
        if self.pool.caching and req.token_ids is not None:
            self.pool.index_upto(req, req.num_computed)
        req.kv_remote = KV_LOADED
        k = 0
        while k < len(self.waiting) and self.waiting[k].kv_remote == KV_LOADED:
            k += 1
        self.waiting.insert(k, req)

    def _admitted(self, req: Request) -> None:
        """Hook for a request just appended to the running list."""

    def complete(self, batch: Batch, t_ns: int) -> Completion:
        """The batch's last stage finished at t_ns: stamp tokens, retire finished requests."""
        prompt_t, gen_t, finished = self._stamp(batch, t_ns)
        self._retire(finished, t_ns)  # stamped in running order
        return Completion(prompt_t, gen_t, finished)

    def _stamp(self, batch: Batch, t_ns: int) -> tuple[int, int, list[Request]]:
        """Take the batch off the in-flight list and stamp its tokens; returns the prompt and
        generated token counts and the requests that reached their length, not yet retired."""
        assert self.inflight and self.inflight[0] is batch, "batches complete in order"
        self.inflight.popleft()
        prompt_t = gen_t = 0
        finished = []
        pool = self.pool
        caching = pool.caching
        for e in batch.entries:
            req = e.req
            if req.status is Status.FINISHED or e.epoch != req.num_preemptions:
                continue  # preempted while in flight: its work is wasted
            done = e.computed_before + e.num_new
            num_tokens = req.num_tokens
            first = req.is_init and done >= req.prompt_len
            if first or e.computed_before < num_tokens - 1:
                prompt_t += e.num_new
            if caching and req.token_ids is not None:
                pool.index(req)
            if done >= num_tokens:
                req.num_tokens = num_tokens = num_tokens + 1
                gen_t += 1
                if first:
                    req.is_init = False
                    req.first_token_ns = t_ns
                else:
                    req.itl_ns.append(t_ns - req.last_token_ns)
                req.last_token_ns = t_ns
                if num_tokens >= req.prompt_len + req.output_len:
                    finished.append(req)
        return prompt_t, gen_t, finished
