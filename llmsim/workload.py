"""Request traces in the reference JSONL format, with line-numbered errors."""
import json
from pathlib import Path

from .errors import InputError
from .request import Request


def _int_field(path, lineno, obj, key, minimum):
    if key not in obj:
        raise InputError(f"{path}: line {lineno}: missing field '{key}'")
    v = obj[key]
    if isinstance(v, bool) or not isinstance(v, int):
        raise InputError(f"{path}: line {lineno}: field '{key}' must be an integer, got {v!r}")
    if v < minimum:
        raise InputError(f"{path}: line {lineno}: field '{key}' must be >= {minimum}, got {v}")
    return v


def _ids(path, lineno, obj, key):
    v = obj.get(key)
    if v is None:
        return None
    if not isinstance(v, list) or not all(isinstance(x, int) and not isinstance(x, bool) for x in v):
        raise InputError(f"{path}: line {lineno}: field '{key}' must be a list of integers")
    return v


def load_workload(path: str | Path, num_reqs: int = 0, with_token_ids: bool = True) -> list[Request]:
    """Requests in (arrival, id) order. num_reqs > 0 keeps the first num_reqs lines."""
    path = str(path)
    try:
        fh = open(path)
    except FileNotFoundError:
        raise InputError(f"{path}: dataset file not found") from None
    except OSError as e:
        raise InputError(f"{path}: cannot read dataset ({e.strerror})") from None
    reqs: list[Request] = []
    with fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            if num_reqs and len(reqs) >= num_reqs:
                break
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise InputError(f"{path}: line {lineno}: invalid JSON ({e.msg})") from None
            if not isinstance(obj, dict):
                raise InputError(f"{path}: line {lineno}: expected a JSON object")
            if "sub_requests" in obj:
                raise InputError(f"{path}: line {lineno}: agentic sessions (sub_requests) are not supported yet")
            prompt = _int_field(path, lineno, obj, "input_toks", 1)
            output = _int_field(path, lineno, obj, "output_toks", 1)
            arrival = _int_field(path, lineno, obj, "arrival_time_ns", 0)
            ids = None
            if with_token_ids:
                inp, out = _ids(path, lineno, obj, "input_tok_ids"), _ids(path, lineno, obj, "output_tok_ids")
                if inp is not None:
                    ids = tuple(inp) + tuple(out or ())
            reqs.append(Request(id=len(reqs), arrival_ns=arrival, prompt_len=prompt, output_len=output, token_ids=ids))
    if not reqs:
        raise InputError(f"{path}: no requests in dataset")
    reqs.sort(key=lambda r: (r.arrival_ns, r.id))
    return reqs


def resample_workload(source: list[Request], n: int, rate_per_s: float, seed: int = 0) -> list[Request]:
    """n requests whose (prompt, output) lengths are drawn from `source`, with Poisson arrivals at
    rate_per_s (the gap is drawn before each request, as the reference's generator does).
    No token ids, so no prefix hits."""
    import numpy as np

    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(source), size=n)
    arrivals = np.cumsum(rng.exponential(1e9 / rate_per_s, size=n)).astype(np.int64)
    return [Request(id=i, arrival_ns=int(t), prompt_len=source[k].prompt_len, output_len=source[k].output_len)
            for i, (k, t) in enumerate(zip(picks, arrivals))]
