"""Outputs: the per-request CSV (the reference's columns), the heartbeat line, the run summary,
the iteration log, rendered as text; outputs.py writes them."""
import csv
import io
import math
from typing import NamedTuple

from .itl import itl_stats_ms
from .stats import percentile
from .units import GIB, NS_PER_S

CSV_HEADER = ["instance id", "request id", "model", "input", "output", "arrival", "end_time", "latency",
              "queuing_delay", "TTFT", "TPOT", "ITL"]


class RequestMetrics(NamedTuple):
    """A finished request's figures, as the CSV, the summary, validate and the API all define them."""
    latency_ns: int  # end - arrival
    ttft_ns: int  # first token - arrival
    queuing_ns: int  # first scheduled - arrival (-1: never scheduled)
    decode_ns: int  # last token - first token
    decode_steps: int  # tokens after the first

    @property
    def tpot_ns(self) -> int:
        """Time per output token after the first, whole ns (0 for a one-token output)."""
        return self.decode_ns // self.decode_steps if self.decode_steps > 0 else 0


def request_metrics(req) -> RequestMetrics:
    return RequestMetrics(req.end_ns - req.arrival_ns, req.first_token_ns - req.arrival_ns,
                          req.first_sched_ns - req.arrival_ns if req.first_sched_ns >= 0 else -1,
                          req.end_ns - req.first_token_ns, req.output_len - 1)


def finished_requests(result) -> list:
    return [r for done in result.finished for r in done]


def request_row(req, model_name: str) -> list:
    m = request_metrics(req)
    return [req.instance, req.id, model_name, req.prompt_len, req.output_len, req.arrival_ns, req.end_ns,
            m.latency_ns, m.queuing_ns, m.ttft_ns, m.tpot_ns, req.itl_ns.text()]


def _csv_field(text: str) -> str:
    """csv.writer's minimal quoting, for the fields written by hand below."""
    if any(c in text for c in ',"\r\n'):
        return '"' + text.replace('"', '""') + '"'
    return text


def requests_csv_lines(result, instances):
    """The per-request CSV, line by line. Rows are joined by hand: the ITL lists are most of the
    bytes and csv.writer scans them character by character; the quoting is csv's minimal one."""
    yield ",".join(CSV_HEADER) + "\n"
    for inst, done in zip(instances, result.finished):
        model = _csv_field(inst.model.name)
        for req in done:
            row = request_row(req, model)
            itl = row.pop()
            yield ",".join(map(str, row)) + "," + (f'"{itl}"' if "," in itl else itl) + "\n"


def unfinished_csv(result) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["request id", "instance id", "input", "output", "arrival", "generated", "reason"])
    for req, reason in result.unfinished:
        w.writerow([req.id, req.instance, req.prompt_len, req.output_len, req.arrival_ns,
                    max(0, req.num_tokens - req.prompt_len), reason])
    return buf.getvalue()


def run_metadata(sim, result, options: dict) -> str:
    """What produced a per-request CSV (written beside it as <output>.meta.json): the CSV's own
    columns are fixed by the reference, so the run's provenance lives here."""
    import json

    from .version import __version__

    doc = {
        "llmsim_version": __version__,
        "cluster_config": sim.cluster.path,
        "options": {k: v for k, v in sorted(options.items()) if isinstance(v, (str, int, float, bool, type(None)))},
        "instances": [{
            "instance": i.index, "model": i.model.name, "hardware": i.config.hardware,
            "tp_size": i.config.tp_size, "pp_size": i.config.pp_size, "ep_size": i.config.ep_size, "dtype": i.dtype,
            "pd_type": i.config.pd_type,
            "timing_source": i.timer.source, "timing": i.timer.describe(),
            "kv_blocks": i.memory.num_blocks, "block_size": i.memory.block_size,
            "layers_per_stage": [s.layers for s in i.memory.stages],
            # the rules llmsim can take from vLLM or from the reference (--compat; docs/differences.md)
            "kv_capacity": i.args.kv_capacity, "batch_formation": i.args.batch_formation,
            "stage_transfer": i.args.stage_transfer, "dp_sync": i.args.dp_sync,
            # MoE models: the expert routing model timing each MoE layer (docs/moe.md); null when dense
            "moe_routing": i.routing.describe() if getattr(i, "routing", None) is not None else None,
        } for i in sim.instances],
        "requests_finished": sum(len(d) for d in result.finished),
        "requests_unfinished": len(result.unfinished),
        "simulated_ns": result.end_ns,
        "iterations": result.iterations,
        "arrival_shift_ns": sim.arrival_shift_ns,  # add to the CSV's times for the workload's own clock
    }
    return json.dumps(doc, indent=1) + "\n"


ITERATION_HEADER = ["batch_id", "instance", "stage", "npu", "start_ns", "end_ns", "requests",
                    "prefill_tokens", "decode_tokens"]


def iteration_csv(records) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(ITERATION_HEADER)
    for r in records:
        w.writerow([r.batch_id, r.instance, r.stage, r.npu, r.start_ns, r.end_ns, r.requests,
                    r.prefill_tokens, r.decode_tokens])
    return buf.getvalue()


def fmt_rate(v: float) -> str:
    return f"{v / 1000:.1f}k" if v >= 1000 else f"{v:.0f}"


def heartbeat_line(hb, interval_ns: int) -> str:
    secs = interval_ns / NS_PER_S
    return (f"[INFO] step={hb.t_ns // interval_ns} batch={hb.batch_reqs} "
            f"prompt_t={fmt_rate(hb.prompt_tokens / secs)} tok/s decode_t={fmt_rate(hb.gen_tokens / secs)} tok/s "
            f"npu_mem={hb.npu_mem_bytes / GIB:.1f} GB")


SUMMARY_STATS = ("mean", "median", "p90", "p95", "p99")  # per metric: <metric>_<stat>_ms
SUMMARY_METRICS = ("ttft", "tpot", "itl", "latency")


def _ms_stats(values_ns) -> tuple[float, ...] | None:
    """(mean, median, P90, P95, P99) in ms, or None for no values."""
    if len(values_ns) == 0:
        return None
    ms = sorted(v / 1e6 for v in values_ns)
    return (math.fsum(ms) / len(ms),) + tuple(percentile(ms, q) for q in (50, 90, 95, 99))


def summary_stats(result, scheduler_stats) -> dict:
    """The run's summary figures, one flat dict (the text summary, the API and meta.json read it)."""
    secs = result.end_ns / NS_PER_S if result.end_ns else 0.0
    reqs = finished_requests(result)
    rate = (lambda x: x / secs) if secs > 0 else (lambda x: 0.0)
    ttft, tpot, latency = [], [], []
    for r in reqs:  # lists of ints, not a tuple per request: 100k-request runs watch their peak
        m = request_metrics(r)
        ttft.append(m.ttft_ns)
        latency.append(m.latency_ns)
        if m.decode_steps > 0:
            tpot.append(m.tpot_ns)
    out = {
        "requests_finished": len(reqs), "requests_unfinished": len(result.unfinished),
        "simulated_ns": result.end_ns, "iterations": result.iterations,
        "input_tokens": sum(r.prompt_len for r in reqs), "generated_tokens": sum(r.output_len for r in reqs),
        "request_throughput_per_s": rate(len(reqs)),
        "prompt_throughput_tok_per_s": rate(result.prompt_tokens), "gen_throughput_tok_per_s": rate(result.gen_tokens),
        "preemptions": sum(s.preemptions for s in scheduler_stats),
        "recomputed_tokens": sum(s.recomputed_tokens for s in scheduler_stats),
        "prefix_requested_tokens": sum(s.prefix_requested_tokens for s in scheduler_stats),
        "prefix_hit_tokens": sum(s.prefix_hit_tokens for s in scheduler_stats),
    }
    if getattr(result, "disagg", None) is not None:
        out.update(pool_stats(result))
    if getattr(result, "dp", None):  # data-parallel groups (dp.py): their lockstep steps, summed
        out.update({f"dp_{k}": sum(g[k] for g in result.dp) for k in ("steps", "dummy_batches", "padded_tokens")})
    for name, vals in (("ttft", _ms_stats(ttft)), ("tpot", _ms_stats(tpot)),
                       ("itl", itl_stats_ms([r.itl_ns for r in reqs], (50, 90, 95, 99))),
                       ("latency", _ms_stats(latency))):
        for stat, v in zip(SUMMARY_STATS, vals or (math.nan,) * len(SUMMARY_STATS)):
            out[f"{name}_{stat}_ms"] = v
    return out


def pool_stats(result) -> dict:
    """Disaggregated runs (disagg.py): per pool, requests prefilled / decoded and utilisation (busy
    share of the pool's NPU time, from the per-stage accounting rows; NaN without them); the KV
    transfers' bytes and mean time."""
    pd = result.disagg
    out = {"pd_prefill_instances": len(pd["prefill"]), "pd_decode_instances": len(pd["decode"]),
           "pd_requests_prefilled": sum(pd["prefilled"]),
           "pd_requests_decoded": sum(len(result.finished[d]) for d in pd["decode"]),
           "pd_kv_transfers": pd["transfers"], "pd_kv_bytes": pd["kv_bytes"],
           "pd_transfer_mean_ms": pd["transfer_ns"] / pd["transfers"] / 1e6 if pd["transfers"] else math.nan}
    for pool in ("prefill", "decode"):
        rows = [r for r in result.stages or () if r["window"] == "run" and r["instance"] in pd[pool]]
        npu_ns = sum(r["wall_ns"] * len(r["npus"].split()) for r in rows)
        busy = sum((r["busy_compute_ns"] + r["busy_comm_ns"]) * len(r["npus"].split()) for r in rows)
        out[f"pd_{pool}_busy_pct"] = 100 * busy / npu_ns if npu_ns else math.nan
    return out


def summary_json(stats: dict, stages: list[dict] | None = None) -> str:
    """summary_stats as <output>.summary.json (times in ms; null where there is no value), with the
    whole run's per-stage accounting rows under "stages" (null: the backend reports none)."""
    import json

    doc = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in stats.items()}
    doc["stages"] = None if stages is None else [r for r in stages if r["window"] == "run"]
    return json.dumps(doc, indent=1) + "\n"


def written_line(paths) -> str:
    """The summary's last line: what this run wrote."""
    paths = [str(p) for p in paths]
    if not paths:
        return "  Written:                  nothing (no --output or --iteration-log)"
    return "  Written:                  " + ", ".join(paths)


def _fmt_ms(s: dict, name: str) -> str:
    if math.isnan(s[f"{name}_mean_ms"]):
        return "n/a"
    return f"mean {s[f'{name}_mean_ms']:.2f}  median {s[f'{name}_median_ms']:.2f}  P99 {s[f'{name}_p99_ms']:.2f}"


def summary(result, instances, scheduler_stats, stats: dict | None = None) -> str:
    """The text summary; stats: summary_stats(result, scheduler_stats), when already computed."""
    s = stats if stats is not None else summary_stats(result, scheduler_stats)
    lines = [
        "Simulation results",
        f"  Requests finished:        {s['requests_finished']}" + (f" ({s['requests_unfinished']} unfinished)"
                                                                   if s["requests_unfinished"] else ""),
        f"  Simulated time:           {s['simulated_ns'] / NS_PER_S if s['simulated_ns'] else 0.0:.3f} s "
        f"({s['simulated_ns']} ns)",
        f"  Iterations (batches):     {s['iterations']}",
        f"  Input tokens:             {s['input_tokens']}",
        f"  Generated tokens:         {s['generated_tokens']}",
        f"  Request throughput:       {s['request_throughput_per_s']:.2f} req/s",
        f"  Prompt throughput:        {s['prompt_throughput_tok_per_s']:.1f} tok/s (computed prompt tokens)",
        f"  Generation throughput:    {s['gen_throughput_tok_per_s']:.1f} tok/s",
    ]
    if s["preemptions"]:
        lines.append(f"  Preemptions:              {s['preemptions']} ({s['recomputed_tokens']} tokens recomputed)")
    asked, hit = s["prefix_requested_tokens"], s["prefix_hit_tokens"]
    if asked:
        lines.append(f"  Prefix cache hits:        {hit} / {asked} prompt tokens ({100 * hit / asked:.2f} %)")
    if "pd_kv_transfers" in s:
        lines += [
            f"  Prefill pool:             {s['pd_prefill_instances']} instance(s), {s['pd_requests_prefilled']} "
            f"requests prefilled, busy {s['pd_prefill_busy_pct']:.1f} %",
            f"  Decode pool:              {s['pd_decode_instances']} instance(s), {s['pd_requests_decoded']} "
            f"requests decoded, busy {s['pd_decode_busy_pct']:.1f} %",
            f"  KV transfers:             {s['pd_kv_transfers']} ({s['pd_kv_bytes'] / GIB:.3f} GiB), mean "
            f"{s['pd_transfer_mean_ms']:.3f} ms"]
    lines += [f"  TTFT (ms):  {_fmt_ms(s, 'ttft')}", f"  TPOT (ms):  {_fmt_ms(s, 'tpot')}",
              f"  ITL (ms):   {_fmt_ms(s, 'itl')}"]
    return "\n".join(lines)
