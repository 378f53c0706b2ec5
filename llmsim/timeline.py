"""A run as a Chrome trace-event JSON (opens in ui.perfetto.dev and chrome://tracing).

One process per instance, one track per NPU: a slice per batch stage (batch id, requests and
tokens in its args), an idle slice per idle stretch named by its cause (llmsim/accounting.py),
a flow arrow per stage-to-stage transfer (from the sending slice's end to the receiving slice),
and counter tracks of running and waiting requests and KV blocks in use, sampled at every batch
formation. Times are microseconds (the format's unit) with nanosecond decimals.
"""
import json

from .accounting import CAUSES

_US = 1000.0


def _overlaps(a: int, b: int, window) -> bool:
    return window is None or (b >= window[0] and a <= window[1])


def timeline_json(instances, iteration_log, idle_segments, samples, window_ns=None) -> str:
    """window_ns: (start, end) in ns; only what overlaps it is kept (and the counters inside it)."""
    ev = []
    for inst in instances:
        cfg, i = inst.config, inst.index
        ev.append({"ph": "M", "name": "process_name", "pid": i, "args": {
            "name": f"instance {i}: {inst.model.name}, tp={cfg.tp_size} x pp={cfg.pp_size}"}})
        for s in range(cfg.pp_size):
            for r in range(cfg.tp_size):
                npu = cfg.first_npu + s * cfg.tp_size + r
                ev.append({"ph": "M", "name": "thread_name", "pid": i, "tid": npu,
                           "args": {"name": f"NPU {npu} (stage {s}, rank {r})"}})
                ev.append({"ph": "M", "name": "thread_sort_index", "pid": i, "tid": npu, "args": {"sort_index": npu}})
    cfgs = {inst.index: inst.config for inst in instances}

    def npus(i, s):
        c = cfgs[i]
        return range(c.first_npu + s * c.tp_size, c.first_npu + (s + 1) * c.tp_size)

    by_batch = {}
    for rec in iteration_log:
        by_batch.setdefault((rec.instance, rec.batch_id), []).append(rec)
        if not _overlaps(rec.start_ns, rec.end_ns, window_ns):
            continue
        args = {"batch": rec.batch_id, "requests": rec.requests, "prefill_tokens": rec.prefill_tokens,
                "decode_tokens": rec.decode_tokens, "start_ns": rec.start_ns, "end_ns": rec.end_ns}
        for npu in npus(rec.instance, rec.stage):
            ev.append({"ph": "X", "cat": "batch", "name": f"batch {rec.batch_id}", "pid": rec.instance, "tid": npu,
                       "ts": rec.start_ns / _US, "dur": (rec.end_ns - rec.start_ns) / _US, "args": args})
    flow = 0
    for (i, bid), recs in by_batch.items():
        recs.sort(key=lambda r: r.stage)
        for a, b in zip(recs, recs[1:]):
            if not _overlaps(a.end_ns, b.start_ns, window_ns):
                continue
            for src, dst in zip(npus(i, a.stage), npus(i, b.stage)):
                flow += 1
                # the arrow leaves inside the sending slice (its SEND ends it) and lands on the next
                ev.append({"ph": "s", "cat": "transfer", "name": "activation", "id": flow, "pid": i, "tid": src,
                           "ts": (a.end_ns - 1) / _US})
                ev.append({"ph": "f", "bp": "e", "cat": "transfer", "name": "activation", "id": flow, "pid": i,
                           "tid": dst, "ts": b.start_ns / _US})
    for i, s, x, y, cause in idle_segments or ():
        if not _overlaps(x, y, window_ns):
            continue
        for npu in npus(i, s):
            ev.append({"ph": "X", "cat": "idle", "name": f"idle: {CAUSES[cause]}", "pid": i, "tid": npu,
                       "ts": x / _US, "dur": (y - x) / _US, "cname": "grey"})
    for t, i, running, waiting, kv_used in samples or ():
        if window_ns is not None and not window_ns[0] <= t <= window_ns[1]:
            continue
        ev.append({"ph": "C", "name": "requests", "pid": i, "ts": t / _US, "args": {"running": running,
                                                                                     "waiting": waiting}})
        ev.append({"ph": "C", "name": "KV blocks in use", "pid": i, "ts": t / _US, "args": {"blocks": kv_used}})
    return json.dumps({"traceEvents": ev, "displayTimeUnit": "ms",
                       "otherData": {"source": "llmsim", "window_ns": list(window_ns) if window_ns else None}},
                      separators=(",", ":")) + "\n"


def parse_window(text: str) -> tuple[int, int]:
    """'START:END' in simulated seconds -> (start_ns, end_ns); ValueError with what is wrong."""
    a, sep, b = text.partition(":")
    try:
        start, end = float(a), float(b)
    except ValueError:
        raise ValueError(f"expected START:END in simulated seconds (e.g. 10:12), got {text!r}") from None
    if not sep or not (0 <= start < end) or end == float("inf"):
        raise ValueError(f"expected 0 <= START < END, finite, in simulated seconds, got {text!r}")
    return int(round(start * 1e9)), int(round(end * 1e9))
