"""Expert routing models: hand examples, closed forms, and the samplers against them."""
import numpy as np
import pytest

from llmsim.perf.routing import (ExpertRouter, RankLoad, Routing, balanced_loads, expected_experts,
                                 expected_loads, expected_tokens, expert_ranges, sample_loads)


def test_expert_ranges_follow_vllm_linear_map():
    assert expert_ranges(128, 2) == [(0, 64), (64, 128)]
    assert expert_ranges(10, 4) == [(0, 3), (3, 6), (6, 8), (8, 10)]  # the first 10 % 4 ranks hold one more
    with pytest.raises(ValueError):
        expert_ranges(4, 8)


def test_balanced_by_hand():
    # 3 tokens x 2 = 6 pairs over 4 ranks of 2 experts: 1 each, the 2 left over to ranks 0 and 1
    assert balanced_loads(3, 8, 2, 4) == (RankLoad(2, 2, 2), RankLoad(2, 2, 2), RankLoad(1, 1, 1), RankLoad(1, 1, 1))
    # Qwen3-30B-A3B on 2 EP ranks: one decode token reaches 4 experts per rank; 16 tokens saturate
    assert balanced_loads(1, 128, 8, 2) == (RankLoad(1, 4, 4),) * 2
    assert balanced_loads(16, 128, 8, 2) == (RankLoad(16, 64, 64),) * 2
    assert balanced_loads(1000, 128, 8, 2) == (RankLoad(1000, 4000, 64),) * 2
    assert balanced_loads(0, 128, 8, 2) == (RankLoad(0, 0, 0),) * 2


@pytest.mark.parametrize("n, e, k, ep", [(7, 10, 3, 4), (1, 8, 2, 8), (33, 128, 8, 3), (5, 16, 16, 2)])
def test_balanced_invariants(n, e, k, ep):
    loads = balanced_loads(n, e, k, ep)
    assert sum(l.pairs for l in loads) == n * k
    counts = [b - a for a, b in expert_ranges(e, ep)]
    for l, c in zip(loads, counts):
        assert l.experts == min(c, l.pairs) and l.tokens == min(n, l.pairs)
    if e % ep == 0:  # the fullest rank: min(E/ep, ceil(n k / ep))
        assert max(l.experts for l in loads) == min(e // ep, -(-n * k // ep))


def test_closed_forms_by_hand():
    # E=4, k=2, a rank of 2 experts, one token: P(miss one expert) = 1/2 -> 1 expert expected;
    # P(miss both) = C(2,2)/C(4,2) = 1/6 -> 5/6 of a token
    assert expected_experts(1, 4, 2, 2) == pytest.approx(1.0)
    assert expected_tokens(1, 4, 2, 2) == pytest.approx(5 / 6)
    assert expected_experts(1, 128, 8, 128) == pytest.approx(8)  # one token: exactly k distinct experts
    assert expected_tokens(9, 128, 8, 128) == pytest.approx(9)  # ep = 1: every token
    # Qwen3-30B-A3B, 16 tokens, ep 1: 128 * (1 - (120/128)^16) = 82.42 experts, far below balanced's 128
    assert expected_experts(16, 128, 8, 128) == pytest.approx(82.4225, abs=1e-4)
    assert expected_loads(16, 128, 8, 1) == (RankLoad(16, 128, 82),)
    assert expected_loads(0, 128, 8, 2) == (RankLoad(0, 0, 0),) * 2


@pytest.mark.parametrize("n, e, k, ep", [(5, 16, 4, 4), (3, 10, 2, 4), (40, 64, 6, 2)])
def test_uniform_sampler_matches_the_closed_forms(n, e, k, ep):
    rng = np.random.default_rng(7)
    trials = 3000
    draws = np.array([[(l.tokens, l.pairs, l.experts) for l in sample_loads(n, e, k, ep, rng)]
                      for _ in range(trials)], dtype=float)  # trials x ranks x 3
    assert (draws[:, :, 1].sum(axis=1) == n * k).all()  # every token's k experts are distinct and placed
    for r, (a, b) in enumerate(expert_ranges(e, ep)):
        c = b - a
        for j, want in ((0, expected_tokens(n, e, k, c)), (1, n * k * c / e), (2, expected_experts(n, e, k, c))):
            got = draws[:, r, j]
            se = max(got.std(ddof=1) / np.sqrt(trials), 1e-12)
            assert abs(got.mean() - want) < 4 * se + 1e-9, (r, j, got.mean(), want, se)


def test_one_token_hits_exactly_k_distinct_experts():
    rng = np.random.default_rng(1)
    for _ in range(50):
        loads = sample_loads(1, 12, 5, 3, rng)
        assert sum(l.experts for l in loads) == 5 == sum(l.pairs for l in loads)


def test_random_policies_are_seeded():
    a, b, c = (ExpertRouter(128, 8, 2, Routing("uniform", seed=s)) for s in (3, 3, 4))
    seq_a = [a.route(n) for n in (1, 5, 64)]
    assert seq_a == [b.route(n) for n in (1, 5, 64)]
    assert seq_a != [c.route(n) for n in (1, 5, 64)]
    assert ExpertRouter(128, 8, 2).route(16) == balanced_loads(16, 128, 8, 2)  # the default policy
    from llmsim.config.model import load_model_spec
    from conftest import ROOT
    m = load_model_spec(ROOT / "configs" / "model", "Qwen/Qwen3-30B-A3B-Instruct-2507")
    assert ExpertRouter.for_model(m, 2).route(16) == balanced_loads(16, 128, 8, 2)
    assert ExpertRouter(128, 8, 2, Routing("expected")).route(16) == expected_loads(16, 128, 8, 2)


def test_skewed_popularity_concentrates_the_experts():
    n, e, k, ep, trials = 8, 64, 4, 2, 400
    flat = ExpertRouter(e, k, ep, Routing("skewed", seed=2, zipf_exponent=0.0))
    steep = ExpertRouter(e, k, ep, Routing("skewed", seed=2, zipf_exponent=1.5))
    mean = lambda r: np.mean([sum(l.experts for l in r.route(n)) for _ in range(trials)])
    want = e * (1 - ((e - k) / e) ** n)  # exponent 0 is the uniform policy
    assert mean(flat) == pytest.approx(want, rel=0.03)
    assert mean(steep) < 0.75 * want  # popular experts are shared by many tokens


def test_bad_policy_and_degrees():
    with pytest.raises(ValueError, match="routing policy"):
        Routing("zipf")
    with pytest.raises(ValueError):
        ExpertRouter(8, 9, 1)
    assert Routing("skewed", seed=1, zipf_exponent=1.2).describe() == "skewed (Zipf exponent 1.2, seed 1)"


def test_reference_policy_is_llmservingsim_balanced():
    from llmsim.perf.routing import reference_loads
    # Qwen3-30B-A3B on 2 EP ranks: n k / ep rows, experts capped at 64, tokens n (1 - (1/2)^8) rounded
    assert reference_loads(1, 128, 8, 2) == (RankLoad(1, 4, 4),) * 2
    assert reference_loads(100, 128, 8, 2) == (RankLoad(100, 400, 64),) * 2
    assert reference_loads(7, 128, 8, 1) == (RankLoad(7, 56, 56),)
    # Python's round is half to even: 5 x 1 / 2 = 2.5 -> 2 rows and experts; 5 x (1 - 1/2) = 2.5 -> 2 tokens
    assert reference_loads(5, 8, 1, 2) == (RankLoad(2, 2, 2),) * 2
    assert reference_loads(3, 8, 1, 2) == (RankLoad(2, 2, 2),) * 2  # 1.5 -> 2
    assert ExpertRouter(8, 1, 2, Routing("reference")).route(5) == reference_loads(5, 8, 1, 2)
