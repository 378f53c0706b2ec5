"""Where each pipeline stage's time went: busy (compute, communication) and idle, by cause.

Every stage's wall time, [0, end of run), is partitioned to the nanosecond: each batch's stage
interval [start, end) is busy, split into compute and the rest (sends, receives, TP collectives,
host-memory transfers, queueing at host memory); each gap between intervals is idle, and every
idle nanosecond gets exactly one cause:

- a later stage waiting for a batch that exists: `transfer` while the previous stage's SEND of it
  is on the wire, before that `fill_drain` if the instance had nothing in flight when the batch
  was formed (the pipeline filling) else `upstream` (an earlier stage is slower: stage imbalance);
- no batch to run yet: why the engine formed none, read from its state (`state()`, recorded by the
  driver after every event): `inflight_cap` (pp_size batches in flight), `batch_queue` (vLLM's
  engine blocked on its oldest batch while requests wait), `admission` (requests wait that do not
  fit: KV blocks or max_num_seqs), `fill_drain` (every running request is in flight: its next step
  needs the token the pipeline is still computing), `starved` (no request waiting or running);
  for a data-parallel group's rank (llmsim/dp.py) `dp_peer` (its step done, the group's slowest
  rank not) and `dp_dummy` (nothing of its own scheduled: it runs a dummy batch for the group).

Pure bookkeeping on the stage events a backend reports; the engine feeds it (llmsim/engine.py).
"""
from bisect import bisect_right

CAUSES = ("fill_drain", "starved", "inflight_cap", "batch_queue", "admission", "upstream", "transfer", "dp_peer",
          "dp_dummy")
FILL_DRAIN, STARVED, INFLIGHT_CAP, BATCH_QUEUE, ADMISSION, UPSTREAM, TRANSFER, DP_PEER, DP_DUMMY = range(len(CAUSES))
DP_CAUSES = ("dp_peer", "dp_dummy")  # only a data-parallel group's ranks have them
CAUSE_TEXT = {
    "fill_drain": "pipeline fill/drain (every running request in flight, or a stage waiting for the first batch)",
    "starved": "starved (no request waiting or running)",
    "inflight_cap": "in-flight cap (pp_size batches in flight)",
    "batch_queue": "batch queue (vLLM's engine blocked on its oldest batch while requests wait)",
    "admission": "admission (waiting requests do not fit: KV blocks or max_num_seqs)",
    "upstream": "upstream stage (an earlier stage still computing the batch: stage imbalance)",
    "transfer": "transfer (the previous stage's send of the batch on the wire)",
    "dp_peer": "DP peer (a data-parallel rank done with its step, waiting for the group's slowest rank)",
    "dp_dummy": "DP dummy (a data-parallel rank with nothing scheduled, running vLLM's dummy batch for the group)",
}
# What counts as a pipeline bubble: idle that the pipeline's shape causes, not the workload
# (starved) or the memory (admission).
BUBBLE = (FILL_DRAIN, INFLIGHT_CAP, BATCH_QUEUE, UPSTREAM, TRANSFER)
_COMPUTE, _COMM, _IDLE = 0, 1, 2  # slots of a tally: compute, communication, then one per cause


def why_idle(inflight: int, pp: int, waiting: int, running: int, blocked: bool, refused: int, max_seqs: int) -> int:
    """Why an instance forms no batch now, from its scheduler's counts. refused: how many requests
    waited when the scheduler last had nothing new (they did not fit); blocked: vLLM's engine waits
    on its oldest batch. A request that arrived since, with a sequence slot free, would have been
    considered had the engine asked: the batch queue holds it (KV fit is not re-checked)."""
    if inflight >= pp:
        return INFLIGHT_CAP
    if waiting:
        if blocked and waiting > refused and (not max_seqs or running < max_seqs):
            return BATCH_QUEUE
        return ADMISSION
    return FILL_DRAIN if running else STARVED


def _tally() -> list[int]:
    return [0] * (_IDLE + len(CAUSES))


class _Stage:
    __slots__ = ("last_end", "run", "buckets")

    def __init__(self):
        self.last_end = 0  # when the stage finished its last batch
        self.run = _tally()
        self.buckets: dict[int, list[int]] = {}  # log interval k -> tally of [k*iv, (k+1)*iv)


class Accountant:
    def __init__(self, pp_sizes: list[int], interval_ns: int = 0, keep_segments: bool = False):
        self.stages = [[_Stage() for _ in range(pp)] for pp in pp_sizes]
        # per instance: the engine's state since each time (why no batch could be formed)
        self._t = [[0] for _ in pp_sizes]
        self._cause = [[STARVED] for _ in pp_sizes]
        self.iv = interval_ns
        # (instance, stage, start, end, cause) of every idle stretch, for a timeline
        self.segments: list | None = [] if keep_segments else None

    def state(self, i: int, t: int, cause: int) -> None:
        """From t on, instance i forms no batch for this reason (until its next state)."""
        ts, cs = self._t[i], self._cause[i]
        if cs[-1] == cause:
            return
        if ts[-1] == t:
            cs[-1] = cause
        else:
            ts.append(t)
            cs.append(cause)

    def batch(self, i: int, formed_ns: int, pipeline_was_empty: bool, events) -> None:
        """A batch of instance i, formed at formed_ns, placed as `events` (one per stage, in order)."""
        stages = self.stages[i]
        iv = self.iv
        prev_send = 0
        s = -1
        for _, _, _, _, g1, end, _, compute, send in events:
            s += 1
            acc = stages[s]
            g0 = acc.last_end
            if g1 > g0:
                if s == 0:  # stage 0 starts a batch when it is formed, or when it frees
                    self._by_state(i, s, g0, g1)
                else:
                    a = min(max(formed_ns, g0), g1)
                    if a > g0:
                        self._by_state(i, s, g0, a)
                    wire = max(a, g1 - prev_send)
                    if wire > a:
                        self._add(acc, i, s, FILL_DRAIN if pipeline_was_empty else UPSTREAM, a, wire)
                    if g1 > wire:
                        self._add(acc, i, s, TRANSFER, wire, g1)
            # TP ranks may start a batch while another rank still stores the previous one's output
            # (host memory is one queue): the stage is busy from its first rank's start to its last
            # rank's end, and overlapping intervals count once.
            start = g1 if g1 > g0 else g0
            prev_send = send
            if end <= start:
                continue
            if compute > end - start:
                compute = end - start
            run = acc.run
            run[_COMPUTE] += compute
            run[_COMM] += end - start - compute
            acc.last_end = end
            if iv:
                k = start // iv
                if (end - 1) // iv == k:  # the common case: within one log interval
                    b = acc.buckets.get(k)
                    if b is None:
                        b = acc.buckets[k] = _tally()
                    b[_COMPUTE] += compute
                    b[_COMM] += end - start - compute
                else:
                    self._busy_spread(acc, start, end, compute)
        self._prune(i)

    def finish(self, end_ns: int) -> None:
        """The run ended at end_ns: each stage's idle time after its last batch."""
        for i, stages in enumerate(self.stages):
            for s, acc in enumerate(stages):
                if end_ns > acc.last_end:
                    self._by_state(i, s, acc.last_end, end_ns)
                    acc.last_end = end_ns

    # -- internals ---------------------------------------------------------------------------------
    def _by_state(self, i: int, s: int, x: int, y: int) -> None:
        ts, cs = self._t[i], self._cause[i]
        acc = self.stages[i][s]
        k = bisect_right(ts, x) - 1
        while x < y:
            nxt = ts[k + 1] if k + 1 < len(ts) else y
            end = min(nxt, y)
            if end > x:
                self._add(acc, i, s, cs[k], x, end)
            x = end
            k += 1

    def _prune(self, i: int) -> None:
        """States before every stage's last batch end are never read again."""
        ts = self._t[i]
        if len(ts) > 256:
            k = bisect_right(ts, min(a.last_end for a in self.stages[i])) - 1
            if k > 128:
                del ts[:k], self._cause[i][:k]

    def _add(self, acc: _Stage, i: int, s: int, cause: int, x: int, y: int) -> None:
        slot = _IDLE + cause
        acc.run[slot] += y - x
        if self.segments is not None:
            self.segments.append((i, s, x, y, cause))
        iv = self.iv
        if iv:
            buckets = acc.buckets
            k = x // iv
            if (y - 1) // iv == k:
                b = buckets.get(k)
                if b is None:
                    b = buckets[k] = _tally()
                b[slot] += y - x
                return
            for k in range(k, (y - 1) // iv + 1):
                b = buckets.get(k)
                if b is None:
                    b = buckets[k] = _tally()
                b[_IDLE + cause] += min(y, (k + 1) * iv) - max(x, k * iv)

    def _busy_spread(self, acc: _Stage, start: int, end: int, compute: int) -> None:
        """A busy interval over several log intervals: compute spread evenly, the parts summing exactly."""
        iv = self.iv
        total, done = end - start, 0
        for k in range(start // iv, (end - 1) // iv + 1):
            x, y = max(start, k * iv), min(end, (k + 1) * iv)
            upto = compute * (y - start) // total
            b = acc.buckets.get(k)
            if b is None:
                b = acc.buckets[k] = _tally()
            b[_COMPUTE] += upto - done
            b[_COMM] += (y - x) - (upto - done)
            done = upto

    # -- results -------------------------------------------------------------------------------------
    def rows(self, end_ns: int, instances) -> list[dict]:
        """The whole run's row per stage (window "run"), then each log interval's rows."""
        out = []
        for inst, stages in zip(instances, self.stages):
            for s, acc in enumerate(stages):
                out.append(_row("run", 0, end_ns, inst, s, acc.run))
        if self.iv:
            for inst, stages in zip(instances, self.stages):
                for s, acc in enumerate(stages):
                    for k in sorted(acc.buckets):
                        a, b = k * self.iv, min((k + 1) * self.iv, end_ns)
                        if b > a:
                            out.append(_row("interval", a, b, inst, s, acc.buckets[k]))
        return out


def _row(window: str, a: int, b: int, inst, s: int, t: list[int]) -> dict:
    wall = b - a
    cfg = inst.config
    mem = inst.memory.stages[s]
    row = {"window": window, "window_start_s": a / 1e9, "window_end_s": b / 1e9, "instance": inst.index, "stage": s,
           "npus": " ".join(str(cfg.first_npu + s * cfg.tp_size + r) for r in range(cfg.tp_size)),
           "layers": mem.layers, "weight_bytes": mem.weight_bytes, "wall_ns": wall,
           "busy_compute_ns": t[_COMPUTE], "busy_comm_ns": t[_COMM]}
    for c, name in enumerate(CAUSES):
        row[f"idle_{name}_ns"] = t[_IDLE + c]
    row["busy_pct"] = round(100 * (t[_COMPUTE] + t[_COMM]) / wall, 3) if wall else 0.0
    row["bubble_fraction"] = round(sum(t[_IDLE + c] for c in BUBBLE) / wall, 6) if wall else 0.0
    return row
