"""--backend astra-sim end to end: our traces, inputs and protocol driver against a binary.

CI has no C++ build, so a shim named like the fork's binary runs the protocol stand-in
(tests/astra_standin.py), which reads the .et files we wrote. With a real build in LLMSIM_ASTRA_SIM
(the fork's AnalyticalAstra, or upstream's AstraSim_Analytical_Congestion_Unaware) the last tests
run against it; otherwise they skip.
"""
import json
import os
import subprocess
import time

import pytest

from astra_bridge.binary import FLAVOR_OF_NAME
from conftest import read_rows, run_cli
from conftest import fake_upstream, standin_shim as shim

EXAMPLE = "workloads/example_trace.jsonl"
def _run(tmp_path, cfg, *extra, name="run", dataset=EXAMPLE):
    out = tmp_path / f"{name}.csv"
    res = run_cli("--cluster-config", cfg, "--dtype", "float16", "--dataset", dataset, "--output", out, "--quiet",
                  *extra)
    return res, out


@pytest.mark.parametrize("cfg", ["configs/cluster/single_node_pp_instance.json",
                                 "configs/cluster/single_node_tp_pp_instance.json",
                                 "configs/cluster/single_node_multi_instance.json",
                                 "configs/cluster/h100x16_llama70b_tp4_pp4.json"])
def test_same_csv_as_embedded_through_the_stand_in(tmp_path, cfg):
    res, emb = _run(tmp_path, cfg, name="embedded")
    assert res.exit_code == 0, res.output
    with pytest.warns(UserWarning, match=f"--keep-traces: every batch's traces stay in {tmp_path / 'wd'}"):
        res, fork = _run(tmp_path, cfg, "--backend", "astra-sim", "--astra-sim-bin", shim(tmp_path),
                         "--astra-sim-workdir", tmp_path / "wd", "--keep-traces", name="fork")
    assert res.exit_code == 0, res.output
    assert fork.read_bytes() == emb.read_bytes()
    # the run folder holds the inputs and every batch's per-NPU traces, and says what they cost
    assert (tmp_path / "wd" / "network" / "network.yml").is_file()
    assert (tmp_path / "wd" / "workload" / "instance0_batch0" / "llm.0.et").is_file()


def _batch_traces(wd):
    return [p for p in wd.rglob("*.et") if "event_handler" not in p.parts]


def test_finished_traces_are_removed_as_the_run_goes(tmp_path):
    """Without --keep-traces a batch's files go once ASTRA-Sim is done with them: a long run needs
    the disk of the batches in flight only."""
    res, _ = _run(tmp_path, "configs/cluster/single_node_pp_instance.json", "--backend", "astra-sim",
                  "--astra-sim-bin", shim(tmp_path), "--astra-sim-workdir", tmp_path / "wd")
    assert res.exit_code == 0, res.output
    assert (tmp_path / "wd" / "network" / "network.yml").is_file()
    assert _batch_traces(tmp_path / "wd") == []


def _no_orphans(tmp_path):
    time.sleep(0.2)
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert str(tmp_path) not in ps


@pytest.mark.parametrize("knob,expect", [("STANDIN_EXIT_AFTER=3 ", "ASTRA-Sim exited (code 3)"),
                                         ("STANDIN_HANG_AFTER=3 ", "reported nothing for 2 s"),
                                         ("STANDIN_GARBAGE=1 ", "broke the protocol")])
def test_misbehaving_binary_is_a_clear_error_with_no_leftover_process(tmp_path, knob, expect):
    exe = shim(tmp_path, env_line=f"export {knob.strip()}\n")
    t0 = time.monotonic()
    res, out = _run(tmp_path, "configs/cluster/single_node_pp_instance.json", "--backend", "astra-sim",
                    "--astra-sim-bin", exe, "--astra-sim-timeout", 2)
    assert res.exit_code == 2
    (line,) = [l for l in res.output.splitlines() if l.startswith("error:")]
    assert expect in line
    assert time.monotonic() - t0 < 20
    assert not out.exists()
    _no_orphans(tmp_path)


def test_missing_non_executable_and_wrong_flavour_binaries(tmp_path):
    cfg = "configs/cluster/single_node_pp_instance.json"
    res, _ = _run(tmp_path, cfg, "--backend", "astra-sim", "--astra-sim-bin", tmp_path / "nope" / "AnalyticalAstra")
    assert res.exit_code == 2 and "ASTRA-Sim binary not found" in res.output
    plain = tmp_path / "AnalyticalAstra"
    plain.write_text("#!/bin/sh\n")
    res, _ = _run(tmp_path, cfg, "--backend", "astra-sim", "--astra-sim-bin", plain)
    assert res.exit_code == 2 and "not executable" in res.output
    up = shim(tmp_path, name="AstraSim_Analytical_Congestion_Unaware")
    res, _ = _run(tmp_path, cfg, "--backend", "astra-sim", "--astra-sim-bin", up)
    assert res.exit_code == 2 and "upstream flavour's binary but --astra-sim-flavor is llmservingsim" in res.output


def test_send_recv_size_mismatch_is_reported_not_hung(tmp_path, monkeypatch):
    """A trace whose RECV does not match its SEND never finishes: the driver names what hung."""
    import astra_bridge.traces as traces

    real = traces.npu_nodes

    def broken(graph, stage, rank, flavor, multi_dim, first_id=0, mem_cost_ns=None, tag=None, layout=None, **kw):
        nodes = real(graph, stage, rank, flavor, multi_dim, first_id, mem_cost_ns, tag, layout, **kw)
        for n in nodes:
            for a in n.attr:
                if a.name == "comm_size" and stage == 1:
                    a.int64_val += 2  # the receiver expects 2 more bytes than are sent
        return nodes

    monkeypatch.setattr(traces, "npu_nodes", broken)
    res, _ = _run(tmp_path, "configs/cluster/single_node_pp_instance.json", "--backend", "astra-sim",
                  "--astra-sim-bin", shim(tmp_path), "--astra-sim-timeout", 2)
    assert res.exit_code == 2
    assert "instance 0 batch 0 (NPUs [0, 1]) has not finished" in res.output
    _no_orphans(tmp_path)


def test_doctor_reports_the_search_order(tmp_path, monkeypatch):
    monkeypatch.setenv("LLMSIM_ASTRA_SIM", str(shim(tmp_path)))
    res = run_cli("doctor")
    assert res.exit_code == 0
    assert "$LLMSIM_ASTRA_SIM" in res.output and "flavour: llmservingsim" in res.output


def test_trace_dump_prints_nodes(tmp_path):
    res = run_cli("--cluster-config", "configs/cluster/single_node_pp_instance.json", "--dataset", EXAMPLE,
                  "--num-reqs", 1, "--quiet", "--dump-traces", tmp_path)
    assert res.exit_code == 0
    res = run_cli("trace", "dump", tmp_path / "instance0_batch0" / "llm.1.et")
    lines = res.output.splitlines()
    # RECV of the hidden states and of the residual, 16 layers x 9, final norm, lm_head, sampler, MEM_STORE
    assert "150 nodes" in lines[0]
    for line in lines[1:3]:  # tp=1: each tensor whole, 10 prompt tokens x 4096 x fp16
        assert line.split()[1] == "type=COMM_RECV_NODE" and "comm_size': 81920" in line


REAL = os.environ.get("LLMSIM_ASTRA_SIM")
needs_real = pytest.mark.skipif(not REAL, reason="set LLMSIM_ASTRA_SIM to an ASTRA-Sim build to run")


@needs_real
@pytest.mark.parametrize("cfg", ["single_node_pp_instance", "single_node_pp4_instance", "single_node_tp_pp_instance",
                                 # node-aware networks: 2 nodes x 8 H100, NVSwitch inside, InfiniBand between
                                 "h100x16_llama70b_tp8_pp2", "h100x16_llama70b_tp4_pp4",
                                 # one prefill instance (node 0) and one decode instance (node 1)
                                 "h100x16_llama70b_pd_1p1d"])
def test_real_build_runs_to_completion_and_agrees(tmp_path, cfg):
    flavor = FLAVOR_OF_NAME.get(os.path.basename(REAL), "llmservingsim")
    path = f"configs/cluster/{cfg}.json"
    res, emb = _run(tmp_path, path, name="embedded")
    res, real = _run(tmp_path, path, "--backend", "astra-sim", "--astra-sim-flavor", flavor, "--astra-sim-workdir",
                     tmp_path / "wd", name="real")
    assert res.exit_code == 0, res.output
    assert _batch_traces(tmp_path / "wd") == []  # each removed once the build was done with it
    a, b = read_rows(emb), read_rows(real)
    assert [r["request id"] for r in a] == [r["request id"] for r in b]
    if flavor == "llmservingsim" and "tp" not in cfg:
        assert real.read_bytes() == emb.read_bytes()  # tp=1: identical to the nanosecond
    else:
        # upstream reads whole microseconds (each stage's compute total within 0.5 us of the
        # exact one: within 0.02 % of latency, measured at most 0.006 %); the fork at tp>1: ranks
        # meet in the ring with ns-level offsets, within 0.5 %
        tol = 0.0002 if flavor == "upstream" else 0.005
        for x, y in zip(a, b):
            assert abs(int(x["latency"]) - int(y["latency"])) <= tol * int(x["latency"])


@needs_real
def test_real_build_keeps_traces_and_links_repeated_ones(tmp_path):
    """Two identical requests, 10 s apart: the second's batches repeat the first's graphs."""
    flavor = FLAVOR_OF_NAME.get(os.path.basename(REAL), "llmservingsim")
    ds = tmp_path / "twice.jsonl"
    ds.write_text("".join(json.dumps({"input_toks": 40, "output_toks": 6, "arrival_time_ns": t}) + "\n"
                          for t in (0, 10**10)))
    wd = tmp_path / "wd"
    res, _ = _run(tmp_path, "configs/cluster/single_node_pp_instance.json", "--backend", "astra-sim",
                  "--astra-sim-flavor", flavor, "--astra-sim-workdir", wd, "--keep-traces", dataset=ds, name="real")
    assert res.exit_code == 0, res.output
    folders = sorted((wd / ("graphs" if flavor == "upstream" else "workload")).glob("instance0_batch*"))
    assert len(folders) == 12  # 6 batches per request
    if flavor == "upstream":  # a graph already run is a link to the first copy, not a second one
        links = [f for f in folders if f.is_symlink()]
        assert len(links) >= 6  # at least the second request's six
        batch = lambda f: int(f.name.rsplit("batch", 1)[1])
        for f in links:
            target = f.parent / os.readlink(f)
            assert not target.is_symlink() and batch(target) < batch(f) and (target / "llm.0.et").is_file()


def test_tp2_single_stage_runs_through_the_stand_in(tmp_path):
    # pp=1, tp=2: a batch is done when both ranks have reported it
    cfg = "configs/cluster/single_node_tp2_instance.json"
    res, emb = _run(tmp_path, cfg, name="embedded")
    res, fork = _run(tmp_path, cfg, "--backend", "astra-sim", "--astra-sim-bin", shim(tmp_path), name="fork")
    assert res.exit_code == 0, res.output
    for x, y in zip(read_rows(emb), read_rows(fork)):
        assert x["request id"] == y["request id"]
        assert abs(int(x["latency"]) - int(y["latency"])) <= 1000  # ns: ranks' host-memory queueing


def test_mixed_tp_sizes_are_refused_by_the_bridge(tmp_path):
    import json
    from pathlib import Path

    cfg = json.loads(Path("configs/cluster/single_node_multi_instance.json").read_text())
    cfg["nodes"][0]["instances"][1].update(tp_size=2, num_npus=2)
    p = tmp_path / "mixed.json"
    p.write_text(json.dumps(cfg))
    res, _ = _run(tmp_path, p, "--backend", "astra-sim", "--astra-sim-bin", shim(tmp_path))
    assert res.exit_code == 2 and "the bridge needs one layout for all instances" in res.output


def test_dumped_traces_follow_the_backend_flavour(tmp_path, monkeypatch):
    """--dump-traces writes what the backend runs: upstream's whole-microsecond fused runs with
    --astra-sim-flavor upstream, unless --trace-flavor says otherwise."""
    from astra_bridge.chakra.codec import read_et

    exe = fake_upstream(monkeypatch, tmp_path)
    counts = {}
    for tag, extra in (("follows", []), ("forced", ["--trace-flavor", "llmservingsim"])):
        res, _ = _run(tmp_path, "configs/cluster/single_node_pp_instance.json", "--backend", "astra-sim",
                      "--astra-sim-flavor", "upstream", "--astra-sim-bin", exe, "--num-reqs", 1,
                      "--dump-traces", tmp_path / tag, *extra, name=tag)
        assert res.exit_code == 0, res.output
        counts[tag] = len(read_et(tmp_path / tag / "instance0_batch0" / "llm.0.et")[1])
    # stage 0 of pp=2: MEM_LOAD, then 16 layers x 9 compute nodes + embedding, then the SENDs of
    # the hidden states and the residual; upstream fuses the compute into one node
    assert counts == {"follows": 4, "forced": 148}
