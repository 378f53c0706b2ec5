"""The engine and the step API (session.py) on a backend with fixed stage times, traced by hand."""
import pytest

from conftest import FixedStages

from llmsim.config.engine import EngineArgs
from llmsim.engine import Engine
from llmsim.request import Request
from llmsim.session import Session
from llmsim.simulate import prepare

PP2 = "configs/cluster/single_node_pp_instance.json"


def Fixed(cluster):
    """Every stage of every batch is busy 100 ns; no transfers."""
    return FixedStages(cluster)


def _run(fast_path, rule="reference", reqs=None, budget=2048, **session_kw):
    reqs = reqs or [Request(0, 0, prompt_len=10, output_len=3), Request(1, 50, prompt_len=5, output_len=2)]
    args = EngineArgs(dtype="float16", enable_prefix_caching=False, batch_formation=rule, max_num_batched_tokens=budget)
    sim = prepare(PP2, args, reqs, fast_path=fast_path)
    backend = Fixed(sim.cluster)
    result = Engine(Session(sim.instances, sim.requests, **session_kw), backend).run()
    return result, backend.submitted


@pytest.mark.parametrize("fast_path", [False, True])
def test_two_stage_pipeline_by_hand(fast_path):
    # the reference's rule: a batch is formed whenever stage 0 is free (and < pp in flight)
    result, submitted = _run(fast_path)
    # t=1 (nothing runs before 1 ns): r0's prompt; stage 0 busy 1..101, stage 1 101..201.
    # t=101: stage 0 frees; r0 is in flight (no new token yet), r1 (arrived at 50) is admitted.
    # t=201: batch 0 completes (r0's first token), then stage 0 frees: r0 decodes; r1 in flight.
    # t=301: r1's first token; r1 decodes.  t=401: r0's 2nd token; r0 decodes again.
    # t=501: r1's 2nd token: r1 done; nothing to run.  t=601: r0's 3rd token: r0 done.
    assert submitted == [(1, 0, 10, 0), (101, 1, 5, 0), (201, 2, 0, 1), (301, 3, 0, 1), (401, 4, 0, 1)]
    r1, r0 = result.finished[0]  # completion order
    assert (r0.id, r0.first_token_ns, r0.end_ns, list(r0.itl_ns), r0.first_sched_ns) == (0, 201, 601, [200, 200], 1)
    assert (r1.id, r1.first_token_ns, r1.end_ns, list(r1.itl_ns), r1.first_sched_ns) == (1, 301, 501, [200], 101)
    assert (result.end_ns, result.iterations, result.prompt_tokens, result.gen_tokens) == (601, 5, 15, 5)
    assert result.unfinished == []


def _summary(result):
    return [(r.id, r.first_token_ns, r.end_ns, list(r.itl_ns), r.first_sched_ns) for d in result.finished for r in d]


@pytest.mark.parametrize("fast_path", [False, True])
def test_vllm_batch_queue_by_hand(fast_path):
    # vLLM's engine (step_with_batch_queue): after forming a batch it schedules again; with nothing
    # new it blocks on its oldest batch, so r1 (arriving at 50 while batch 0 is in flight) waits
    # for batch 0 to complete at 201 even though stage 0 has been free since 101.
    # t=1: B0 = r0's prompt (1..101, 101..201).  t=201: r0's first token; B1 = r0 decode + r1's
    # prompt (201..301..401).  t=401: r0's 2nd token, r1's first; B2 = both decode (401..601).
    result, submitted = _run(fast_path, "vllm")
    assert submitted == [(1, 0, 10, 0), (201, 1, 5, 1), (401, 2, 0, 2)]
    assert _summary(result) == [(0, 201, 601, [200, 200], 1), (1, 401, 601, [200], 201)]
    assert (result.end_ns, result.iterations, result.prompt_tokens, result.gen_tokens) == (601, 3, 15, 5)


@pytest.mark.parametrize("fast_path", [False, True])
def test_vllm_batch_queue_forms_at_slot_free_and_waits_for_stage0(fast_path):
    # Budget 8 tokens. r0 (prompt 10, 2 out) and r1 (prompt 5, 1 out) arrive at 0, r2 (prompt 3) at 50.
    # t=1: B0 = r0[0:8]; the queue has a slot, so B1 = r0[8:10] + r1 is formed at once too: its
    #      contents are fixed at 1 and it waits for stage 0 (101..201, 201..301).
    # t=201: B0 completes, a slot frees: B2 = r2 (r0 and r1 are in flight with their whole prompts).
    # t=301: B1 completes: first tokens of r0 (final chunk) and r1 (done); B3 = r0's decode.
    # t=401: B2: r2's first token (done).  t=501: B3: r0's 2nd token (done).
    reqs = lambda: [Request(0, 0, prompt_len=10, output_len=2), Request(1, 0, prompt_len=5, output_len=1),
                    Request(2, 50, prompt_len=3, output_len=1)]
    result, submitted = _run(fast_path, "vllm", reqs(), budget=8)
    assert submitted == [(1, 0, 8, 0), (1, 1, 7, 0), (201, 2, 3, 0), (301, 3, 0, 1)]
    assert _summary(result) == [(1, 301, 301, [], 1), (2, 401, 401, [], 201), (0, 301, 501, [200], 1)]
    # The reference's rule forms B1 when stage 0 frees at 101, so r2 (arrived at 50) joins it.
    result, submitted = _run(fast_path, "reference", reqs(), budget=8)
    assert [t for t, *_ in submitted] == [1, 101, 201, 301]
    assert [r.first_sched_ns for r in sorted(result.finished[0], key=lambda r: r.id)] == [1, 101, 101]


def test_heartbeats_cover_each_interval_once():
    result, _ = _run(True, log_interval_ns=250)
    # (0, 250]: batch 0 (10 prompt tokens, 1 token); (250, 500]: batch 1 (5, 1) and batch 2 (0, 1).
    # The 250 beat is emitted at t=301 before that tick's events: r0 and r1 running.
    hb = [(h.t_ns, h.prompt_tokens, h.gen_tokens, h.running, h.waiting) for h in result.heartbeats]
    assert hb == [(250, 10, 1, 2, 0), (500, 5, 2, 2, 0)]


def test_iteration_log_rows_are_the_stage_events():
    result, _ = _run(True, record_iterations=True)
    rows = [(r.batch_id, r.stage, r.start_ns, r.end_ns, r.prefill_tokens, r.decode_tokens) for r in result.iteration_log]
    assert rows[:4] == [(0, 0, 1, 101, 10, 0), (0, 1, 101, 201, 10, 0), (1, 0, 101, 201, 5, 0), (1, 1, 201, 301, 5, 0)]
    assert len(rows) == 10


def test_a_request_no_instance_can_serve_is_unfinished_with_its_reason():
    reqs = [Request(0, 0, prompt_len=10, output_len=3), Request(1, 0, prompt_len=200_000, output_len=2)]
    sim = prepare(PP2, EngineArgs(dtype="float16"), reqs)
    s = Session(sim.instances, sim.requests)
    assert s.deliver_arrivals(0) == [0]  # only request 0 reached a scheduler
    (req, why), = s.unfinished
    assert req.id == 1 and "exceeds the maximum model length 131072" in why
    sim = prepare(PP2, EngineArgs(dtype="float16"), [Request(0, 0, 10, 3), Request(1, 0, 200_000, 2)])
    result = Engine(Session(sim.instances, sim.requests), Fixed(sim.cluster)).run()
    assert [r.id for r in result.finished[0]] == [0] and [r.id for r, _ in result.unfinished] == [1]


def test_a_session_call_is_released_after_its_predecessor_and_tool_time():
    first, second = Request(0, 0, prompt_len=10, output_len=1), Request(1, -1, prompt_len=4, output_len=1)
    first.next_in_session, first.tool_duration_ns = second, 1000
    sim = prepare(PP2, EngineArgs(dtype="float16", enable_prefix_caching=False), [first])
    result = Engine(Session(sim.instances, sim.requests), Fixed(sim.cluster)).run()
    # first: formed at 1, done at 201; second arrives at 201 + 1000 and runs 1201..1401
    assert second.arrival_ns == 1201 and second.end_ns == 1401
    assert [r.id for r in result.finished[0]] == [0, 1]
