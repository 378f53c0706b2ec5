"""Request routing across instances (the reference's LOAD / RR / RAND policies).

LOAD: the instance with the fewest waiting (weighted 4x; requests loading their KV count as
waiting) plus running requests, relative to its max_num_seqs; ties go round-robin. RR:
round-robin in arrival order. RAND: uniformly at random, from random.Random(seed) (seed 42 by
default), so a run is reproducible.
"""
import random

DEFAULT_SEED = 42


class Router:
    def __init__(self, schedulers, policy: str = "LOAD", seed: int = DEFAULT_SEED):
        self.schedulers = schedulers
        self.policy = policy
        self._next = 0
        self._rng = random.Random(seed)

    def pick(self) -> int:
        n = len(self.schedulers)
        if n == 1:
            return 0
        if self.policy == "RR":
            i = self._next % n
        elif self.policy == "RAND":
            return self._rng.randrange(n)
        else:  # LOAD: fewest waiting (weighted 4x) + running, scaled by max_num_seqs; rotate ties
            best, best_score = None, None
            for k in range(n):
                i = (self._next + k) % n
                s = self.schedulers[i]
                # requests waiting for their KV (disaggregated decode) sit in vLLM's waiting queue too
                score = 4 * (len(s.waiting) + len(getattr(s, "loading", ()))) + len(s.running)
                if s.max_num_seqs != float("inf") and s.max_num_seqs > 0:
                    score /= s.max_num_seqs
                if best_score is None or score < best_score:
                    best, best_score = i, score
            i = best
        self._next = i + 1
        return i
