"""`llmsim validate`: simulate a recorded vLLM run and compare TTFT, TPOT and latency.

The vLLM side is read from a run folder (`meta.json` engine settings, `requests.jsonl` per-request
timestamps, `timeseries.csv` 1 s ticks). Definitions, both sides, in ms: TTFT = first token -
queued (sim: - arrival); TPOT = (last - first) / (output - 1) for output > 1; latency = last -
queued. Engine settings recorded in meta.json apply unless given on the command line.

A run folder (configs/validation/README.md): `meta.json` and `requests.jsonl` (and optionally
`timeseries.csv`), either in the folder or in its `vllm/` subfolder; the cluster config beside
them as `cluster.json`, or the reference's `config.json`.
"""
import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path

from .errors import InputError
from .metrics import finished_requests, request_metrics
from .paths import resolve_input
from .stats import STATS, diff_pct, summarize

METRICS = ("TTFT", "TPOT", "latency")


@dataclass
class VllmRun:
    root: Path
    vdir: Path  # where meta.json is: root, or root/vllm
    meta: dict
    requests: list[dict]
    timeseries: list[dict]


def load_vllm_run(path: str | Path) -> VllmRun:
    root = Path(resolve_input(str(path)))  # a shipped run (configs/validation/...) from any folder
    vdir = root / "vllm" if (root / "vllm" / "meta.json").is_file() else root
    meta_path, req_path = vdir / "meta.json", vdir / "requests.jsonl"
    for p in (meta_path, req_path):
        if not p.is_file():
            raise InputError(f"{p}: not found (a vLLM run folder holds meta.json and requests.jsonl)")
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError as e:
        raise InputError(f"{meta_path}: line {e.lineno}: invalid JSON ({e.msg})") from None
    reqs = []
    with open(req_path) as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                r = json.loads(line)
                reqs.append({k: r[k] for k in ("output_toks", "queued_ts", "first_token_ts", "last_token_ts")})
            except json.JSONDecodeError as e:
                raise InputError(f"{req_path}: line {lineno}: invalid JSON ({e.msg})") from None
            except (KeyError, TypeError) as e:
                raise InputError(f"{req_path}: line {lineno}: expected an object with output_toks, queued_ts, "
                                 f"first_token_ts, last_token_ts ({e})") from None
    ts_path = vdir / "timeseries.csv"
    ts = []
    if ts_path.is_file():
        with open(ts_path) as f:
            ts = list(csv.DictReader(f))
    return VllmRun(root, vdir, meta, reqs, ts)


def settings_from_meta(meta: dict) -> dict:
    """Engine settings that vLLM recorded, as llmsim option names."""
    kw = meta.get("engine_kwargs", {})
    rc = meta.get("resolved_config", {})
    sched, cache = rc.get("scheduler_config", {}), rc.get("cache_config", {})
    kv = meta.get("kv_cache", {})
    out = {
        "max_num_seqs": sched.get("max_num_seqs", kw.get("max_num_seqs")),
        "max_num_batched_tokens": sched.get("max_num_batched_tokens", kw.get("max_num_batched_tokens")),
        "max_model_len": kw.get("max_model_len", rc.get("model_config", {}).get("max_model_len")),
        "block_size": cache.get("block_size", kv.get("block_size")),
        "enable_prefix_caching": cache.get("enable_prefix_caching", kv.get("enable_prefix_caching")),
        "enable_chunked_prefill": sched.get("enable_chunked_prefill"),
        "long_prefill_token_threshold": sched.get("long_prefill_token_threshold"),
        "reserve_full_isl": sched.get("scheduler_reserve_full_isl"),
        "npu_memory_utilization": cache.get("gpu_memory_utilization", kv.get("gpu_memory_utilization")),
        "num_gpu_blocks": kv.get("num_gpu_blocks"),
        "dtype": {"bfloat16": "bfloat16", "float16": "float16", "float32": "float32"}.get(
            str(kw.get("dtype", "")).replace("torch.", "")),
    }
    return {k: v for k, v in out.items() if v is not None}


def find_cluster_config(run_: VllmRun) -> Path | None:
    """The run's cluster config: cluster.json, or (the reference's example layout) a config.json
    that is a cluster config (it has `nodes`), beside the run or in its vllm/ folder."""
    for folder in dict.fromkeys((run_.root, run_.vdir)):
        if (folder / "cluster.json").is_file():
            return folder / "cluster.json"
        cfg = folder / "config.json"
        if cfg.is_file():
            try:
                if "nodes" in json.loads(cfg.read_text()):
                    return cfg
            except (ValueError, UnicodeDecodeError):
                pass
    return None


def find_dataset(run_: VllmRun, resolve) -> Path | None:
    """meta.json's dataset_path: as recorded (from here), beside the run, or a shipped workload
    (resolve: llmsim.paths.resolve_input) by its path or file name."""
    ds = run_.meta.get("dataset_path")
    if not ds:
        return None
    name = Path(ds).name
    for cand in (Path(ds), run_.root / ds, run_.root / name, run_.vdir / name, Path(resolve(ds)),
                 Path(resolve(f"workloads/{name}"))):
        if cand.is_file():
            return cand
    return None


def vllm_metrics(run_: VllmRun) -> dict[str, list[float]]:
    ttft, tpot, lat = [], [], []
    for r in run_.requests:
        ttft.append((r["first_token_ts"] - r["queued_ts"]) * 1e3)
        lat.append((r["last_token_ts"] - r["queued_ts"]) * 1e3)
        if r["output_toks"] > 1:
            tpot.append((r["last_token_ts"] - r["first_token_ts"]) / (r["output_toks"] - 1) * 1e3)
    return {"TTFT": ttft, "TPOT": tpot, "latency": lat}


def sim_metrics(result) -> dict[str, list[float]]:
    ms = [request_metrics(r) for r in finished_requests(result)]
    return {"TTFT": [m.ttft_ns / 1e6 for m in ms],
            "TPOT": [m.decode_ns / m.decode_steps / 1e6 for m in ms if m.decode_steps > 0],
            "latency": [m.latency_ns / 1e6 for m in ms]}


def comparison(vllm: dict, sim: dict) -> list[tuple]:
    rows = []
    for m in METRICS:
        a, b = summarize(vllm[m]), summarize(sim[m])
        rows += [(m, s, a[s], b[s], diff_pct(b[s], a[s])) for s in STATS]
    return rows


def table_text(rows) -> str:
    lines = [f"{'metric':<8} {'stat':<7} {'vLLM ms':>12} {'llmsim ms':>12} {'diff %':>8}"]
    for m, s, a, b, d in rows:
        lines.append(f"{m:<8} {s:<7} {a:>12.1f} {b:>12.1f} {d:>+8.2f}")
    return "\n".join(lines)


def table_csv(rows) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["metric", "stat", "vllm_ms", "llmsim_ms", "diff_pct"])
    for m, s, a, b, d in rows:
        w.writerow([m, s, f"{a:.3f}", f"{b:.3f}", f"{d:.3f}"])
    return buf.getvalue()


def _png(fig) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, metadata={"Software": None})  # no version stamp: reproducible bytes
    plt.close(fig)
    return buf.getvalue()


PLOT_NAMES = ("latency_cdf.png", "throughput.png")


def plots(vllm: dict, sim: dict, vllm_ts: list[dict], heartbeats, interval_s: float) -> dict[str, bytes]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = {}
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for ax, m in zip(axes, METRICS):
        for label, vals in (("vLLM", vllm[m]), ("llmsim", sim[m])):
            xs = sorted(vals)
            ax.plot(xs, [(i + 1) / len(xs) for i in range(len(xs))], label=label)
        ax.set_xlabel(f"{m} (ms)")
        ax.set_ylabel("fraction of requests")
        ax.grid(alpha=0.3)
        # TTFT and latency reach tens of thousands of ms: few ticks, tilted, so the labels never overlap
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(nbins=5))
        ax.tick_params(axis="x", labelrotation=30)
    axes[0].legend()
    fig.tight_layout()
    out[PLOT_NAMES[0]] = _png(fig)
    fig, axes = plt.subplots(1, 2, figsize=(12, 3.8))
    for ax, (key, attr, title) in zip(axes, (("prompt_throughput", "prompt_tokens", "prompt tokens/s"),
                                             ("gen_throughput", "gen_tokens", "generated tokens/s"))):
        ax.plot([float(r["t"]) for r in vllm_ts], [float(r[key]) for r in vllm_ts], label="vLLM")
        ax.plot([hb.t_ns / 1e9 for hb in heartbeats], [getattr(hb, attr) / interval_s for hb in heartbeats],
                label="llmsim")
        ax.set_xlabel("time (s)")
        ax.set_ylabel(title)
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.tight_layout()
    out[PLOT_NAMES[1]] = _png(fig)
    return out
