"""Differential fuzzing of the fast path: random small workloads and options, each run with and
without --no-fast-path; any difference in the per-request CSV, iteration log, printed output or
exit code is kept (workload + command) under --keep. Not a test (it takes minutes); run it after
touching decode_lanes.py, kv_cache.py or the scheduler:

    python scripts/fuzz_fast_path.py --runs 300 [--seed 0] [--keep fuzz-failures]
"""
import json
import os
import random
import shutil
import sys
import tempfile
from pathlib import Path

import click
from click.testing import CliRunner

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from llmsim.cli import main as llmsim_main  # noqa: E402

CONFIGS = ["single_node_single_instance", "single_node_pp_instance", "single_node_pp4_instance",
           "single_node_tp_pp_instance", "single_node_multi_instance", "single_node_tp2_instance",
           "single_node_pd_instance", "rtxpro6000_qwen3_30b_a3b_instance",
           "rtxpro6000_qwen3_30b_a3b_tp2_ep2_instance", "rtxpro6000_qwen3_30b_a3b_dp2_ep2"]


def _workload(rng: random.Random, path: Path, bs: int) -> None:
    """Random lengths and gaps; shared prefixes, families of identical requests, partial ids, sessions."""
    prefixes = [[rng.randint(0, 50) for _ in range(rng.choice([bs, 2 * bs, 3 * bs + 1, 17, 40]))] for _ in range(3)]
    ids_mode = rng.choice(["none", "all", "half", "family"])
    family, t, lines = None, 0, []
    for k in range(rng.randint(1, 120)):
        t += rng.choice([0, 0, rng.randint(0, 2_000_000), rng.randint(0, 50_000_000), rng.randint(0, 300_000_000)])
        p = rng.choice([1, 2, bs, 2 * bs, 3 * bs, rng.randint(1, 64), rng.randint(1, 300)])
        o = rng.choice([1, 1, 2, bs, bs + 1, rng.randint(1, 40), rng.randint(1, 150)])
        obj = {"input_toks": p, "output_toks": o, "arrival_time_ns": t}
        if ids_mode != "none" and (ids_mode != "half" or rng.random() < 0.5):
            if ids_mode == "family" and rng.random() < 0.6:
                if family is None or rng.random() < 0.3:
                    family = (p, o, [rng.randint(0, 3) for _ in range(p)], [rng.randint(0, 3) for _ in range(o)])
                obj.update(input_toks=family[0], output_toks=family[1], input_tok_ids=family[2],
                           output_tok_ids=family[3])
            else:
                obj["input_tok_ids"] = ((rng.choice(prefixes) if rng.random() < 0.6 else [])
                                        + [rng.randint(0, 50) for _ in range(p)])[:p]
                if rng.random() < 0.8:
                    obj["output_tok_ids"] = [rng.randint(0, 50) for _ in range(rng.randint(0, o))]
        if rng.random() < 0.08:
            calls = [{"input_toks": rng.randint(1, 80), "output_toks": rng.randint(1, 20),
                      "tool_duration_ns": rng.choice([0, 0, rng.randint(0, 50_000_000)])}
                     for _ in range(rng.randint(1, 4))]
            obj = {"session_id": f"s{k}", "arrival_time_ns": t, "sub_requests": calls}
        lines.append(obj)
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))


def _options(rng: random.Random) -> tuple[int, list[str]]:
    bs = rng.choice([1, 2, 3, 4, 16, 16])
    opts = ["--cluster-config", f"configs/cluster/{rng.choice(CONFIGS)}.json", "--dtype", "bfloat16",
            "--block-size", bs, "--max-num-seqs", rng.choice([0, 1, 2, 3, 5, 128, 128]),
            "--max-num-batched-tokens", rng.choice([0, 8, 16, 33, 64, 256, 2048, 2048]),
            "--long-prefill-token-threshold", rng.choice([0, 0, 0, 1, 7, 40]),
            "--num-gpu-blocks", rng.choice([0, 0, 0, 20, 40, 80, 200]) * (16 // bs),
            "--request-routing-policy", rng.choice(["LOAD", "RR", "RAND"]), "--log-interval", "0.5"]
    for flag, p in (("--no-enable-prefix-caching", 0.3), ("--no-enable-chunked-prefill", 0.25),
                    ("--no-reserve-full-isl", 0.2)):
        if rng.random() < p:
            opts.append(flag)
    # MoE models (dense ones ignore it): a random policy draws once per batch on both paths
    opts += ["--moe-routing", rng.choice(["expected", "balanced", "uniform", "skewed"]),
             "--moe-seed", rng.randint(0, 9)]
    return bs, [str(x) for x in opts]


def _run(args: list[str], folder: Path, tag: str):
    out, it = folder / f"{tag}.csv", folder / f"{tag}.iter.csv"
    res = CliRunner().invoke(llmsim_main, args + ["--output", str(out), "--iteration-log", str(it)])
    crash = res.exception if res.exception and not isinstance(res.exception, SystemExit) else None
    read = lambda p: p.read_bytes() if p.exists() else None
    output = res.output.replace(tag, "<tag>")  # the summary names the files it wrote
    return res.exit_code, output, read(out), read(it), repr(crash) if crash else None


@click.command()
@click.option("--runs", default=200, show_default=True)
@click.option("--seed", default=0, show_default=True)
@click.option("--keep", default="fuzz-failures", show_default=True, help="Folder for failing cases.")
def main(runs, seed, keep):
    os.chdir(ROOT)
    failures = 0
    with tempfile.TemporaryDirectory() as tmp:
        for case in range(seed, seed + runs):
            rng = random.Random(case)
            bs, opts = _options(rng)
            folder = Path(tmp) / str(case)
            folder.mkdir()
            _workload(rng, folder / "w.jsonl", bs)
            args = opts + ["--dataset", str(folder / "w.jsonl")]
            fast, plain = _run(args, folder, "fast"), _run(args + ["--no-fast-path"], folder, "plain")
            what = [name for name, a, b in zip(("exit code", "output", "csv", "iteration log", "crash"), fast, plain)
                    if a != b] + (["crash"] if fast[4] or plain[4] else [])
            if what:
                failures += 1
                kept = Path(keep) / str(case)
                shutil.copytree(folder, kept, dirs_exist_ok=True)
                (kept / "args.txt").write_text(" ".join(args).replace(str(folder), str(kept)) + "\n")
                print(f"case {case}: differs in {', '.join(dict.fromkeys(what))}; kept in {kept}", flush=True)
    print(f"{runs} cases, {failures} differing")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
