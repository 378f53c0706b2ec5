"""Prefill/decode disaggregation (pd_type; llmsim/disagg.py, docs/disaggregation.md)."""
import csv
import io
import json

import pytest

from conftest import run_cli
from llmsim.api import run
from llmsim.backends.network import Link
from llmsim.config.cluster import cluster_from_dict, load_cluster_config
from llmsim.disagg import kv_transfer_ns, transfer_link
from llmsim.errors import InputError

SHAREGPT = "workloads/sharegpt-llama-3.1-8b-300-sps10.jsonl"
PD_EXAMPLE = "configs/cluster/h100x16_llama70b_pd_1p1d.json"
ENGINE = {"dtype": "bfloat16"}


def _inst(pd, util=None, **kw):
    d = {"model_name": "meta-llama/Llama-3.1-8B", "hardware": "RTXPRO6000",
         "npu_mem": {"mem_size": 96, "mem_bw": 1597, "mem_latency": 0}, "pd_type": pd, "tp_size": 1, **kw}
    if util:
        d["npu_mem"]["mem_util"] = util
    return d


def _cluster(*instances):
    return {"num_nodes": 1, "link_bw": [16, 25], "link_latency": [20000, 5000],
            "nodes": [{"num_instances": len(instances), "cpu_mem": {"mem_size": 512, "mem_bw": 256, "mem_latency": 0},
                       "instances": list(instances)}]}


def test_transfer_time_by_hand():
    # 100 tokens x 40,960 B (Llama-3.1-70B at tp=8: 80 layers x 1 KV head x 128 x 2 (K, V) x 2 B per rank)
    # = 4,096,000 B over 50 GB/s read as 50 x 2^30 B/s = 53.6870912 B/ns: 76,293.945 ns, plus 2,000 ns
    assert kv_transfer_ns(Link(50.0, 2000.0), 100, 40960) == 78293
    assert kv_transfer_ns(Link(25.0, 5000.0), 0, 131072) == 5000


def test_transfer_link_picks_the_fabric():
    c = load_cluster_config(PD_EXAMPLE)
    p, d = c.instances
    assert (p.pd_type, d.pd_type, p.node, d.node) == ("prefill", "decode", 0, 1)
    assert transfer_link(c, p, d) == Link(50.0, 2 * 1000.0)  # inter-node Switch: two hops of 1 us
    raw = json.loads(open(PD_EXAMPLE).read())
    half = dict(raw["nodes"][0]["instances"][0], num_npus=4, tp_size=4)
    raw["nodes"][0]["instances"] = [half, dict(half, pd_type="decode")]
    raw["nodes"][0]["num_instances"] = 2
    c2 = cluster_from_dict(raw)
    assert transfer_link(c2, *c2.instances[:2]) == Link(450.0, 2 * 200.0)  # one node: NVSwitch
    assert transfer_link(c2, c2.instances[0], c2.instances[2]) == Link(50.0, 2000.0)
    flat = cluster_from_dict(_cluster(_inst("prefill"), _inst("decode")))
    assert transfer_link(flat, *flat.instances) == Link(25.0, 5000.0)  # the instance dimension (1)


def test_one_request_ttft_is_prefill_transfer_and_one_step():
    res = run(_cluster(_inst("prefill"), _inst("decode")), [{"input_toks": 1000, "output_toks": 5,
                                                            "arrival_time_ns": 0}], ENGINE, iterations=True)
    req = res.raw.finished[1][0]
    assert req.instance == 1 and req.prefill_instance == 0 and not res.raw.finished[0]
    log = res.raw.iteration_log
    prefill = [r for r in log if r.instance == 0]
    decode = [r for r in log if r.instance == 1]
    assert len(prefill) == 1 and prefill[0].prefill_tokens == 1000
    # Llama-3.1-8B: 32 layers x 8 KV heads x 128 x 2 x 2 B = 131,072 B per token, over 25 GB/s + 5 us
    transfer = int(5000 + 1000 * 131072 / (25 * 2**30 / 1e9))
    assert res.summary["pd_kv_bytes"][0] == 1000 * 131072
    assert res.summary["pd_transfer_mean_ms"][0] == pytest.approx(transfer / 1e6)
    # the decode instance computes the last prompt token once the KV is in; that step's token is the first
    assert decode[0].start_ns == prefill[0].end_ns + transfer
    # (a one-token step: the batch counts it as a decode token, and it costs as much)
    assert decode[0].decode_tokens == 1 and decode[0].end_ns == req.first_token_ns
    assert len(decode) == 5  # the first token and four decode steps


def test_every_request_prefilled_then_decoded(tmp_path):
    cluster = _cluster(_inst("prefill"), _inst("decode"), _inst("prefill"), _inst("decode"))
    res = run(cluster, SHAREGPT, ENGINE, num_reqs=80, routing_policy="RR")
    reqs = [r for done in res.raw.finished for r in done]
    assert len(reqs) == 80 and not res.raw.unfinished
    assert {r.instance for r in reqs} == {1, 3} and {r.prefill_instance for r in reqs} == {0, 2}
    assert set(res.requests["instance"]) == {1, 3} and set(res.requests["prefill_instance"]) == {0, 2}
    s = res.summary.iloc[0]
    assert s["pd_requests_prefilled"] == s["pd_requests_decoded"] == s["pd_kv_transfers"] == 80
    assert 0 < s["pd_prefill_busy_pct"] < 100 and 0 < s["pd_decode_busy_pct"] <= 100
    # the CSV names the decode instance; meta.json each instance's pool
    out = tmp_path / "pd.csv"
    r = run_cli("--cluster-config", PD_EXAMPLE, "--dataset", "workloads/example_trace.jsonl", "--output", out)
    assert r.exit_code == 0, r.output
    assert {row["instance id"] for row in csv.DictReader(io.StringIO(out.read_text()))} == {"1"}
    assert '"pd_type": "prefill"' in (tmp_path / "pd.csv.meta.json").read_text()
    assert "KV transfers:" in r.output and '"pd_kv_bytes"' in (tmp_path / "pd.csv.summary.json").read_text()


def test_small_decode_pool_queues_and_fast_path_agrees():
    # a decode instance with ~2.7k blocks for 150 ShareGPT requests: requests wait for blocks (and
    # preempt each other) but every one finishes; the fast path decides as the plain scheduler
    small = _cluster(_inst("prefill"), _inst("decode", util=0.22))
    big = _cluster(_inst("prefill"), _inst("decode"))
    fast = run(small, SHAREGPT, ENGINE, num_reqs=150)
    plain = run(small, SHAREGPT, ENGINE, num_reqs=150, fast_path=False)
    roomy = run(big, SHAREGPT, ENGINE, num_reqs=150)
    assert len(fast.requests) == 150 and not fast.raw.unfinished
    assert fast.requests.to_csv() == plain.requests.to_csv()
    assert fast.summary["preemptions"][0] > 0
    assert fast.summary["ttft_mean_ms"][0] > 2 * roomy.summary["ttft_mean_ms"][0]


def test_pipelined_decode_pool_fast_path_agrees():
    cluster = _cluster(_inst("prefill", tp_size=2), _inst("decode", util=0.3, pp_size=2))
    fast = run(cluster, SHAREGPT, ENGINE, num_reqs=100)
    plain = run(cluster, SHAREGPT, ENGINE, num_reqs=100, fast_path=False)
    assert len(fast.requests) == 100 and fast.requests.to_csv() == plain.requests.to_csv()


def test_colocated_runs_have_no_pool_figures():
    res = run("configs/cluster/single_node_multi_instance.json", "workloads/example_trace.jsonl", ENGINE)
    assert res.raw.disagg is None and not [c for c in res.summary.columns if c.startswith("pd_")]


@pytest.mark.parametrize("instances, message", [
    ((_inst("prefill"), _inst("prefill")), "pd_type: prefill instances but no decode instance"),
    ((_inst("decode"),), "pd_type: decode instances but no prefill instance"),
    ((_inst("prefill"), _inst(None)), "has pd_type null but other instances are disaggregated"),
    ((_inst("prefill"), _inst("decode", model_name="meta-llama/Llama-3.1-70B")), "must serve one model"),
    ((_inst("prefill"), _inst("mixed")), "expected null, \"prefill\" or \"decode\""),
])
def test_bad_pd_configs(instances, message):
    with pytest.raises(InputError) as e:
        cluster_from_dict(_cluster(*instances))
    assert message in str(e.value) and "\n" not in str(e.value)


def test_the_fork_needs_prefill_npus_numbered_first(tmp_path):
    # the 1P1D example with the pools swapped between the nodes: ASTRA-Sim numbers node 0 first, and
    # a node-aware layout is not renumbered, so the fork (which asks NPUs in id order) refuses it
    from conftest import standin_shim

    raw = json.loads(open(PD_EXAMPLE).read())
    for node, pd in zip(raw["nodes"], ("decode", "prefill")):
        node["instances"][0]["pd_type"] = pd
    cfg = tmp_path / "decode_on_node0.json"
    cfg.write_text(json.dumps(raw))
    r = run_cli("--cluster-config", cfg, "--dataset", "workloads/example_trace.jsonl", "--backend", "astra-sim",
                "--astra-sim-bin", standin_shim(tmp_path), "--output", tmp_path / "out.csv")
    assert r.exit_code == 2 and not (tmp_path / "out.csv").exists()
    line = r.output.strip().splitlines()[-1]
    assert line.endswith(f"{cfg}: pd_type: on astra-sim-fork every prefill instance's NPUs must come before every "
                         "decode instance's in ASTRA-Sim's numbering, which this node layout breaks; place the prefill "
                         "instances on the lower nodes, or use --astra-sim-flavor upstream or --backend embedded")


def test_a_backend_without_transfers_is_refused():
    from llmsim.backends.base import StageTimingBackend
    from llmsim.simulate import prepare, run as run_sim
    from llmsim.config.engine import EngineArgs

    class NoTransfers(StageTimingBackend):  # a third-party backend that does not declare support
        name = "no-transfers"

        def submit(self, inst, batch, graph, t_ns, detail=False):
            raise AssertionError("never reached: refused before the run")

    sim = prepare("configs/cluster/single_node_pd_instance.json", EngineArgs(), "workloads/example_trace.jsonl", 0)
    with pytest.raises(InputError, match=r"^configs/cluster/single_node_pd_instance.json: pd_type: backend "
                                         r"no-transfers does not run prefill/decode disaggregation$"):
        run_sim(sim, NoTransfers())
