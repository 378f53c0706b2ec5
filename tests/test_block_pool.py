"""BlockPool: paged allocation, free-list order and prefix caching, worked by hand
(in the style of vLLM's tests/v1/core/test_block_pool.py and test_prefix_caching.py)."""
import pytest

from llmsim.kv_cache import BlockPool
from llmsim.request import Request

BS = 4  # block size used throughout: small so the ceilings are easy to follow


def _req(rid, prompt, output=0, ids=None):
    """A request; ids (prompt + output token ids) defaults to a range unique to rid."""
    if ids is None:
        ids = tuple(range(rid * 1000, rid * 1000 + prompt + output))
    return Request(rid, 0, prompt_len=prompt, output_len=output, token_ids=tuple(ids))


def _prefill(pool, req, hits=()):
    """What the scheduler does for a new request: hits are computed, the rest is scheduled."""
    req.num_computed = len(hits) * pool.block_size
    ok = pool.allocate(req, req.prompt_len - req.num_computed, list(hits))
    if ok:
        req.num_computed = req.prompt_len
    return ok


def _free_order(pool):
    """The eviction order: blocks never handed out (implicit), then returned ones."""
    return list(range(pool._fresh, pool.num_blocks)) + list(pool._free)


# -- ceilings ---------------------------------------------------------------------------------

@pytest.mark.parametrize("tokens, blocks", [(0, 0), (1, 1), (3, 1), (4, 1), (5, 2), (8, 2), (9, 3), (17, 5)])
def test_blocks_for_is_the_ceiling(tokens, blocks):
    assert BlockPool(10, BS, False).blocks_for(tokens) == blocks


def test_blocks_short_counts_only_missing_blocks():
    pool = BlockPool(10, BS, False)
    r = _req(0, 6)
    assert pool.blocks_short(r, 6) == 2  # ceil(6/4) = 2, holds 0
    assert _prefill(pool, r)
    assert r.blocks == [0, 1]
    assert pool.blocks_short(r, 8) == 0  # 2 blocks hold 8 tokens
    assert pool.blocks_short(r, 9) == 1  # ceil(9/4) = 3, holds 2
    assert pool.blocks_short(r, 13) == 2  # ceil(13/4) = 4
    assert pool.blocks_short(r, 3) == 0  # never negative


# -- allocation without caching ------------------------------------------------------------------

@pytest.mark.parametrize("caching", [False, True])
def test_allocate_takes_blocks_from_the_head_in_order(caching):
    pool = BlockPool(10, BS, caching)
    a, b = _req(0, 10), _req(1, 5)
    assert _prefill(pool, a)  # ceil(10/4) = 3
    assert a.blocks == [0, 1, 2]
    assert _prefill(pool, b)  # ceil(5/4) = 2
    assert b.blocks == [3, 4]
    assert pool.num_free == 5 and pool.num_used == 5


@pytest.mark.parametrize("caching", [False, True])
def test_allocate_fails_without_changes(caching):
    pool = BlockPool(4, BS, caching)
    a = _req(0, 10)
    assert _prefill(pool, a)  # 3 blocks, 1 left
    b = _req(1, 5)  # needs 2
    assert not _prefill(pool, b)
    assert b.blocks == [] and b.num_computed == 0
    assert pool.num_free == 1 and pool.num_used == 3
    assert _free_order(pool) == [3]
    c = _req(2, 4)  # exactly one block fits
    assert _prefill(pool, c)
    assert c.blocks == [3] and pool.num_free == 0


def test_decode_grows_a_block_only_when_the_last_one_is_full():
    pool = BlockPool(10, BS, False)
    r = _req(0, 10, output=5)
    assert _prefill(pool, r)
    assert r.blocks == [0, 1, 2]  # 12 slots for 10 tokens
    # decode token 11 and 12 fit in block 2
    for n in (10, 11):
        r.num_computed, r.num_tokens = n, n + 1
        assert pool.allocate(r, 1)
        assert r.blocks == [0, 1, 2]
    # token 13 needs a 4th block: the next from the head of the free list
    r.num_computed, r.num_tokens = 12, 13
    assert pool.allocate(r, 1)
    assert r.blocks == [0, 1, 2, 3]
    assert pool.num_free == 6


@pytest.mark.parametrize("caching", [False, True])
def test_free_returns_blocks_to_the_tail_in_reverse(caching):
    pool = BlockPool(8, BS, caching)
    a = _req(0, 10)
    assert _prefill(pool, a)  # [0, 1, 2]; free: 3 4 5 6 7
    pool.free(a)
    assert a.blocks == []
    # freed in reverse to the tail: 3 4 5 6 7 2 1 0 (block 0, the request's head, is evicted last)
    assert _free_order(pool) == [3, 4, 5, 6, 7, 2, 1, 0]
    assert pool.num_free == 8
    b = _req(1, 24)  # 6 blocks from the head
    assert _prefill(pool, b)
    assert b.blocks == [3, 4, 5, 6, 7, 2]
    c = _req(2, 5)
    assert _prefill(pool, c)
    assert c.blocks == [1, 0]


def test_num_free_and_num_used_without_caching():
    pool = BlockPool(6, BS, False)
    a, b = _req(0, 4), _req(1, 9)
    assert _prefill(pool, a) and _prefill(pool, b)  # 1 + 3 blocks
    assert (pool.num_free, pool.num_used) == (2, 4)
    pool.free(b)
    assert (pool.num_free, pool.num_used) == (5, 1)
    pool.free(a)
    assert (pool.num_free, pool.num_used) == (6, 0)


# -- prefix caching ------------------------------------------------------------------------------

def test_lookup_without_caching_finds_nothing():
    pool = BlockPool(8, BS, False)
    a = _req(0, 10, ids=range(10))
    assert _prefill(pool, a)
    assert pool.lookup(_req(1, 10, ids=range(10))) == []


def test_prefix_hit_returns_the_first_requests_full_blocks():
    pool = BlockPool(8, BS, True)
    ids = tuple(range(100, 110))
    a = _req(0, 10, ids=ids)
    assert _prefill(pool, a)  # blocks [0, 1, 2]; full blocks 0 and 1 (8 tokens) are hashed
    b = _req(1, 10, ids=ids)
    hits = pool.lookup(b)
    assert hits == [0, 1]  # (10 - 1) // 4 = 2 blocks; block 2 holds only 2 tokens
    assert _prefill(pool, b, hits)
    # b shares 0 and 1, computes tokens 8-9 into a new block from the head of the free list
    assert b.blocks == [0, 1, 3]
    assert pool.num_free == 4 and pool.num_used == 4  # 0 1 2 3 in use


def test_lookup_always_leaves_one_token_to_compute():
    pool = BlockPool(8, BS, True)
    ids = tuple(range(8))
    a = _req(0, 8, ids=ids)
    assert _prefill(pool, a)  # two full blocks, both hashed
    # the same 8-token prompt: (8 - 1) // 4 = 1 block, so token 8 is still computed (its logits)
    assert pool.lookup(_req(1, 8, ids=ids)) == [0]
    # a 9-token prompt with the same first 8: (9 - 1) // 4 = 2 blocks
    assert pool.lookup(_req(2, 9, ids=ids + (99,))) == [0, 1]


def test_lookup_uses_chained_hashes():
    pool = BlockPool(8, BS, True)
    a = _req(0, 12, ids=[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12])
    assert _prefill(pool, a)  # blocks [0, 1, 2], all three full and hashed
    # same first block, different second: hit only block 0
    assert pool.lookup(_req(1, 12, ids=[1, 2, 3, 4, 0, 6, 7, 8, 9, 10, 11, 12])) == [0]
    # different first block, same second: the chain breaks at block 0, no hits at all
    assert pool.lookup(_req(2, 12, ids=[0, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12])) == []
    # identical 12 tokens plus one more: (13 - 1) // 4 = 3 blocks, all hit
    assert pool.lookup(_req(3, 13, ids=list(range(1, 14)))) == [0, 1, 2]


def test_shared_block_stays_out_of_the_free_list_until_both_free():
    pool = BlockPool(8, BS, True)
    ids = tuple(range(10))
    a, b = _req(0, 10, ids=ids), _req(1, 10, ids=ids)
    assert _prefill(pool, a)  # [0, 1, 2]
    assert _prefill(pool, b, pool.lookup(b))  # [0, 1, 3]
    assert _free_order(pool) == [4, 5, 6, 7]
    pool.free(a)
    # only block 2 (a's own) comes back; 0 and 1 are still referenced by b
    assert _free_order(pool) == [4, 5, 6, 7, 2]
    assert pool.num_free == 5 and pool.num_used == 3
    pool.free(b)
    # b's blocks in reverse: 3, 1, 0
    assert _free_order(pool) == [4, 5, 6, 7, 2, 3, 1, 0]
    assert pool.num_free == 8
    # 0 and 1 still carry their hashes: they count as used KV until evicted
    assert pool.num_used == 2


def test_freed_hashed_block_is_a_hit_until_evicted():
    pool = BlockPool(8, BS, True)
    ids = tuple(range(10))
    a = _req(0, 10, ids=ids)
    assert _prefill(pool, a)
    pool.free(a)  # free list: 3 4 5 6 7 2 1 0; 0 and 1 hashed
    assert pool.num_used == 2
    assert pool.lookup(_req(1, 10, ids=ids)) == [0, 1]
    # an unrelated request takes 6 blocks: 3 4 5 6 7 2 -- no hashed block evicted
    other = _req(9, 24)
    assert _prefill(pool, other)
    assert other.blocks == [3, 4, 5, 6, 7, 2]
    assert pool.lookup(_req(2, 10, ids=ids)) == [0, 1]
    assert pool.num_used == 8  # 6 held + 2 cached
    # one more block evicts block 1 (next at the head); block 0, the prefix head, survives
    assert pool.take(1) == [1]
    assert pool.lookup(_req(3, 10, ids=ids)) == [0]
    assert pool.num_used == 8 and pool.num_free == 1  # 7 held + 1 cached
    assert pool.take(1) == [0]
    assert pool.lookup(_req(4, 10, ids=ids)) == []
    assert pool.num_used == 8 and pool.num_free == 0


def test_hit_on_a_freed_block_takes_it_back_from_the_free_list():
    pool = BlockPool(8, BS, True)
    ids = tuple(range(10))
    a = _req(0, 10, ids=ids)
    assert _prefill(pool, a)
    pool.free(a)  # free list: 3 4 5 6 7 2 1 0
    b = _req(1, 10, ids=ids)
    hits = pool.lookup(b)
    assert _prefill(pool, b, hits)
    # 0 and 1 leave the free list from wherever they are; the new block comes from the head (3)
    assert b.blocks == [0, 1, 3]
    assert _free_order(pool) == [4, 5, 6, 7, 2]
    assert pool.num_free == 5 and pool.num_used == 3


def test_can_fit_counts_hits_held_by_others_as_free():
    pool = BlockPool(4, BS, True)
    ids = tuple(range(10))
    a = _req(0, 10, ids=ids)
    assert _prefill(pool, a)  # [0, 1, 2]; 1 block free
    b = _req(1, 10, ids=ids)
    hits = pool.lookup(b)
    assert hits == [0, 1]
    # without the hits b needs 3 blocks > 1 free; with them only 3 - 2 = 1 new block
    assert not pool.can_fit(10, [], 0)
    assert pool.can_fit(10, hits, 0)
    assert _prefill(pool, b, hits)
    assert b.blocks == [0, 1, 3] and pool.num_free == 0


def test_can_fit_counts_freed_hits_against_the_free_list():
    pool = BlockPool(4, BS, True)
    ids = tuple(range(16))
    a = _req(0, 10, ids=ids[:10])
    assert _prefill(pool, a)
    pool.free(a)  # all 4 free, blocks 0 and 1 cached
    hits = pool.lookup(_req(1, 16, ids=ids))
    assert hits == [0, 1]
    # 16 tokens: 4 blocks - 2 hits = 2 new, plus the 2 hits leave the free list: 4 <= 4
    assert pool.can_fit(16, hits, 0)
    # 17 tokens: 5 - 2 = 3 new + 2 = 5 > 4
    assert not pool.can_fit(17, hits, 0)
    # already holding 1 block: 17 tokens need 5 - 1 - 2 = 2 new + 2 = 4 <= 4
    assert pool.can_fit(17, hits, 1)


def test_failed_allocation_with_hits_changes_nothing():
    pool = BlockPool(4, BS, True)
    ids = tuple(range(20))
    a = _req(0, 10, ids=ids[:10])
    assert _prefill(pool, a)
    pool.free(a)  # free list 3 2 1 0; 0 and 1 cached
    order, used = _free_order(pool), pool.num_used
    b = _req(1, 20, ids=ids)  # 5 blocks > 4 even with hits
    hits = pool.lookup(b)
    assert hits == [0, 1]
    assert not _prefill(pool, b, hits)
    assert b.blocks == []
    assert _free_order(pool) == order and pool.num_used == used
    # the cached blocks are still hits
    assert pool.lookup(_req(2, 10, ids=ids[:10])) == [0, 1]


def test_decode_blocks_become_hits_once_full():
    pool = BlockPool(8, BS, True)
    ids = tuple(range(10))  # 6 prompt + 4 output tokens
    a = _req(0, 6, output=4, ids=ids)
    assert _prefill(pool, a)  # [0, 1]; only block 0 full (tokens 0-3) and hashed
    probe = _req(1, 10, ids=ids)
    assert pool.lookup(probe) == [0]
    # decode tokens 7 and 8: block 1 fills up (tokens 4-7) when token 8 is computed
    for n in (6, 7):
        a.num_computed, a.num_tokens = n, n + 1
        assert pool.allocate(a, 1)
    assert a.blocks == [0, 1]
    assert pool.lookup(_req(2, 10, ids=ids)) == [0, 1]
