"""Speed benchmark: wall time, simulated requests/s, iterations/s and peak RSS per scenario.

Each scenario runs in a fresh process (start-up included, as a user would run it). Results are
compared with the figures stored from the previous run in bench_results.json beside this script.
Not a test: run it by hand, `python scripts/bench.py [--only NAME] [--save]`.
"""
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import click

ROOT = Path(__file__).resolve().parents[1]
STORED = Path(__file__).with_name("bench_results.json")
SHAREGPT = "workloads/sharegpt-llama-3.1-8b-300-sps10.jsonl"

# name -> (description, cluster config, extra args, synthetic (n, rate) or None)
SCENARIOS = {
    "ref300": ("reference benchmark: 300 ShareGPT reqs, RTXPRO6000 Llama-3.1-8B tp1",
               "configs/cluster/single_node_single_instance.json", ["--dtype", "bfloat16"], None),
    "pp2_3000": ("3,000 ShareGPT-length reqs, Poisson 10/s, pp=2",
                 "configs/cluster/single_node_pp_instance.json", ["--dtype", "bfloat16"], (3000, 10.0)),
    "pp4_10k": ("10,000 ShareGPT-length reqs, Poisson 10/s, pp=4 (Llama-3.1-8B bundle; 70B needs the roofline model)",
                "configs/cluster/single_node_pp4_instance.json", ["--dtype", "bfloat16"], (10000, 10.0)),
}


def _write_workload(n: int, rate: float, path: Path) -> None:
    sys.path.insert(0, str(ROOT))
    from llmsim.workload import load_workload, resample_workload

    src = load_workload(ROOT / SHAREGPT, with_token_ids=False)
    with open(path, "w") as f:
        for r in resample_workload(src, n, rate, seed=0):
            f.write(json.dumps({"input_toks": r.prompt_len, "output_toks": r.output_len,
                                "arrival_time_ns": r.arrival_ns}) + "\n")


def _run(name: str, tmp: Path) -> dict:
    desc, cfg, extra, synth = SCENARIOS[name]
    dataset = ROOT / SHAREGPT
    if synth:
        dataset = tmp / f"{name}.jsonl"
        _write_workload(*synth, dataset)
    out = tmp / f"{name}.csv"
    cmd = [sys.executable, "-m", "llmsim", "--cluster-config", cfg, "--dataset", str(dataset), "--output", str(out),
           "--log-interval", "0"] + extra
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode:
        raise SystemExit(f"{name}: llmsim failed: {proc.stderr.strip()}")
    rss_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # peak over children so far
    reqs = sum(1 for _ in open(out)) - 1
    iters = int(next(l for l in proc.stdout.splitlines() if "Iterations" in l).split()[-1])
    return {"wall_s": round(wall, 3), "requests": reqs, "req_per_s": round(reqs / wall, 1),
            "iter_per_s": round(iters / wall, 1), "peak_rss_mb": round(rss_mb, 1)}


@click.command()
@click.option("--only", multiple=True, type=click.Choice(list(SCENARIOS)))
@click.option("--save", is_flag=True, help="Store these figures as the new baseline.")
def main(only, save):
    stored = json.loads(STORED.read_text()) if STORED.exists() else {}
    prev = stored.get("results", {})
    results = {}
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    print(f"{'scenario':<10} {'wall s':>8} {'reqs':>7} {'req/s':>8} {'iter/s':>9} {'peak MB':>8}  vs stored")
    with tempfile.TemporaryDirectory() as d:
        for name in only or SCENARIOS:
            r = results[name] = _run(name, Path(d))
            old = prev.get(name)
            cmp = f"{(r['wall_s'] / old['wall_s'] - 1) * 100:+.0f} % wall" if old else "-"
            print(f"{name:<10} {r['wall_s']:>8.2f} {r['requests']:>7} {r['req_per_s']:>8.0f} {r['iter_per_s']:>9.0f} "
                  f"{r['peak_rss_mb']:>8.0f}  {cmp}")
    print("peak MB is the largest child process so far (scenarios run in order).")
    if save:
        STORED.write_text(json.dumps({"machine": f"{platform.machine()} x{os.cpu_count()}", "results": results},
                                     indent=1) + "\n")


if __name__ == "__main__":
    main()
