"""Router policies (LOAD / RR / RAND), worked by hand on tiny fake schedulers."""
import random

import pytest

from llmsim.config.engine import EngineArgs
from llmsim.kv_cache import BlockPool
from llmsim.request import Request
from llmsim.router import Router
from llmsim.scheduler import Scheduler

INF = float("inf")


class FakeSched:
    """What the router reads: .waiting, .running, .max_num_seqs."""

    def __init__(self, waiting=0, running=0, max_num_seqs=INF):
        self.max_num_seqs = max_num_seqs
        self.set(waiting, running)

    def set(self, waiting, running):
        self.waiting = [object()] * waiting
        self.running = [object()] * running


def _scheds(*loads, max_num_seqs=INF):
    return [FakeSched(w, r, max_num_seqs) for w, r in loads]


@pytest.mark.parametrize("policy", ["LOAD", "RR", "RAND"])
def test_single_instance_is_always_picked(policy):
    r = Router([FakeSched(waiting=50, running=7, max_num_seqs=8)], policy)
    assert [r.pick() for _ in range(5)] == [0] * 5


def test_load_picks_least_loaded():
    # scores 4*waiting + running: (2,0) -> 8, (0,1) -> 1, (1,1) -> 5
    r = Router(_scheds((2, 0), (0, 1), (1, 1)), "LOAD")
    assert r.pick() == 1
    # the router itself does not change the load: instance 1 is still the least loaded
    assert r.pick() == 1


def test_load_one_waiting_outweighs_three_running():
    # (1 waiting) scores 4, (3 running) scores 3 -> the busier-looking one wins
    assert Router(_scheds((1, 0), (0, 3)), "LOAD").pick() == 1
    assert Router(_scheds((0, 3), (1, 0)), "LOAD").pick() == 0
    # 5 running scores 5 > 4: now the one with a waiting request is preferred
    assert Router(_scheds((1, 0), (0, 5)), "LOAD").pick() == 0


def test_load_ties_rotate_from_after_the_last_pick():
    # all empty: every pick is a tie, so the search start rotates 0, 1, 2, 0, ...
    r = Router(_scheds((0, 0), (0, 0), (0, 0)), "LOAD")
    assert [r.pick() for _ in range(7)] == [0, 1, 2, 0, 1, 2, 0]


def test_load_tie_between_two_of_three_alternates():
    # scores 0, 5, 0: pick 0; next search starts at 1 -> 1 scores 5, 2 scores 0 -> 2;
    # next starts at 0 (after 2) -> 0; ...
    r = Router(_scheds((0, 0), (0, 5), (0, 0)), "LOAD")
    assert [r.pick() for _ in range(4)] == [0, 2, 0, 2]


def test_load_rotation_follows_a_strict_win():
    s = _scheds((0, 1), (0, 1), (0, 0))
    r = Router(s, "LOAD")
    assert r.pick() == 2  # the strict minimum
    s[2].set(0, 1)  # now all tie at 1: the search starts after 2, i.e. at 0
    assert r.pick() == 0
    assert r.pick() == 1
    s[0].set(1, 0)  # scores 4, 1, 1: search starts at 2 -> 2 (ties with 1 but comes first)
    assert r.pick() == 2
    assert r.pick() == 1  # search starts at 0: 4, then 1 (strictly smaller), then 2 ties -> 1


def test_load_scaled_by_max_num_seqs():
    # A: 100 running of 256 -> 0.39; B: 10 running of 16 -> 0.625. Unscaled, B (10 < 100) would win.
    a, b = FakeSched(0, 100, 256), FakeSched(0, 10, 16)
    assert Router([a, b], "LOAD").pick() == 0
    # the waiting weight is scaled too: A 2 waiting of 8 -> 8/8 = 1.0; B 3 running of 4 -> 0.75
    a, b = FakeSched(2, 0, 8), FakeSched(0, 3, 4)
    assert Router([a, b], "LOAD").pick() == 1
    # equal fractions tie and rotate: 4/8 = 0.5 and (1*4 + 4)/16 = 0.5
    r = Router([FakeSched(0, 4, 8), FakeSched(1, 4, 16)], "LOAD")
    assert [r.pick() for _ in range(3)] == [0, 1, 0]


def test_load_unbounded_instance_is_not_scaled():
    # max_num_seqs infinite: raw score 1; the bounded one: 3/4 = 0.75 -> the bounded one wins
    assert Router([FakeSched(0, 1, INF), FakeSched(0, 3, 4)], "LOAD").pick() == 1
    # raw 0 beats any positive fraction
    assert Router([FakeSched(0, 1, 1000), FakeSched(0, 0, INF)], "LOAD").pick() == 1


def test_rr_ignores_load():
    r = Router(_scheds((9, 9), (0, 0), (0, 0)), "RR")
    assert [r.pick() for _ in range(7)] == [0, 1, 2, 0, 1, 2, 0]


def test_rand_is_seeded_and_reproducible():
    s = _scheds((0, 0), (0, 0), (0, 0), (0, 0))
    r1, r2 = Router(s, "RAND"), Router(s, "RAND")
    seq1 = [r1.pick() for _ in range(40)]
    seq2 = [r2.pick() for _ in range(40)]
    assert seq1 == seq2  # every run routes the same way
    ref = random.Random(42)
    assert seq1 == [ref.randrange(4) for _ in range(40)]
    assert set(seq1) == {0, 1, 2, 3}  # and it does spread (not a constant)


def test_rand_ignores_load():
    # instance 0 is hugely loaded but RAND still sends it requests
    r = Router(_scheds((100, 100), (0, 0)), "RAND")
    assert 0 in [r.pick() for _ in range(40)]


def test_load_with_real_schedulers():
    def sched(i):
        args = EngineArgs(block_size=16, max_num_seqs=4)
        return Scheduler(i, args, BlockPool(100, 16, False), 1, max_model_len=1 << 20)

    s = [sched(0), sched(1)]
    r = Router(s, "LOAD")
    rid = 0
    picks = []
    for _ in range(4):
        i = r.pick()
        picks.append(i)
        s[i].add_request(Request(rid, 0, 10, 1))
        rid += 1
    # 0 (tie), then 1 (0 scores 4/4 = 1, 1 scores 0), then tie at 1 -> after 1 -> 0, then 1
    assert picks == [0, 1, 0, 1]
    assert [len(x.waiting) for x in s] == [2, 2]
