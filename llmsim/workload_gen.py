"""Synthetic workloads in the reference JSONL format: arrivals, lengths, sessions, shared prefixes.

Pure functions of a seed (numpy's PCG64): the same arguments give the same lines, byte for byte.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass

import numpy as np

from .errors import InputError

MAX_TOKENS = 10_000_000


@dataclass(frozen=True)
class Lengths:
    """A token-length distribution: fixed:N, uniform:LO:HI (inclusive), normal:MEAN:STD,
    lognormal:MEAN:SIGMA (MEAN the distribution's mean, SIGMA the log-space spread). Draws are
    rounded and clamped to [1, max]."""
    kind: str
    params: tuple
    max_tokens: int = MAX_TOKENS

    def mean(self) -> float:
        p = self.params
        return {"fixed": lambda: p[0], "uniform": lambda: (p[0] + p[1]) / 2, "normal": lambda: p[0],
                "lognormal": lambda: p[0]}[self.kind]()

    def std(self) -> float:
        p = self.params
        if self.kind == "fixed":
            return 0.0
        if self.kind == "uniform":
            n = p[1] - p[0] + 1
            return math.sqrt((n * n - 1) / 12)
        if self.kind == "normal":
            return p[1]
        return p[0] * math.sqrt(math.expm1(p[1] ** 2))

    def draw(self, rng: np.random.Generator, n: int) -> np.ndarray:
        p = self.params
        if self.kind == "fixed":
            x = np.full(n, p[0], dtype=float)
        elif self.kind == "uniform":
            x = rng.integers(int(p[0]), int(p[1]) + 1, size=n).astype(float)
        elif self.kind == "normal":
            x = rng.normal(p[0], p[1], size=n)
        else:
            mu = math.log(p[0]) - p[1] ** 2 / 2  # so that the mean is p[0]
            x = rng.lognormal(mu, p[1], size=n)
        return np.clip(np.rint(x), 1, self.max_tokens).astype(np.int64)


_ARITY = {"fixed": 1, "uniform": 2, "normal": 2, "lognormal": 2}


def parse_lengths(spec: str, what: str) -> Lengths:
    kind, *rest = spec.split(":")
    if kind not in _ARITY or len(rest) != _ARITY[kind]:
        raise InputError(f"{what} {spec!r}: expected fixed:N, uniform:LO:HI, normal:MEAN:STD or lognormal:MEAN:SIGMA")
    try:
        params = tuple(float(x) for x in rest)
    except ValueError:
        raise InputError(f"{what} {spec!r}: the parameters must be numbers") from None
    if not all(math.isfinite(x) for x in params):
        raise InputError(f"{what} {spec!r}: the parameters must be finite")
    ok = {"fixed": lambda a: 1 <= a[0] <= MAX_TOKENS and a[0] == int(a[0]),
          "uniform": lambda a: 1 <= a[0] <= a[1] <= MAX_TOKENS and a[0] == int(a[0]) and a[1] == int(a[1]),
          "normal": lambda a: 1 <= a[0] <= MAX_TOKENS and 0 <= a[1] <= MAX_TOKENS,
          "lognormal": lambda a: 1 <= a[0] <= MAX_TOKENS and 0 < a[1] <= 5}[kind](params)
    if not ok:
        raise InputError(f"{what} {spec!r}: out of range (token counts are whole numbers in [1, {MAX_TOKENS}], "
                         "LO <= HI, lognormal SIGMA in (0, 5])")
    return Lengths(kind, params)


def gaps_ns(rng: np.random.Generator, n: int, rate_per_s: float, cv: float) -> np.ndarray:
    """Inter-arrival gaps: Gamma with mean 1/rate and the given coefficient of variation
    (cv = 1 is Poisson; above 1 bursty, below 1 regular; 0 evenly spaced)."""
    mean_ns = 1e9 / rate_per_s
    if cv == 0:
        return np.full(n, mean_ns)
    shape = 1.0 / (cv * cv)
    return rng.gamma(shape, mean_ns / shape, size=n)


@dataclass(frozen=True)
class Spec:
    num: int  # requests, or sessions when turns > 1
    rate_per_s: float
    cv: float = 1.0
    input: Lengths = Lengths("fixed", (128.0,))
    output: Lengths = Lengths("fixed", (128.0,))
    turns: int = 1  # calls per session (agentic sessions: sub_requests)
    tool_ms: float = 0.0  # between a session's calls
    prefix_tokens: int = 0  # a shared prefix at the start of every prompt (token ids written)
    prefix_groups: int = 1  # distinct prefixes, drawn uniformly
    vocab: int = 32_000
    seed: int = 0
    resample: tuple | None = None  # (input, output) pairs to draw from instead of the distributions


def generate(spec: Spec):
    """The workload's JSONL lines (str, each ending in a newline)."""
    rng = np.random.default_rng(spec.seed)
    arrivals = np.cumsum(gaps_ns(rng, spec.num, spec.rate_per_s, spec.cv)).astype(np.int64)
    calls = spec.num * spec.turns
    if spec.resample is not None:
        pairs = np.asarray(spec.resample, dtype=np.int64)
        picks = rng.integers(0, len(pairs), size=calls)
        ins, outs = pairs[picks, 0], pairs[picks, 1]
    else:
        ins, outs = spec.input.draw(rng, calls), spec.output.draw(rng, calls)
    if spec.prefix_tokens:
        ins = np.maximum(ins, spec.prefix_tokens + 1)  # at least one token of its own after the prefix
        prefixes = rng.integers(0, spec.vocab, size=(spec.prefix_groups, spec.prefix_tokens))
        group = rng.integers(0, spec.prefix_groups, size=calls)
    tool_ns = int(round(spec.tool_ms * 1e6))

    def call(k: int) -> dict:
        obj = {"input_toks": int(ins[k]), "output_toks": int(outs[k])}
        if spec.prefix_tokens:
            own = rng.integers(0, spec.vocab, size=int(ins[k]) - spec.prefix_tokens)
            obj["input_tok_ids"] = prefixes[group[k]].tolist() + own.tolist()
        return obj

    for i, t in enumerate(arrivals.tolist()):
        if spec.turns == 1:
            line = {**call(i), "arrival_time_ns": t}
        else:
            subs = [{**call(i * spec.turns + j), "tool_duration_ns": tool_ns} for j in range(spec.turns)]
            line = {"session_id": f"session_{i}", "arrival_time_ns": t, "sub_requests": subs}
        yield json.dumps(line, separators=(",", ":")) + "\n"
