"""The scheduler's fast path: decode lanes.

In steady serving most requests of a batch run one decode token, and the same requests run
together step after step (one group per pipeline slot). A lane stands for such a group: one
object advanced once per step instead of every member's counters, KV blocks and ITL list. A
member's own fields are brought up to date (materialised) when it leaves: when it finishes, when
its lane merges into another, or before a step the lane cannot reproduce, which then runs the
plain scheduler's code (scheduler.py) on fully materialised state.

Exactness. A step is formed the lane way only when the plain scheduler provably schedules every
ready request whole (their tokens fit the budget) and every allocation succeeds (blocks needed
<= free). Steps with a truncating budget or a KV shortage (preemption) run the plain code.
Within a step, when nothing hashes into the prefix cache the order of allocations cannot matter
(a fresh block going to one member or another is a relabelling), so a lane takes its blocks in
bulk. When something does (a member or a solo request with token ids and caching on), the
step's pool operations run one by one in running order, exactly as the plain path's: which
hashes are evicted and which block keeps a hash depends on that order. tests/test_fast_path.py
runs both paths on several workloads (identical-request families among them, which catch a
wrong order) and compares the outputs byte for byte.
"""
import heapq
from array import array
from bisect import bisect_left, insort

from .batch import Batch, Entry
from .kv_cache import BlockPool
from .itl import GapLog
from .request import Request, Status
from .scheduler import Completion, Scheduler


class Lane:
    """Requests that decode together. A member's live counters are its stored ones plus the
    lane's formations (num_computed) and completions (num_tokens) since it joined."""

    __slots__ = ("pool", "bs", "members", "joined", "sched", "done", "times", "log", "offsets", "off_sum", "hist",
                 "finish", "reservoir", "batch", "by_residue", "hashing")

    def __init__(self, pool: BlockPool):
        self.pool = pool
        self.bs = block_size = pool.block_size
        # -> (offset: num_computed - sched, fixed while a member; its place in the running order)
        self.members: dict[Request, tuple[int, int]] = {}
        self.joined: dict[Request, int] = {}  # -> formations when its own fields were last written
        self.sched = 0  # formations so far
        self.done = 0  # completions so far
        self.times = array("q")  # completion times
        self.log = GapLog()  # gaps between completions, shared by the members' ITL lists
        self.offsets: list[int] = []  # sorted: the batch's min and max decode history
        self.off_sum = 0
        self.hist = [0] * block_size  # members by offset mod block size: who needs a block at a step
        self.finish: list = []  # heap of (completions at which it finishes, place in running order, request)
        self.reservoir: list[int] = []  # blocks taken at formations, handed out at materialisation
        self.batch: Batch | None = None  # the batch in flight; None when the lane is ready
        # members by offset mod block size, in running order: who takes a block or fills one
        self.by_residue: list[list[tuple[int, Request]]] = [[] for _ in range(block_size)]
        # A member hashes its blocks into the prefix cache as they fill: then the lane's block
        # takes and hashing happen member by member in running order, and blocks are held live.
        self.hashing = False

    def __len__(self) -> int:
        return len(self.members)

    def join(self, req: Request, seq: int) -> None:
        """req (ready for a one-token step, blocks exactly covering its tokens; seq its place in
        the running order) joins a ready lane."""
        o = req.num_computed - self.sched
        self.members[req] = (o, seq)
        insort(self.offsets, o)
        self.off_sum += o
        self.hist[o % self.bs] += 1
        insort(self.by_residue[o % self.bs], (seq, req))
        heapq.heappush(self.finish, (req.target_len - req.num_tokens + self.sched, seq, req))
        self.joined[req] = self.sched

    def _hand_out(self, req: Request, computed: int) -> None:
        """Give the member the reservoir blocks its computed tokens need beyond those it holds."""
        nb = self.pool.blocks_short(req, computed)
        if nb:
            self.pool.assign(req, self.reservoir[-nb:])
            del self.reservoir[-nb:]

    def live_computed(self, req: Request) -> int:
        return req.num_computed + self.sched - self.joined[req]

    def start_hashing(self) -> None:
        """Hand the reservoir's blocks to their members: from now on blocks are held live."""
        for req in self.members:
            self._hand_out(req, self.live_computed(req))
        assert not self.reservoir
        self.hashing = True

    def blocks_needed(self) -> int:
        """Blocks the next formation takes: members whose history is a multiple of the block size."""
        return self.hist[-self.sched % self.bs]

    def materialise(self, req: Request) -> None:
        """Write the member's live state into its own fields (it stays a member)."""
        j = self.joined[req]
        req.num_computed += self.sched - j
        req.num_tokens += self.done - j
        self.joined[req] = self.sched
        self._hand_out(req, req.num_computed)
        if self.done > j:
            req.itl_ns.append(self.times[j] - req.last_token_ns)
            req.itl_ns.extend_shared(self.log, j + 1, self.done)
            req.last_token_ns = self.times[self.done - 1]

    def leave(self, req: Request) -> None:
        """Drop a materialised member (its finish-heap entry is popped by the caller, or the lane dies)."""
        o, seq = self.members.pop(req)
        del self.joined[req]
        del self.offsets[bisect_left(self.offsets, o)]
        self.off_sum -= o
        self.hist[o % self.bs] -= 1
        group = self.by_residue[o % self.bs]
        del group[bisect_left(group, (seq,))]

    def completed(self, t_ns: int) -> list[Request]:
        """The lane's batch finished at t_ns: returns the members that reached their length, materialised."""
        self.log.gaps.append(t_ns - self.times[-1] if self.times else 0)
        self.times.append(t_ns)
        self.done += 1
        self.batch = None
        out = []
        while self.finish and self.finish[0][0] <= self.done:
            req = heapq.heappop(self.finish)[2]
            self.materialise(req)
            self.leave(req)
            out.append(req)
        return out


class LaneScheduler(Scheduler):
    """Scheduler whose decode-only requests ride in lanes; same decisions as Scheduler."""

    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        self.lanes: list[Lane] = []
        self.solo: list[Request] = []  # running requests outside lanes, in running order
        self.seq_of: dict[Request, int] = {}  # running requests -> place in the running order
        self._seq = 0  # the next admitted request's place
        self.plain_steps = 0  # formations that fell back to the plain code (for tests and benchmarks)

    def _admitted(self, req: Request) -> None:
        self.seq_of[req] = self._seq
        self._seq += 1
        self.solo.append(req)

    def _joinable(self, req: Request) -> bool:
        return (not req.is_init and req.num_tokens - req.num_computed == 1
                and len(req.blocks) == self.pool.blocks_for(req.num_computed))

    def _hashes(self, req: Request) -> bool:
        return self.pool.caching and req.token_ids is not None

    # -- materialising -----------------------------------------------------------------------
    def _dissolve(self, lane: Lane) -> None:
        for req in lane.members:
            lane.materialise(req)
        b = lane.batch
        if b is not None:  # its step in flight becomes per-request entries
            b.entries += [Entry(req, 1, req.num_computed - 1, req.num_preemptions) for req in lane.members]
            seq_of = self.seq_of
            b.entries.sort(key=lambda e: seq_of[e.req])
            b.lanes = [x for x in b.lanes if x[0] is not lane]
        assert not lane.reservoir, "lane blocks left unassigned"

    def _settle(self) -> None:
        """Dissolve every lane: all requests' own fields up to date, as the plain path keeps them."""
        for lane in self.lanes:
            self._dissolve(lane)
        self.lanes = []
        self.solo = list(self.running)

    def leftover(self) -> list[Request]:
        self._settle()
        return Scheduler.leftover(self)

    def _plain_schedule(self, now_ns: int) -> Batch | None:
        self.plain_steps += 1
        if self.lanes:
            self._settle()
        preempted = self.stats.preemptions
        batch = Scheduler.schedule(self, now_ns)  # admissions go through _admitted
        if self.stats.preemptions != preempted:
            # Victims left the running list (and take a new place when readmitted, at its end,
            # so seq_of order stays the running order).
            self.solo = list(self.running)
        return batch

    # -- scheduling ----------------------------------------------------------------------------
    def _lane_only(self, now_ns: int) -> Batch | None:
        """The steady state: one ready lane, no other running request, nobody admissible."""
        lane = None
        for candidate in self.lanes:
            if candidate.batch is None:
                if lane is not None:
                    return NotImplemented
                lane = candidate
        if lane is None:
            return None
        n = len(lane.members)
        need = lane.blocks_needed()
        if n > self.token_budget or need > self.pool.num_free:
            return NotImplemented
        if lane.hashing:
            self._allocate_in_order(lane, [], [])
        elif need:
            lane.reservoir += self.pool.take(need)
        return self._emit_with_lane([], 0, now_ns, lane)

    def _emit_with_lane(self, entries: list[Entry], n_running: int, now_ns: int, lane: Lane | None) -> Batch:
        """Batch emission (Scheduler._emit), with the lane's one-token steps folded in."""
        if entries or lane is None:
            batch = self._emit(entries, n_running, now_ns)
            if lane is None:
                return batch
            s, n = lane.sched, len(lane.members)
            batch.add_decode(n, lane.off_sum + n * s, lane.offsets[-1] + s, lane.offsets[0] + s)
        else:  # the steady state: the lane alone, its summary built directly
            s, n = lane.sched, len(lane.members)
            batch = Batch(self.next_batch_id, self.instance, now_ns, [], n, 0, 0, n, lane.off_sum + n * s,
                          lane.offsets[-1] + s, lane.offsets[0] + s, [], n)
            self.next_batch_id += 1
            self.inflight.append(batch)
        batch.lanes = [(lane, s)]
        lane.sched = s + 1
        lane.batch = batch
        return batch

    def schedule(self, now_ns: int) -> Batch | None:
        if len(self.inflight) >= self.pp_size:
            return None
        if not self.solo and (not self.waiting or len(self.running) >= self.max_num_seqs):
            batch = self._lane_only(now_ns)
            if batch is not NotImplemented:
                return batch
        pool = self.pool
        ready = [lane for lane in self.lanes if lane.batch is None]
        tokens = blocks = 0
        for lane in ready:
            tokens += len(lane.members)
            blocks += lane.blocks_needed()
        plan = []
        threshold = self.threshold
        for req in self.solo:
            n = req.num_tokens - req.num_computed
            if n <= 0:
                continue  # its previous step is still in flight
            if 0 < threshold < n:
                n = threshold
            tokens += n
            blocks += pool.blocks_short(req, req.num_computed + n)
            plan.append((req, n))
        if tokens > self.token_budget or blocks > pool.num_free:
            return self._plain_schedule(now_ns)  # the budget truncates, or someone would be preempted

        # Every ready request runs whole and every allocation succeeds: commit.
        target = max(ready, key=len) if ready else None
        for lane in ready:  # lanes scheduled together merge (rare: a pipeline slot was skipped)
            if lane is not target:
                if lane.hashing and not target.hashing:
                    target.start_hashing()
                for req in list(lane.members):
                    lane.materialise(req)
                    lane.leave(req)
                    target.join(req, self.seq_of[req])
                assert not lane.reservoir
                self.lanes.remove(lane)
        solo_plan = []
        joined = False
        for req, n in plan:
            if n == 1 and self._joinable(req):
                if target is None:
                    target = Lane(pool)
                    self.lanes.append(target)
                if self._hashes(req) and not target.hashing:
                    target.start_hashing()
                target.join(req, self.seq_of[req])
                joined = True
            else:
                solo_plan.append((req, n))
        if joined:
            self.solo = [r for r in self.solo if r not in target.members]
        # Allocations, before admissions as in the plain path. While the prefix cache is in play
        # their order decides which hashes survive, so they go one by one in running order.
        entries: list[Entry] = []
        if (target is not None and target.hashing) or any(self._hashes(req) for req, _ in solo_plan):
            self._allocate_in_order(target, solo_plan, entries)
        else:
            for req, n in solo_plan:
                self._allocate_solo(req, n, entries)
            if target is not None:
                target.reservoir += pool.take(target.blocks_needed())
        n_running = len(entries)
        budget = self.token_budget - tokens
        if budget > 0:
            self._admit_waiting(budget, entries)
        if not entries and target is None:
            return None
        return self._emit_with_lane(entries, n_running, now_ns, target)

    def _allocate_solo(self, req: Request, n: int, entries: list[Entry]) -> None:
        computed = req.num_computed
        total = computed + n
        if total > len(req.blocks) * self.pool.block_size or self._hashes(req):
            self.pool.allocate(req, n)  # fits: checked by the caller
        req.num_computed = total
        entries.append(Entry(req, n, computed, req.num_preemptions))

    def _allocate_in_order(self, lane: Lane | None, solo_plan, entries: list[Entry]) -> None:
        """The step's pool operations in running order, as the plain path does them: solos
        allocate; lane members whose history is a multiple of the block size take a block, and
        (hashing lanes) those about to fill one hash it."""
        seq_of = self.seq_of
        ops = [(seq_of[req], 0, req, n) for req, n in solo_plan]
        if lane is not None:
            bs, s = lane.bs, lane.sched
            ops += [(rs, 1, req, 0) for rs, req in lane.by_residue[-s % bs]]
            if lane.hashing:
                ops += [(rs, 2, req, 0) for rs, req in lane.by_residue[(-s - 1) % bs]]
        ops.sort(key=lambda op: (op[0], op[1]))  # a member that takes and fills (block size 1): take first
        pool = self.pool
        for _, kind, req, n in ops:
            if kind == 0:
                self._allocate_solo(req, n, entries)
            elif not lane.hashing:
                lane.reservoir += pool.take(1)
            elif kind == 1:
                # (allocate() hashes after a take too, but the blocks it could hash were hashed
                # when they filled, a step earlier)
                pool.grow(req, 1)
            else:
                pool.index_upto(req, lane.live_computed(req) + 1)

    def complete(self, batch: Batch, t_ns: int) -> Completion:
        if not batch.lanes:
            done = Scheduler.complete(self, batch, t_ns)
            if done.finished:
                self._forget(done.finished)
            return done
        if not batch.entries and len(batch.lanes) == 1:  # the steady state: one lane, nothing else
            assert self.inflight[0] is batch, "batches complete in order"
            self.inflight.popleft()
            prompt, gen, finished = 0, 0, []
        else:
            prompt, gen, finished = self._stamp(batch, t_ns)  # its per-request entries
        for lane, _ in batch.lanes:
            gen += len(lane.members)
            finished += lane.completed(t_ns)
            if not lane.members:
                self.lanes.remove(lane)
        if finished:
            # Retired in running order, as the plain path does: the free list's order (and so
            # which cached blocks are evicted first) follows the order of frees.
            finished.sort(key=self.seq_of.__getitem__)
            self._retire(finished, t_ns)
            self._forget(finished)
        return Completion(prompt, gen, finished)

    def _forget(self, finished: list[Request]) -> None:
        self.solo = [r for r in self.solo if r.status is not Status.FINISHED]
        for req in finished:
            del self.seq_of[req]
