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
from .itl import GapLog
from .request import Request, Status
from .scheduler import Completion, Scheduler


class Lane:
    """Requests that decode together. A member's live counters are its stored ones plus the
    lane's formations (num_computed) and completions (num_tokens) since it joined."""

    __slots__ = ("bs", "members", "sched", "done", "times", "log", "offsets", "off_sum", "hist", "finish",
                 "reservoir", "batch", "by_residue", "hashing")

    def __init__(self, block_size: int):
        self.bs = block_size
        self.members: dict[Request, int] = {}  # -> offset: num_computed - sched, fixed while a member
        self.sched = 0  # formations so far
        self.done = 0  # completions so far
        self.times = array("q")  # completion times
        self.log = GapLog()  # gaps between completions, shared by the members' ITL lists
        self.offsets: list[int] = []  # sorted: the batch's min and max decode history
        self.off_sum = 0
        self.hist = [0] * block_size  # members by offset mod block size: who needs a block at a step
        self.finish: list = []  # heap of (completions at which it finishes, run_seq, request)
        self.reservoir: list[int] = []  # blocks taken at formations, handed out at materialisation
        self.batch: Batch | None = None  # the batch in flight; None when the lane is ready
        # members by offset mod block size, in running order: who takes a block or fills one
        self.by_residue: list[list[tuple[int, Request]]] = [[] for _ in range(block_size)]
        # A member hashes its blocks into the prefix cache as they fill: then the lane's block
        # takes and hashing happen member by member in running order, and blocks are held live.
        self.hashing = False

    def __len__(self) -> int:
        return len(self.members)

    def join(self, req: Request) -> None:
        """req (ready for a one-token step, blocks exactly covering its tokens) joins a ready lane."""
        o = req.num_computed - self.sched
        self.members[req] = o
        insort(self.offsets, o)
        self.off_sum += o
        self.hist[o % self.bs] += 1
        insort(self.by_residue[o % self.bs], (req.run_seq, req))
        heapq.heappush(self.finish, (req.target_len - req.num_tokens + self.sched, req.run_seq, req))
        req.lane = self
        req.lane_join = self.sched

    def _hand_out(self, req: Request, computed: int) -> None:
        """Give the member the reservoir blocks its computed tokens need beyond those it holds."""
        nb = -(-computed // self.bs) - len(req.blocks)
        if nb > 0:
            req.blocks += self.reservoir[-nb:]
            del self.reservoir[-nb:]

    def live_computed(self, req: Request) -> int:
        return req.num_computed + self.sched - req.lane_join

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
        j = req.lane_join
        req.num_computed += self.sched - j
        req.num_tokens += self.done - j
        req.lane_join = self.sched
        self._hand_out(req, req.num_computed)
        if self.done > j:
            req.itl_ns.append(self.times[j] - req.last_token_ns)
            req.itl_ns.extend_shared(self.log, j + 1, self.done)
            req.last_token_ns = self.times[self.done - 1]

    def leave(self, req: Request) -> None:
        """Drop a materialised member (its finish-heap entry is popped by the caller, or the lane dies)."""
        o = self.members.pop(req)
        del self.offsets[bisect_left(self.offsets, o)]
        self.off_sum -= o
        self.hist[o % self.bs] -= 1
        group = self.by_residue[o % self.bs]
        del group[bisect_left(group, (req.run_seq,))]
        req.lane = None

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
        self._seq = 0  # run_seq of the next admitted request: running order
        self.plain_steps = 0  # formations that fell back to the plain code (for tests and benchmarks)

    def _admitted(self, req: Request) -> None:
        req.run_seq = self._seq
        self._seq += 1
        self.solo.append(req)

    def _joinable(self, req: Request) -> bool:
        return (not req.is_init and req.num_tokens - req.num_computed == 1
                and len(req.blocks) == -(-req.num_computed // self.pool.block_size))

    def _hashes(self, req: Request) -> bool:
        return self.pool.caching and req.token_ids is not None

    # -- materialising -----------------------------------------------------------------------
    def _dissolve(self, lane: Lane) -> None:
        for req in lane.members:
            lane.materialise(req)
            req.lane = None
        b = lane.batch
        if b is not None:  # its step in flight becomes per-request entries
            b.entries += [Entry(req, 1, req.num_computed - 1, req.num_preemptions) for req in lane.members]
            b.entries.sort(key=lambda e: e.req.run_seq)
            b.lanes = [x for x in b.lanes if x[0] is not lane]
        assert not lane.reservoir, "lane blocks left unassigned"

    def settle(self) -> None:
        for lane in self.lanes:
            self._dissolve(lane)
        self.lanes = []
        self.solo = list(self.running)

    def _plain_schedule(self, now_ns: int) -> Batch | None:
        self.plain_steps += 1
        if self.lanes:
            self.settle()
        preempted = self.stats.preemptions
        batch = Scheduler.schedule(self, now_ns)  # admissions go through _admitted
        if self.stats.preemptions != preempted:
            # Victims left the running list (and take a new run_seq when readmitted, at its end,
            # so run_seq order stays the running order).
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
        s = lane.sched
        batch = Batch(self.next_batch_id, self.instance, now_ns, [], n, 0, 0, 0, n, lane.off_sum + n * s,
                      lane.offsets[-1] + s, lane.offsets[0] + s, [(lane, s)], n)
        lane.sched = s + 1
        lane.batch = batch
        self.next_batch_id += 1
        self.inflight.append(batch)
        return batch

    def schedule(self, now_ns: int) -> Batch | None:
        if len(self.inflight) >= self.pp_size:
            return None
        if not self.solo and (not self.waiting or len(self.running) >= self.max_num_seqs):
            batch = self._lane_only(now_ns)
            if batch is not NotImplemented:
                return batch
        pool = self.pool
        bs = pool.block_size
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
            total = req.num_computed + n
            if total > len(req.blocks) * bs:
                blocks += -(-total // bs) - len(req.blocks)
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
                    target.join(req)
                assert not lane.reservoir
                self.lanes.remove(lane)
        solo_plan = []
        joined = False
        for req, n in plan:
            if n == 1 and self._joinable(req):
                if target is None:
                    target = Lane(bs)
                    self.lanes.append(target)
                if self._hashes(req) and not target.hashing:
                    target.start_hashing()
                target.join(req)
                joined = True
            else:
                solo_plan.append((req, n))
        if joined:
            self.solo = [r for r in self.solo if r.lane is None]
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
        for e in entries[n_running:]:  # admitted
            if e.req.first_sched_ns < 0:
                e.req.first_sched_ns = now_ns
            e.req.num_computed = e.computed_before + e.num_new
        batch = Batch.build(self.next_batch_id, self.instance, now_ns, entries)
        if target is not None:
            s, n = target.sched, len(target.members)
            batch.add_decode(n, target.off_sum + n * s, target.offsets[-1] + s, target.offsets[0] + s)
            batch.lanes = [(target, s)]
            target.sched += 1
            target.batch = batch
        self.next_batch_id += 1
        self.inflight.append(batch)
        return batch

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
        ops = [(req.run_seq, 0, req, n) for req, n in solo_plan]
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
                req.blocks += pool.take(1)
            else:
                pool.index_upto(req, lane.live_computed(req) + 1)

    def complete(self, batch: Batch, t_ns: int) -> Completion:
        if not batch.lanes:
            done = Scheduler.complete(self, batch, t_ns)
            if done.finished:
                self.solo = [r for r in self.solo if r.status is not Status.FINISHED]
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
            finished.sort(key=lambda r: r.run_seq)
            for req in finished:
                self._finish(req, t_ns)
            self.solo = [r for r in self.solo if r.status is not Status.FINISHED]
        return Completion(prompt, gen, finished)
