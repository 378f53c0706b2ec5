"""vLLM v1 scheduling rules, traced by hand on small pools."""
from llmsim.config.engine import EngineArgs
from llmsim.kv_cache import BlockPool
from llmsim.request import Request, Status
from llmsim.scheduler import Scheduler


def _sched(num_blocks, block_size, pp=1, caching=False, **kw):
    args = EngineArgs(block_size=block_size, enable_prefix_caching=caching, **kw)
    return Scheduler(0, args, BlockPool(num_blocks, block_size, caching), pp, max_model_len=1 << 20)


def _step(s, t):
    b = s.schedule(t)
    assert b is not None
    s.complete(b, t + 1)
    return {e.req.id: e.num_new for e in b.entries}


def test_chunked_prefill_under_token_budget():
    s = _sched(1000, 16, max_num_batched_tokens=2048)
    r = Request(0, 0, prompt_len=5000, output_len=2)
    s.add_request(r)
    assert _step(s, 10) == {0: 2048}
    assert r.first_token_ns == -1
    assert _step(s, 20) == {0: 2048}
    assert _step(s, 30) == {0: 904}  # 5000 - 2 x 2048
    assert r.first_token_ns == 31  # stamped when the final chunk's batch completes
    assert _step(s, 40) == {0: 1}
    assert r.status is Status.FINISHED and r.end_ns == 41 and list(r.itl_ns) == [10]


def test_running_decodes_come_before_new_prefill_and_share_the_budget():
    s = _sched(1000, 16, max_num_batched_tokens=100)
    a, b = Request(0, 0, 50, 5), Request(1, 0, 300, 5)
    s.add_request(a)
    assert _step(s, 0) == {0: 50}
    s.add_request(b)
    assert _step(s, 10) == {0: 1, 1: 99}  # decode first, the rest of the budget to the new prompt


def test_max_num_seqs_caps_admission():
    s = _sched(1000, 16, max_num_seqs=2)
    for i in range(3):
        s.add_request(Request(i, 0, 10, 3))
    assert set(_step(s, 0)) == {0, 1}


def test_recompute_preemption_from_the_tail():
    # 4 blocks of 4 tokens; two requests of 6 prompt + 5 output tokens (11 tokens = 3 blocks each).
    s = _sched(4, 4)
    r0, r1 = Request(0, 0, 6, 5), Request(1, 0, 6, 5)
    s.add_request(r0)
    s.add_request(r1)
    assert _step(s, 0) == {0: 6, 1: 6}  # 2 blocks each, pool full; first tokens at t=1
    assert _step(s, 10) == {0: 1, 1: 1}  # computing tokens 7 and 8 still fits in 2 blocks
    assert _step(s, 20) == {0: 1, 1: 1}
    # r0's 9th slot needs a third block: the tail of running (r1) is preempted and re-queued first
    assert _step(s, 30) == {0: 1}
    assert r1.status is Status.PREEMPTED and r1.num_computed == 0 and s.waiting[0] is r1
    # r1 must recompute 9 tokens (3 blocks) but r0 holds 3 of the 4 until it finishes
    assert _step(s, 40) == {0: 1}
    assert r0.status is Status.FINISHED and r0.end_ns == 41
    assert _step(s, 50) == {1: 9}  # prompt + 3 generated tokens, recomputed
    assert s.stats.preemptions == 1 and s.stats.recomputed_tokens == 9
    assert _step(s, 60) == {1: 1}
    assert r1.status is Status.FINISHED
    # r1's tokens at 1, 11, 21, 51, 61: the preemption stall shows in the inter-token gaps
    assert list(r1.itl_ns) == [10, 10, 30, 10]


def test_prefix_cache_hit_skips_full_blocks():
    s = _sched(100, 16, caching=True)
    ids = tuple(range(40)) + (100, 101)
    r0 = Request(0, 0, 40, 2, token_ids=ids)
    s.add_request(r0)
    assert _step(s, 0) == {0: 40}
    r1 = Request(1, 5, 40, 2, token_ids=ids)
    s.add_request(r1)
    # two full 16-token blocks are cached; the 8-token remainder is computed
    assert _step(s, 10) == {0: 1, 1: 8}
    assert r1.prefix_hit_tokens == 32 and s.stats.prefix_hit_tokens == 32


def test_no_prefix_hit_without_token_ids():
    s = _sched(100, 16, caching=True)
    s.add_request(Request(0, 0, 40, 2))
    _step(s, 0)
    s.add_request(Request(1, 5, 40, 2))
    assert _step(s, 10) == {0: 1, 1: 40}


def test_inflight_list_capped_at_pp_size():
    s = _sched(1000, 16, pp=2, max_num_batched_tokens=64)
    s.add_request(Request(0, 0, 200, 2))
    b0, b1 = s.schedule(0), s.schedule(1)
    assert b0 and b1 and [e.num_new for e in b0.entries + b1.entries] == [64, 64]
    assert s.schedule(2) is None  # pipeline full: nothing new until a batch drains
    s.complete(b0, 3)
    assert s.schedule(4).entries[0].num_new == 64
