"""The Backend contract (llmsim/backends/base.py): every backend, the same checks.

Backends: embedded; the ASTRA-Sim fork driver on the protocol stand-in (a test double that reads
the .et files we write); upstream ASTRA-Sim with its binary replaced by a fake that reports each
NPU's finish time from the embedded network model (so composition, caching and the finish-line
parsing are checked without a build); and real builds when LLMSIM_ASTRA_SIM_FORK /
LLMSIM_ASTRA_SIM_UPSTREAM (or LLMSIM_ASTRA_SIM, by file name) point at them.
"""
import json
from pathlib import Path

import pytest

from llmsim.backends.base import Backend, Capability, ClockOwningBackend, StageTimingBackend
from llmsim.config.engine import EngineArgs
from llmsim.session import Session
from llmsim.simulate import make_backend, prepare, run
from conftest import fake_upstream, real_astra, standin_shim

PP2 = "configs/cluster/single_node_pp_instance.json"
TP2PP2 = "configs/cluster/single_node_tp_pp_instance.json"
EXAMPLE = "workloads/example_trace.jsonl"

KINDS = ["embedded", "fork-standin", "upstream-fake", "fork-real", "upstream-real"]


@pytest.fixture(params=KINDS)
def factory(request, tmp_path, monkeypatch):
    """factory(sim) -> a fresh backend of this kind; exact: whether it must match embedded to the ns."""
    kind = request.param
    if kind == "embedded":
        return (lambda sim: make_backend(sim, "embedded")), True
    if kind == "fork-standin":
        exe = standin_shim(tmp_path)
        return (lambda sim: make_backend(sim, "astra-sim", {"astra_sim_bin": str(exe)})), True
    if kind == "upstream-fake":
        exe = fake_upstream(monkeypatch, tmp_path)
        # not exact: a batch whose trace repeats an earlier one byte for byte (traces hold whole
        # microseconds) reuses that run's times, which the fake took from the earlier graph
        return (lambda sim: make_backend(sim, "astra-sim", {"astra_sim_bin": str(exe),
                                                             "astra_sim_flavor": "upstream"})), False
    flavor = "llmservingsim" if kind == "fork-real" else "upstream"
    path = real_astra(flavor)
    if not path:
        pytest.skip(f"no real {flavor} build (set LLMSIM_ASTRA_SIM_{'FORK' if kind == 'fork-real' else 'UPSTREAM'})")
    return (lambda sim: make_backend(sim, "astra-sim", {"astra_sim_bin": path, "astra_sim_flavor": flavor})), False


def _sim(cfg=PP2, n=0):
    return prepare(cfg, EngineArgs(dtype="float16"), EXAMPLE, n)


def test_declares_what_it_does(factory):
    make, _ = factory
    with make(_sim()) as backend:
        assert isinstance(backend, Backend) and backend.name
        expected = {Capability.TIMES_STAGES: StageTimingBackend, Capability.OWNS_CLOCK: ClockOwningBackend}
        assert isinstance(backend, expected[backend.capability])


@pytest.mark.parametrize("cfg", [PP2, TP2PP2])
def test_serves_every_request_as_the_embedded_model_times_it(factory, cfg):
    make, exact = factory
    ref = run(_sim(cfg))
    sim = _sim(cfg)
    got = run(sim, make(sim))
    assert not got.unfinished and sum(map(len, got.finished)) == 10
    a = {r.id: r.end_ns - r.arrival_ns for done in ref.finished for r in done}
    b = {r.id: r.end_ns - r.arrival_ns for done in got.finished for r in done}
    assert a.keys() == b.keys()
    for rid in a:
        # real builds: upstream rounds compute runs to whole us; tp>1 ranks meet a few ns apart
        assert a[rid] == b[rid] if exact else abs(a[rid] - b[rid]) <= 0.005 * a[rid]


def test_close_removes_a_temporary_run_folder(factory, tmp_path, monkeypatch):
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    make, _ = factory
    sim = _sim(n=2)
    backend = make(sim)
    run(sim, backend)  # run() closes the backend it is given
    backend.close()  # and closing twice is harmless
    assert list((tmp_path / "tmp").iterdir()) == []


def test_stage_timings_are_consistent(factory):
    """TIMES_STAGES: stage events of consecutive batches respect the pipeline (a stage starts after
    the batch's previous stage and after the stage's previous batch)."""
    make, _ = factory
    sim = _sim(TP2PP2)
    backend = make(sim)
    if backend.capability is not Capability.TIMES_STAGES:
        backend.close()
        pytest.skip("owns the clock: covered by the end-to-end check")
    s = Session(sim.instances, sim.requests)
    t = s.next_arrival_ns()
    s.deliver_arrivals(t)
    with backend:
        prev = None
        for k in range(3):
            batch, graph = s.form_batch(0, t, want_graph=True)
            timing = backend.submit(sim.instances[0], batch, graph, t, detail=True)
            ev = timing.events
            assert [e.stage for e in ev] == [0, 1] and ev[-1].end_ns == timing.end_ns
            assert ev[0].first_rank_end_ns == timing.stage0_free_ns <= ev[0].end_ns
            assert ev[0].start_ns >= t and ev[1].start_ns >= ev[0].first_rank_end_ns
            if prev is not None:
                assert ev[1].start_ns >= prev[1].end_ns  # stage 1 runs its batches in order
            prev = ev
            s.complete_batch(0, batch.id, timing.end_ns)
            t = timing.stage0_free_ns


PD = "configs/cluster/single_node_pd_instance.json"


@pytest.mark.parametrize("decode_first", [False, True])
def test_disaggregation_serves_as_the_embedded_model_times_it(factory, request, tmp_path, decode_first):
    """Every backend runs the KV transfers' sends itself: upstream in a run of its own per shape,
    the fork likewise beside its persistent run. Listing the decode instance first changes nothing
    (the fork numbers prefill NPUs first: astra_bridge/inputs.prefill_first)."""
    if request.node.callspec.params["factory"] == "upstream-fake":
        pytest.skip("the fake upstream binary has no transfer model")
    make, exact = factory
    cfg = PD
    if decode_first:
        raw = json.loads(Path(PD).read_text())
        raw["nodes"][0]["instances"].reverse()
        cfg = tmp_path / "decode_first.json"
        cfg.write_text(json.dumps(raw))
    p, d = (1, 0) if decode_first else (0, 1)
    ref = run(_sim(cfg))
    sim = _sim(cfg)
    got = run(sim, make(sim))
    a = {r.id: (r.instance, r.prefill_instance, r.end_ns) for done in ref.finished for r in done}
    b = {r.id: (r.instance, r.prefill_instance, r.end_ns) for done in got.finished for r in done}
    assert a.keys() == b.keys() and len(a) == 10
    assert got.disagg["transfers"] == 10 and got.disagg["transfer_ns"] == ref.disagg["transfer_ns"]
    for rid in a:
        assert a[rid][:2] == b[rid][:2] == (d, p)  # prefilled on the prefill instance, decoded on the other
        # upstream reads whole microseconds: within 0.02 % of the run
        assert a[rid][2] == b[rid][2] if exact else abs(a[rid][2] - b[rid][2]) <= 2e-4 * a[rid][2]


DP2 = "configs/cluster/rtxpro6000_qwen3_30b_a3b_dp2_ep2.json"


def test_data_parallel_group_serves_as_the_embedded_model_times_it(factory, request):
    """A DP group's lockstep steps run on every backend: on ASTRA-Sim each distinct step's ranks run
    together, the MoE dispatch and combine as ALL_GATHER and REDUCE_SCATTER over the group
    (astra_bridge/dp_steps.py). Three requests: a prefill above the CUDA-graph sizes beside a
    decode (no padding), padded steps, dummy batches, the wave's end."""
    if request.node.callspec.params["factory"] == "upstream-fake":
        pytest.skip("the fake upstream binary times single graphs only")
    from llmsim.request import Request
    reqs = lambda: [Request(id=0, arrival_ns=0, prompt_len=40, output_len=6),
                    Request(id=1, arrival_ns=1_000_000, prompt_len=300, output_len=3),
                    Request(id=2, arrival_ns=2_000_000, prompt_len=8, output_len=4)]
    make, exact = factory
    ref = run(prepare(DP2, EngineArgs(), reqs()))
    sim = prepare(DP2, EngineArgs(), reqs())
    got = run(sim, make(sim))
    assert got.dp == ref.dp and ref.dp[0]["dummy_batches"] > 0 and ref.dp[0]["padded_tokens"] > 0
    a = {r.id: (r.instance, r.end_ns) for done in ref.finished for r in done}
    b = {r.id: (r.instance, r.end_ns) for done in got.finished for r in done}
    assert a.keys() == b.keys() == {0, 1, 2}
    for rid in a:
        assert a[rid][0] == b[rid][0]
        # upstream reads whole microseconds
        assert a[rid][1] == b[rid][1] if exact else abs(a[rid][1] - b[rid][1]) <= 2e-4 * a[rid][1]
