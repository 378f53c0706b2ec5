"""`llmsim workload generate`: reproducible, and its samples follow the requested distributions
(tolerances of five standard errors for the sample size)."""
import json
import math
import statistics

import numpy as np
import pytest

from conftest import ROOT, read_rows, run_cli
from llmsim.workload import load_workload

N = 20_000


def _gen(tmp_path, *args, name="w.jsonl"):
    out = tmp_path / name
    res = run_cli("workload", "generate", "--output", out, *args)
    assert res.exit_code == 0, res.output
    return out


def _lines(path):
    return [json.loads(ln) for ln in path.read_text().splitlines()]


def test_same_seed_same_bytes_other_seed_other_file(tmp_path):
    args = ["--num-requests", 500, "--arrivals", "gamma", "--cv", 2, "--shared-prefix", 16, "--turns", 2]
    a = _gen(tmp_path, *args, "--seed", 5, name="a")
    b = _gen(tmp_path, *args, "--seed", 5, name="b")
    c = _gen(tmp_path, *args, "--seed", 6, name="c")
    assert a.read_bytes() == b.read_bytes() != c.read_bytes()


@pytest.mark.parametrize("arrivals, cv", [("poisson", 1.0), ("gamma", 2.0), ("gamma", 0.5)])
def test_arrival_rate_and_burstiness(tmp_path, arrivals, cv):
    rate = 10.0
    extra = ["--cv", cv] if arrivals == "gamma" else []
    t = [o["arrival_time_ns"] for o in _lines(_gen(tmp_path, "--num-requests", N, "--rate", rate,
                                                   "--arrivals", arrivals, *extra))]
    gaps = np.diff([0] + t) / 1e9
    mean = 1 / rate
    assert abs(gaps.mean() - mean) <= 5 * cv * mean / math.sqrt(N)
    # Var(s^2) ~ sigma^4 (2 + excess kurtosis) / n; a gamma's excess kurtosis is 6 cv^2
    rel_se_cv = 0.5 * math.sqrt((2 + 6 * cv * cv) / N)
    assert abs(gaps.std(ddof=1) / gaps.mean() - cv) <= 5 * rel_se_cv * cv + 5 / math.sqrt(N)


def _lognormal_kurtosis(s2):
    return math.exp(4 * s2) + 2 * math.exp(3 * s2) + 3 * math.exp(2 * s2) - 6


@pytest.mark.parametrize("spec, mean, std, kurtosis", [
    ("uniform:32:512", 272, math.sqrt((481 ** 2 - 1) / 12), -1.2),
    ("normal:256:64", 256, 64, 0.0),
    ("lognormal:512:0.8", 512, 512 * math.sqrt(math.expm1(0.64)), _lognormal_kurtosis(0.64)),
])
def test_lengths_follow_the_distribution(tmp_path, spec, mean, std, kurtosis):
    objs = _lines(_gen(tmp_path, "--num-requests", N, "--input-len", spec, "--output-len", "fixed:7"))
    x = [o["input_toks"] for o in objs]
    assert abs(statistics.mean(x) - mean) <= 5 * std / math.sqrt(N) + 0.5  # + rounding to whole tokens
    # the sample std's relative standard error: sqrt((2 + excess kurtosis) / n) / 2
    assert abs(statistics.stdev(x) - std) <= 5 * 0.5 * math.sqrt((2 + kurtosis) / N) * std + 0.5
    assert {o["output_toks"] for o in objs} == {7}
    if spec.startswith("uniform"):
        assert min(x) == 32 and max(x) == 512


def test_resampled_lengths_come_from_the_trace(tmp_path):
    src = ROOT / "workloads/sharegpt-llama-3.1-8b-300-sps10.jsonl"
    pairs = {(r.prompt_len, r.output_len) for r in load_workload(str(src), 0)}
    objs = _lines(_gen(tmp_path, "--num-requests", 2000, "--from-trace", src))
    got = {(o["input_toks"], o["output_toks"]) for o in objs}
    assert got <= pairs and len(got) > 200  # 2000 draws of ~300 pairs reach nearly all of them


def test_shared_prefix_sessions_run_and_hit_the_prefix_cache(tmp_path):
    """50 requests 1 s apart, 100-token prompts opening with one of 2 shared 64-token prefixes
    (4 blocks of 16): the first of each group misses, every later one hits 64 tokens."""
    w = _gen(tmp_path, "--num-requests", 50, "--rate", 1, "--arrivals", "gamma", "--cv", 0, "--input-len",
             "fixed:100", "--output-len", "fixed:4", "--shared-prefix", 64, "--prefix-groups", 2)
    objs = _lines(w)
    groups = {tuple(o["input_tok_ids"][:64]) for o in objs}
    assert len(groups) == 2 and all(len(o["input_tok_ids"]) == 100 for o in objs)
    out = tmp_path / "o.csv"
    res = run_cli("--cluster-config", "configs/cluster/single_node_single_instance.json", "--dataset", w,
                  "--output", out, "--quiet")
    assert res.exit_code == 0, res.output
    s = json.loads((tmp_path / "o.csv.summary.json").read_text())
    assert s["prefix_hit_tokens"] == (50 - 2) * 64 and len(read_rows(out)) == 50


def test_sessions_have_their_turns_and_tool_time(tmp_path):
    objs = _lines(_gen(tmp_path, "--num-requests", 20, "--turns", 3, "--tool-ms", 250))
    assert all(len(o["sub_requests"]) == 3 and o["sub_requests"][0]["tool_duration_ns"] == 250_000_000
               for o in objs)
    out = tmp_path / "o.csv"
    res = run_cli("--cluster-config", "configs/cluster/single_node_single_instance.json", "--dataset",
                  tmp_path / "w.jsonl", "--output", out, "--quiet")
    assert res.exit_code == 0, res.output
    assert len(read_rows(out)) == 60  # every call of every session ran


@pytest.mark.parametrize("args, message", [
    (["--input-len", "gauss:1:2"], "--input-len 'gauss:1:2': expected fixed:N"),
    (["--output-len", "uniform:9:3"], "out of range"),
    (["--cv", "2"], "--cv applies to --arrivals gamma"),
    (["--rate", "nan"], "--rate"),
    (["--from-trace", "/nonexistent.jsonl"], "/nonexistent.jsonl"),
])
def test_bad_options_are_one_line(tmp_path, args, message):
    res = run_cli("workload", "generate", "--output", tmp_path / "w.jsonl", *args)
    assert res.exit_code == 2
    assert res.output.startswith("error: ") and message in res.output and len(res.output.splitlines()) == 1
    assert not (tmp_path / "w.jsonl").exists()
