"""Expert routing models: where a batch's tokens land on the expert-parallel (EP) ranks.

A batch of n tokens, each routed to top_k distinct experts of E, on ep ranks. Experts are placed
as vLLM's default (linear) expert map does: rank r holds a contiguous range, the first E % ep
ranks one expert more (determine_expert_map). Per rank the models give a RankLoad:

- tokens:  tokens with at least one of their experts on the rank (what a dispatching all-to-all
           sends there, each such token once);
- pairs:   (token, expert) assignments on the rank: the rows its grouped expert GEMMs compute;
- experts: distinct experts it activates: the expert weights it reads (that is what makes a
           small batch's expert block cost what it costs).

Policies (Routing.policy):

- "balanced": a perfectly balanced gate with no collisions. The n*top_k pairs are split over
  the ranks in proportion to their expert counts (floor of the share, the leftover pairs one each
  to the ranks with the largest remainders, lower rank first on ties); on a rank every pair takes
  an expert not yet used and comes from a token not yet there until either runs out:
  experts = min(E_r, pairs), tokens = min(n, pairs). With E % ep == 0 the fullest rank has
  min(E/ep, ceil(n*top_k/ep)) experts. Deterministic; an upper bound on experts for a given n.
- "expected": the expectation of "uniform" in closed form, rounded (half up) and at least 1 on
  every rank when n > 0: one token misses a given expert with probability (E-k)/E, so
  E[experts] = E_r * (1 - ((E-k)/E)^n); it misses all of a rank's E_r experts with probability
  C(E-E_r, k)/C(E, k), so E[tokens] = n * (1 - C(E-E_r, k)/C(E, k)); E[pairs] = n*k*E_r/E.
  Deterministic.
- "uniform": each token draws top_k distinct experts uniformly at random (a seeded generator:
  the same seed and the same sequence of batches give the same loads).
- "skewed": as uniform, but expert e is drawn with probability proportional to its popularity
  1 / rank(e)^s (a Zipf law with exponent s = Routing.zipf_exponent over a seeded random ranking of
  the experts, so the popular ones fall on random EP ranks); a token's top_k distinct experts are
  drawn successively without replacement in proportion to popularity (Gumbel top-k).

- "reference": LLMServingSim 2.0's BALANCED (commit 5daddb2, serving/core/gate_function.py), for a
  reference-compatible mode: every rank gets experts = min(round(n*k/ep), E // ep), tokens =
  round(n * (1 - ((ep-1)/ep)^k)) (k independent draws of a rank) and pairs = round(n*k/ep), with
  Python's round (half to even). The reference looks moe.csv up at those tokens (token key
  "tokens") and n is the rank's own padded batch, not the gathered one.

None of these is a trained gate: real routers are load-balanced in training (an auxiliary loss)
but not uniform, and they correlate across layers and tokens of one request. The timers use one
draw per batch for every MoE layer of the block.
"""
from __future__ import annotations

from dataclasses import dataclass
from math import comb
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # numpy is imported where a draw needs it: dense runs do not pay its import
    import numpy as np

POLICIES = ("balanced", "expected", "uniform", "skewed", "reference")


@dataclass(frozen=True)
class RankLoad:
    tokens: int
    pairs: int
    experts: int


@dataclass(frozen=True)
class Routing:
    """A routing model as the engine options and the output metadata state it."""
    policy: str = "balanced"
    seed: int = 0  # uniform, skewed
    zipf_exponent: float = 1.0  # skewed

    def __post_init__(self):
        if self.policy not in POLICIES:
            raise ValueError(f"expert routing policy '{self.policy}' (choose from {', '.join(POLICIES)})")
        if not self.zipf_exponent >= 0:
            raise ValueError(f"zipf exponent must be >= 0, got {self.zipf_exponent}")

    def describe(self) -> str:
        if self.policy == "skewed":
            return f"skewed (Zipf exponent {self.zipf_exponent:g}, seed {self.seed})"
        if self.policy == "reference":
            return "reference (LLMServingSim 2.0 BALANCED)"
        return f"uniform (seed {self.seed})" if self.policy == "uniform" else self.policy


def expert_ranges(num_experts: int, ep: int) -> list[tuple[int, int]]:
    """[start, end) of each EP rank's experts: vLLM's linear expert map."""
    if ep < 1 or num_experts < ep:
        raise ValueError(f"{num_experts} experts cannot be spread over {ep} EP ranks")
    base, rem = divmod(num_experts, ep)
    starts = [r * base + min(r, rem) for r in range(ep + 1)]
    return [(starts[r], starts[r + 1]) for r in range(ep)]


def _counts(num_experts: int, ep: int) -> list[int]:
    return [b - a for a, b in expert_ranges(num_experts, ep)]


def balanced_loads(tokens: int, num_experts: int, top_k: int, ep: int) -> tuple[RankLoad, ...]:
    counts = _counts(num_experts, ep)
    total = tokens * top_k
    share = [total * c // num_experts for c in counts]
    rest = [total * c % num_experts for c in counts]
    for r in sorted(range(ep), key=lambda r: (-rest[r], r))[: total - sum(share)]:
        share[r] += 1
    return tuple(RankLoad(min(tokens, p), p, min(c, p)) for c, p in zip(counts, share))


def reference_loads(tokens: int, num_experts: int, top_k: int, ep: int) -> tuple[RankLoad, ...]:
    pairs = tokens * top_k / ep
    hit = 1.0 if ep <= 1 else 1.0 - ((ep - 1) / ep) ** top_k
    load = RankLoad(int(round(tokens * hit)), int(round(pairs)), min(int(round(pairs)), max(1, num_experts // ep)))
    return (load,) * ep


def expected_experts(tokens: int, num_experts: int, top_k: int, rank_experts: int) -> float:
    """E[distinct experts hit among a rank's rank_experts] under uniform top-k routing."""
    return rank_experts * (1.0 - ((num_experts - top_k) / num_experts) ** tokens)


def expected_tokens(tokens: int, num_experts: int, top_k: int, rank_experts: int) -> float:
    """E[tokens with at least one expert on a rank holding rank_experts] under uniform top-k routing."""
    return tokens * (1.0 - comb(num_experts - rank_experts, top_k) / comb(num_experts, top_k))


def expected_loads(tokens: int, num_experts: int, top_k: int, ep: int) -> tuple[RankLoad, ...]:
    if tokens <= 0:
        return tuple(RankLoad(0, 0, 0) for _ in range(ep))
    out = []
    for c in _counts(num_experts, ep):
        t = expected_tokens(tokens, num_experts, top_k, c)
        e = expected_experts(tokens, num_experts, top_k, c)
        p = tokens * top_k * c / num_experts
        out.append(RankLoad(max(1, int(t + 0.5)), max(1, int(p + 0.5)), max(1, int(e + 0.5))))
    return tuple(out)


def sample_loads(tokens: int, num_experts: int, top_k: int, ep: int, rng: np.random.Generator,
                 log_popularity: np.ndarray | None = None) -> tuple[RankLoad, ...]:
    """One draw: each token takes top_k distinct experts, uniformly or (log_popularity given) in
    proportion to exp(log_popularity) without replacement (the Gumbel top-k trick)."""
    import numpy as np

    if tokens <= 0:
        return tuple(RankLoad(0, 0, 0) for _ in range(ep))
    keys = rng.gumbel(size=(tokens, num_experts))
    if log_popularity is not None:
        keys += log_popularity
    picked = np.argpartition(-keys, top_k - 1, axis=1)[:, :top_k] if top_k < num_experts else \
        np.tile(np.arange(num_experts), (tokens, 1))
    ranges = expert_ranges(num_experts, ep)
    owner = np.empty(num_experts, dtype=np.int64)
    for r, (a, b) in enumerate(ranges):
        owner[a:b] = r
    per_expert = np.bincount(picked.ravel(), minlength=num_experts)
    hit = np.zeros((tokens, ep), dtype=bool)
    hit[np.arange(tokens)[:, None], owner[picked]] = True
    reached = hit.sum(axis=0)
    return tuple(RankLoad(int(reached[r]), int(per_expert[a:b].sum()), int((per_expert[a:b] > 0).sum()))
                 for r, (a, b) in enumerate(ranges))


def zipf_log_popularity(num_experts: int, exponent: float, rng: np.random.Generator) -> np.ndarray:
    """log of 1 / rank^s, the ranks 1..E assigned to the experts in a random order."""
    import numpy as np

    ranks = rng.permutation(num_experts) + 1
    return -exponent * np.log(ranks.astype(float))


class ExpertRouter:
    """A routing model bound to one model's experts and one EP degree. route(n) gives the per-rank
    loads of a batch of n tokens; the random policies draw from their own seeded generator, so a
    run is reproducible."""

    def __init__(self, num_experts: int, top_k: int, ep: int, routing: Routing = Routing()):
        if not 1 <= top_k <= num_experts:
            raise ValueError(f"top_k {top_k} must be in 1..{num_experts}")
        expert_ranges(num_experts, ep)  # validates ep
        self.num_experts, self.top_k, self.ep, self.routing = num_experts, top_k, ep, routing
        import numpy as np

        self._rng = np.random.default_rng(routing.seed)
        self._logp = (zipf_log_popularity(num_experts, routing.zipf_exponent, self._rng)
                      if routing.policy == "skewed" else None)
        self._cache: dict[int, tuple[RankLoad, ...]] = {}

    @classmethod
    def for_model(cls, model, ep: int = 1, routing: Routing = Routing()) -> "ExpertRouter":
        """The router of a ModelSpec with experts (model.moe)."""
        return cls(model.moe.num_experts, model.moe.top_k, ep, routing)

    @property
    def deterministic(self) -> bool:
        """Whether route(n) depends on n alone (else it draws from the seeded generator)."""
        return self.routing.policy in _DETERMINISTIC

    def route(self, tokens: int) -> tuple[RankLoad, ...]:
        p = self.routing.policy
        if p in _DETERMINISTIC:  # deterministic in n: cached
            loads = self._cache.get(tokens)
            if loads is None:
                fn = _DETERMINISTIC[p]
                loads = self._cache[tokens] = fn(tokens, self.num_experts, self.top_k, self.ep)
            return loads
        return sample_loads(tokens, self.num_experts, self.top_k, self.ep, self._rng, self._logp)


_DETERMINISTIC = {"balanced": balanced_loads, "expected": expected_loads, "reference": reference_loads}
