"""Request traces in the reference JSONL format, with line-numbered errors."""
import json
from pathlib import Path

from .errors import InputError
from .config._fields import _no_constant
from .request import Request


def _int_field(path, lineno, obj, key, minimum, where=""):
    if key not in obj:
        raise InputError(f"{path}: line {lineno}: missing field '{where}{key}'")
    v = obj[key]
    if isinstance(v, bool) or not isinstance(v, int):
        raise InputError(f"{path}: line {lineno}: field '{where}{key}' must be an integer, got {v!r}")
    if v < minimum:
        raise InputError(f"{path}: line {lineno}: field '{where}{key}' must be >= {minimum}, got {v}")
    return v


def _ids(path, lineno, obj, key):
    v = obj.get(key)
    if v is None:
        return None
    if not isinstance(v, list) or not set(map(type, v)) <= {int}:  # JSON ints (a bool's type is bool)
        raise InputError(f"{path}: line {lineno}: field '{key}' must be a list of integers")
    return v


def _flat(path, lineno, obj, rid, with_token_ids, arrival, where="") -> Request:
    prompt = _int_field(path, lineno, obj, "input_toks", 1, where)
    output = _int_field(path, lineno, obj, "output_toks", 1, where)
    ids = None
    if with_token_ids:
        inp, out = _ids(path, lineno, obj, "input_tok_ids"), _ids(path, lineno, obj, "output_tok_ids")
        if inp is not None:
            ids = tuple(inp) + tuple(out or ())
    return Request(id=rid, arrival_ns=arrival, prompt_len=prompt, output_len=output, token_ids=ids)


def _session(path, lineno, obj, first_id, with_token_ids) -> list[Request]:
    """An agentic session: only its first call is queued; each later call is released by the
    engine when the previous one finishes, after that call's tool_duration_ns."""
    arrival = _int_field(path, lineno, obj, "arrival_time_ns", 0)
    subs = obj["sub_requests"]
    if not isinstance(subs, list):
        raise InputError(f"{path}: line {lineno}: field 'sub_requests' must be a list")
    calls = []
    for k, sub in enumerate(subs):
        if not isinstance(sub, dict):
            raise InputError(f"{path}: line {lineno}: sub_requests[{k}] must be an object")
        req = _flat(path, lineno, sub, first_id + k, with_token_ids, arrival if k == 0 else -1, f"sub_requests[{k}].")
        req.tool_duration_ns = _int_field(path, lineno, {"tool_duration_ns": 0, **sub}, "tool_duration_ns", 0,
                                          f"sub_requests[{k}].")
        if calls:
            calls[-1].next_in_session = req
        calls.append(req)
    return calls[:1]


def _lines(path, fh):
    lineno = 0
    try:
        for lineno, line in enumerate(fh, 1):
            yield lineno, line
    except UnicodeDecodeError:
        raise InputError(f"{path}: line {lineno + 1}: not UTF-8 text") from None


def load_workload(path: str | Path, num_reqs: int = 0, with_token_ids: bool = True) -> list[Request]:
    """Requests in (arrival, id) order. num_reqs > 0 keeps the first num_reqs lines."""
    path = str(path)
    try:
        fh = open(path, encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"{path}: dataset file not found") from None
    except OSError as e:
        raise InputError(f"{path}: cannot read dataset ({e.strerror})") from None
    reqs: list[Request] = []  # flat requests and the first call of each session
    next_id = lines = 0
    with fh:
        for lineno, line in _lines(path, fh):
            if not line.strip():
                continue
            if num_reqs and lines >= num_reqs:
                break
            try:
                obj = json.loads(line, parse_constant=_no_constant)
            except (json.JSONDecodeError, ValueError) as e:
                if not isinstance(e, json.JSONDecodeError):
                    raise InputError(f"{path}: line {lineno}: invalid JSON ({e})") from None
                raise InputError(f"{path}: line {lineno}: invalid JSON ({e.msg})") from None
            if not isinstance(obj, dict):
                raise InputError(f"{path}: line {lineno}: expected a JSON object")
            if "sub_requests" in obj:
                reqs.extend(_session(path, lineno, obj, next_id, with_token_ids))
                next_id += len(obj["sub_requests"])
                lines += 1
                continue
            lines += 1
            reqs.append(_flat(path, lineno, obj, next_id, with_token_ids,
                              _int_field(path, lineno, obj, "arrival_time_ns", 0)))
            next_id += 1
    if not reqs:
        raise InputError(f"{path}: no requests in dataset")
    reqs.sort(key=lambda r: (r.arrival_ns, r.id))
    return reqs


def resample_workload(source: list[Request], n: int, rate_per_s: float, seed: int = 0,
                      keep_token_ids: bool = False) -> list[Request]:
    """n requests whose (prompt, output) lengths are drawn from `source`, with Poisson arrivals at
    rate_per_s (the gap is drawn before each request, as the reference's generator does).
    Without keep_token_ids no request carries ids, so there are no prefix hits; with it a drawn
    request keeps its source's ids (repeats then hit the prefix cache)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(source), size=n)
    arrivals = np.cumsum(rng.exponential(1e9 / rate_per_s, size=n)).astype(np.int64)
    return [Request(id=i, arrival_ns=int(t), prompt_len=source[k].prompt_len, output_len=source[k].output_len,
                    token_ids=source[k].token_ids if keep_token_ids else None)
            for i, (k, t) in enumerate(zip(picks, arrivals))]
