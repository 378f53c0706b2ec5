"""Request traces in the reference JSONL format, with line-numbered errors."""
import json
from pathlib import Path

from .errors import InputError
from .config._fields import MAX_INPUT_BYTES, _no_constant, check_regular_file
from .request import Request


MAX_INT = 2 ** 62  # ns (146 years) and token counts: beyond it a value is a unit mix-up


def _int_field(path, at, obj, key, minimum, where="", maximum=MAX_INT):
    if key not in obj:
        raise InputError(f"{path}: {at}: missing field '{where}{key}'")
    v = obj[key]
    if isinstance(v, bool) or not isinstance(v, int):
        raise InputError(f"{path}: {at}: field '{where}{key}' must be an integer, got {v!r}")
    if v < minimum:
        raise InputError(f"{path}: {at}: field '{where}{key}' must be >= {minimum}, got {v}")
    if v > maximum:
        raise InputError(f"{path}: {at}: field '{where}{key}' must be <= {maximum}, got {v}")
    return v


def _ids(path, at, obj, key):
    v = obj.get(key)
    if v is None:
        return None
    if not isinstance(v, list) or not set(map(type, v)) <= {int}:  # JSON ints (a bool's type is bool)
        raise InputError(f"{path}: {at}: field '{key}' must be a list of integers")
    return v


def _flat(path, at, obj, rid, with_token_ids, arrival, where="") -> Request:
    prompt = _int_field(path, at, obj, "input_toks", 1, where)
    output = _int_field(path, at, obj, "output_toks", 1, where)
    ids = None
    if with_token_ids:
        inp, out = _ids(path, at, obj, "input_tok_ids"), _ids(path, at, obj, "output_tok_ids")
        if inp is not None:
            ids = tuple(inp) + tuple(out or ())
    return Request(id=rid, arrival_ns=arrival, prompt_len=prompt, output_len=output, token_ids=ids)


def _session(path, at, obj, first_id, with_token_ids) -> list[Request]:
    """An agentic session: only its first call is queued; each later call is released by the
    engine when the previous one finishes, after that call's tool_duration_ns."""
    arrival = _int_field(path, at, obj, "arrival_time_ns", 0)
    subs = obj["sub_requests"]
    if not isinstance(subs, list):
        raise InputError(f"{path}: {at}: field 'sub_requests' must be a list")
    calls = []
    for k, sub in enumerate(subs):
        if not isinstance(sub, dict):
            raise InputError(f"{path}: {at}: sub_requests[{k}] must be an object")
        req = _flat(path, at, sub, first_id + k, with_token_ids, arrival if k == 0 else -1, f"sub_requests[{k}].")
        req.tool_duration_ns = _int_field(path, at, {"tool_duration_ns": 0, **sub}, "tool_duration_ns", 0,
                                          f"sub_requests[{k}].")
        if calls:
            calls[-1].next_in_session = req
        calls.append(req)
    return calls[:1]


def _lines(path, fh):
    lineno = 0
    readline = fh.readline
    try:
        while True:
            line = readline(MAX_INPUT_BYTES)
            if not line:
                return
            lineno += 1
            if len(line) >= MAX_INPUT_BYTES and not line.endswith("\n"):
                raise InputError(f"{path}: line {lineno}: longer than {MAX_INPUT_BYTES >> 20} MB")
            yield lineno, line
    except UnicodeDecodeError:
        raise InputError(f"{path}: line {lineno + 1}: not UTF-8 text") from None


def _add(reqs: list[Request], path, at: str, obj: dict, next_id: int, with_token_ids: bool) -> int:
    """Append one trace entry's request (or a session's first call); returns the next free id."""
    if "sub_requests" in obj:
        reqs.extend(_session(path, at, obj, next_id, with_token_ids))
        return next_id + len(obj["sub_requests"])
    reqs.append(_flat(path, at, obj, next_id, with_token_ids, _int_field(path, at, obj, "arrival_time_ns", 0)))
    return next_id + 1


def requests_from_records(records, with_token_ids: bool = True, source: str = "workload") -> list[Request]:
    """Requests from trace entries in the JSONL format, already parsed (dicts): for scripts that
    build a workload in code. Errors name the entry ("item 3")."""
    reqs: list[Request] = []
    next_id = 0
    for k, obj in enumerate(records, 1):
        if not isinstance(obj, dict):
            raise InputError(f"{source}: item {k}: expected a dict (input_toks, output_toks, arrival_time_ns)")
        next_id = _add(reqs, source, f"item {k}", obj, next_id, with_token_ids)
    if not reqs:
        raise InputError(f"{source}: no requests")
    reqs.sort(key=lambda r: (r.arrival_ns, r.id))
    return reqs


def load_workload(path: str | Path, num_reqs: int = 0, with_token_ids: bool = True) -> list[Request]:
    """Requests in (arrival, id) order. num_reqs > 0 keeps the first num_reqs lines."""
    path = str(path)
    check_regular_file(path, "dataset")
    try:
        fh = open(path, encoding="utf-8-sig")
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
            except RecursionError:
                raise InputError(f"{path}: line {lineno}: invalid JSON (nested too deeply)") from None
            except (json.JSONDecodeError, ValueError) as e:
                if not isinstance(e, json.JSONDecodeError):
                    raise InputError(f"{path}: line {lineno}: invalid JSON ({e})") from None
                raise InputError(f"{path}: line {lineno}: invalid JSON ({e.msg})") from None
            if not isinstance(obj, dict):
                raise InputError(f"{path}: line {lineno}: expected a JSON object")
            lines += 1
            next_id = _add(reqs, path, f"line {lineno}", obj, next_id, with_token_ids)
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
