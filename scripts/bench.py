"""Speed benchmark: wall time, simulated requests/s, iterations/s and peak memory per scenario.

Each scenario runs `python -m llmsim` in a fresh process (start-up and output writing included,
as a user would run it) and its peak RSS is that process's own (os.wait4). Results are compared
with the figures stored from the previous run in bench_results.json beside this script, so
regressions show. Not a test: run it by hand,

    python scripts/bench.py [--only NAME ...] [--plain] [--save]

--plain runs the plain scheduler (--no-fast-path) instead, for the fast path's speed-up.
"""
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import click

ROOT = Path(__file__).resolve().parents[1]
STORED = Path(__file__).with_name("bench_results.json")
SHAREGPT = "workloads/sharegpt-llama-3.1-8b-300-sps10.jsonl"

# name -> (description, cluster config, extra args, synthetic (n, rate) or None, target wall s or req/s)
SCENARIOS = {
    "ref300": ("the reference's benchmark: 300 ShareGPT reqs, RTXPRO6000 Llama-3.1-8B tp1 (prefix caching)",
               "configs/cluster/single_node_single_instance.json", ["--dtype", "bfloat16", "--kv-capacity", "reference"],
               None, ("wall_s", 2.0)),
    "pp2_3000": ("3,000 ShareGPT-length reqs, Poisson 10/s, Llama-3.1-8B pp=2",
                 "configs/cluster/single_node_pp_instance.json", ["--dtype", "bfloat16"], (3000, 10.0),
                 ("req_per_s", 2500)),
    "pp2_3000_prefix": ("as pp2_3000 with the source's token ids kept and prefix caching on (repeats hit)",
                        "configs/cluster/single_node_pp_instance.json", ["--dtype", "bfloat16"], (3000, 10.0, True),
                        None),
    "pp4_10k": ("10,000 ShareGPT-length reqs, Poisson 10/s, Llama-3.1-8B pp=4",
                "configs/cluster/single_node_pp4_instance.json", ["--dtype", "bfloat16"], (10000, 10.0), None),
    "pp8_70b_10k": ("10,000 reqs drawn as below: with pp8_70b_100k, memory growth per 10k requests",
                    "configs/cluster/h100_llama70b_pp8.json", ["--dtype", "bfloat16"], (10000, 10.0), None),
    "pp8_70b_100k": ("100,000 ShareGPT-length reqs, Poisson 10/s, Llama-3.1-70B on 8 x H100 pp=8 (roofline)",
                     "configs/cluster/h100_llama70b_pp8.json", ["--dtype", "bfloat16"], (100000, 10.0),
                     ("wall_s", 60.0)),
}


def _write_workload(n: int, rate: float, path: Path, token_ids: bool = False) -> None:
    sys.path.insert(0, str(ROOT))
    from llmsim.workload import load_workload, resample_workload

    src = load_workload(ROOT / SHAREGPT, with_token_ids=token_ids)
    with open(path, "w") as f:
        for r in resample_workload(src, n, rate, seed=0, keep_token_ids=token_ids):
            line = {"input_toks": r.prompt_len, "output_toks": r.output_len, "arrival_time_ns": r.arrival_ns}
            if r.token_ids is not None:
                line["input_tok_ids"] = list(r.token_ids[:r.prompt_len])
                line["output_tok_ids"] = list(r.token_ids[r.prompt_len:])
            f.write(json.dumps(line) + "\n")


def _run(name: str, tmp: Path, plain: bool) -> dict:
    desc, cfg, extra, synth, _ = SCENARIOS[name]
    dataset = ROOT / SHAREGPT
    if synth:
        dataset = tmp / f"{name}.jsonl"
        _write_workload(synth[0], synth[1], dataset, *synth[2:])
    out = tmp / f"{name}.csv"
    cmd = [sys.executable, "-m", "llmsim", "--cluster-config", cfg, "--dataset", str(dataset), "--output", str(out),
           "--log-interval", "0"] + extra + (["--no-fast-path"] if plain else [])
    log = tmp / f"{name}.log"
    with open(log, "w") as f:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
    text = log.read_text()
    if os.waitstatus_to_exitcode(status):
        raise SystemExit(f"{name}: llmsim failed:\n{text}")
    reqs = sum(1 for _ in open(out)) - 1
    iters = int(next(l for l in text.splitlines() if "Iterations" in l).split()[-1])
    rss_mb = usage.ru_maxrss / 1024  # KiB on Linux
    return {"wall_s": round(wall, 3), "requests": reqs, "req_per_s": round(reqs / wall, 1),
            "iter_per_s": round(iters / wall, 1), "peak_rss_mb": round(rss_mb, 1),
            "mb_per_10k_reqs": round(rss_mb / reqs * 10_000, 1)}


def _target(name: str, r: dict) -> str:
    target = SCENARIOS[name][4]
    if target is None:
        return ""
    key, value = target
    met = r[key] <= value if key == "wall_s" else r[key] >= value
    return f"{'met' if met else 'NOT met'} ({'<=' if key == 'wall_s' else '>='} {value:g}{' s' if key == 'wall_s' else ' req/s'})"


def _machine() -> str:
    model = ""
    try:
        model = next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{model or platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"


@click.command()
@click.option("--only", multiple=True, type=click.Choice(list(SCENARIOS)))
@click.option("--plain", is_flag=True, help="Run the plain scheduler (--no-fast-path).")
@click.option("--save", is_flag=True, help="Store these figures as the new baseline.")
def main(only, plain, save):
    stored = json.loads(STORED.read_text()) if STORED.exists() else {}
    prev = stored.get("results", {})
    results = {}
    print(f"machine: {_machine()}" + ("  [plain path]" if plain else ""))
    print(f"{'scenario':<13} {'wall s':>8} {'reqs':>7} {'req/s':>8} {'iter/s':>8} {'peak MB':>8} {'MB/10k':>7}  "
          f"{'vs stored':<12} target")
    with tempfile.TemporaryDirectory() as d:
        for name in only or SCENARIOS:
            r = results[name] = _run(name, Path(d), plain)
            old = prev.get(name)
            cmp = f"{(r['wall_s'] / old['wall_s'] - 1) * 100:+.0f} % wall" if old else "-"
            print(f"{name:<13} {r['wall_s']:>8.2f} {r['requests']:>7} {r['req_per_s']:>8.0f} {r['iter_per_s']:>8.0f} "
                  f"{r['peak_rss_mb']:>8.0f} {r['mb_per_10k_reqs']:>7.1f}  {cmp:<12} {_target(name, r)}", flush=True)
    if "pp8_70b_10k" in results and "pp8_70b_100k" in results:
        small, big = results["pp8_70b_10k"], results["pp8_70b_100k"]
        slope = (big["peak_rss_mb"] - small["peak_rss_mb"]) / ((big["requests"] - small["requests"]) / 10_000)
        print(f"memory growth, pp8_70b_10k -> pp8_70b_100k: {slope:.1f} MB per 10k requests")
    if save and not plain:
        merged = {**prev, **results}
        STORED.write_text(json.dumps({"machine": _machine(), "results": merged}, indent=1) + "\n")


if __name__ == "__main__":
    main()
