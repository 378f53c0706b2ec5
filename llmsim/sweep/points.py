"""A sweep's points: each one's cluster config, engine arguments and workload, built from the base
and the point's axis values, checked before anything runs, and named by a stable id."""
from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import dataclass, fields
from pathlib import Path

from ..config.cluster import cluster_from_dict
from ..config.engine import DTYPE_BYTES, EngineArgs
from ..graph.dp_step import ALL2ALL_BACKENDS
from ..perf.routing import POLICIES
from ..errors import InputError
from ..workload import load_workload
from ..workload_gen import Spec, parse_lengths
from .spec import CLUSTER_NODE, CLUSTER_TOP, SweepSpec

_ENGINE_TYPES = {f.name: type(f.default) for f in fields(EngineArgs)}
_ENGINE_TYPES["dtype"] = str  # default None: the model's dtype
_ENGINE_CHOICES = {"dtype": set(DTYPE_BYTES), "kv_cache_dtype": {"auto", "fp8"},
                   "timing": {"auto", "profile", "roofline"}, "kv_capacity": {"vllm", "reference"},
                   "batch_formation": {"vllm", "reference"}, "stage_transfer": {"vllm", "reference"},
                   "dp_sync": {"vllm", "reference"}, "moe_routing": set(POLICIES),
                   "all2all_backend": set(ALL2ALL_BACKENDS)}


@dataclass(frozen=True)
class Point:
    index: int  # position in the spec's expansion (the results' order)
    id: str  # a hash of everything that decides the point's results: the same point resumes
    params: tuple  # ((axis, value), ...)
    cluster: dict
    engine: dict
    workload: dict  # generator parameters, or {"path": ..., "num_requests": ...}

    @property
    def label(self) -> str:
        return describe(self.params)


def describe(params) -> str:
    """`tp_size=2, rate=5`: each axis by its last name unless two axes share it."""
    short = [a.rsplit(".", 1)[-1] for a, _ in params]
    return ", ".join(f"{s if short.count(s) == 1 else a}={v}" for s, (a, v) in zip(short, params))


def _set(obj: dict, dotted: str, value) -> None:
    *parents, last = dotted.split(".")
    for p in parents:
        obj = obj.setdefault(p, {})
    obj[last] = value


def apply_cluster(base: dict, values: dict) -> dict:
    """The base cluster with the point's cluster-level values on every node / instance. A point
    that sets tp_size or pp_size but not num_npus drops num_npus (it is inferred as tp x pp)."""
    c = copy.deepcopy(base)
    nodes = c.get("nodes") if isinstance(c.get("nodes"), list) else []
    for name, v in values.items():
        if name in CLUSTER_TOP:
            c[name] = v
        elif name in CLUSTER_NODE:
            for node in nodes:
                if name == "num_instances":
                    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                        raise InputError(f"cluster: num_instances: expected an integer >= 1, got {v!r}")
                    if not node.get("instances"):
                        raise InputError("cluster: num_instances: the base node lists no instance to copy")
                    node["instances"] = [copy.deepcopy(node["instances"][0]) for _ in range(v)]
                    node["num_instances"] = v
                else:
                    _set(node, name, v)
    for node in nodes:
        for inst in node.get("instances") or []:
            if not isinstance(inst, dict):
                continue
            for name, v in values.items():
                if name not in CLUSTER_TOP and name not in CLUSTER_NODE:
                    _set(inst, name, v)
            if ("tp_size" in values or "pp_size" in values) and "num_npus" not in values:
                inst.pop("num_npus", None)
    return c


def _no_instance_override(cluster: dict, swept: dict) -> None:
    """An instance key in the cluster config wins over the engine arguments: a swept engine field
    that an instance sets would not change anything."""
    for n, node in enumerate(cluster.get("nodes") or []):
        for i, inst in enumerate(node.get("instances") or [] if isinstance(node, dict) else []):
            hit = sorted(set(swept) & set(inst if isinstance(inst, dict) else ()))
            if hit:
                raise InputError(f"engine.{hit[0]}: the cluster config's nodes[{n}].instances[{i}].{hit[0]} wins over "
                                 "the engine arguments, so this axis would change nothing; remove it from the instance")


def engine_args(engine: dict) -> EngineArgs:
    """EngineArgs from a dict, each value checked as the CLI's options check them."""
    for name, v in engine.items():
        kind = _ENGINE_TYPES[name]
        if v is None and name == "dtype" or kind is type(None):
            continue  # None: the default; a field without a typed default is left to the run's checks
        ok = isinstance(v, bool) if kind is bool else (
            isinstance(v, (int, float)) and not isinstance(v, bool) if kind is float else
            isinstance(v, kind) and not isinstance(v, bool))
        if not ok:
            raise InputError(f"engine.{name}: expected {kind.__name__}, got {v!r}")
        if name in _ENGINE_CHOICES and v not in _ENGINE_CHOICES[name]:
            raise InputError(f"engine.{name}: expected one of {', '.join(sorted(_ENGINE_CHOICES[name]))}, got {v!r}")
        if kind is int and v < (1 if name == "block_size" else 0):
            raise InputError(f"engine.{name}: expected a value >= {1 if name == 'block_size' else 0}, got {v!r}")
        if name == "npu_memory_utilization" and not 0 < v <= 1:
            raise InputError(f"engine.{name}: expected a value in (0, 1], got {v!r}")
    return EngineArgs(**engine)


def _positive(w: dict, key: str, default, kind=(int, float), minimum=0, strict=True):
    v = w.get(key, default)
    if isinstance(v, bool) or not isinstance(v, kind) or v != v or v in (float("inf"), float("-inf")) \
            or v < minimum or (strict and v == minimum):
        rel = ">" if strict else ">="
        whole = "whole " if kind is int else ""
        raise InputError(f"workload.{key}: expected a {whole}number {rel} {minimum}, got {v!r}")
    return v


def workload_spec(w: dict, traces: dict | None = None) -> Spec | None:
    """The generator's Spec for a point's workload (None for a fixed JSONL `path`); checks every value."""
    if "path" in w:
        extra = sorted(set(w) - {"path", "num_requests"})
        if extra:
            raise InputError(f"workload.{extra[0]}: a fixed workload `path` takes only num_requests (a limit)")
        _positive(w, "num_requests", 1, int)
        return None
    arrivals = w.get("arrivals", "poisson")
    if arrivals not in ("poisson", "gamma"):
        raise InputError(f"workload.arrivals: expected poisson or gamma, got {arrivals!r}")
    cv = _positive(w, "cv", 1.0, strict=False)
    if arrivals == "poisson" and cv != 1.0:
        raise InputError("workload.cv: applies to arrivals: gamma (Poisson arrivals have cv 1)")
    resample = None
    if w.get("from_trace") is not None:
        src = w["from_trace"]
        if not isinstance(src, str):
            raise InputError(f"workload.from_trace: expected a JSONL path, got {src!r}")
        traces = {} if traces is None else traces
        if src not in traces:  # read once per sweep, not once per point
            traces[src] = tuple((r.prompt_len, r.output_len) for r in load_workload(src, 0))
        resample = traces[src]
    lengths = {}
    for key, default in (("input_len", "lognormal:512:0.8"), ("output_len", "lognormal:256:0.8")):
        v = w.get(key, default)
        if not isinstance(v, str):
            raise InputError(f"workload.{key}: expected a string such as fixed:128, got {v!r}")
        lengths[key] = parse_lengths(v, f"workload.{key}")
    seed = w.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise InputError(f"workload.seed: expected a whole number >= 0, got {seed!r}")
    return Spec(num=_positive(w, "num_requests", 300, int), rate_per_s=float(_positive(w, "rate", 10.0)), cv=float(cv),
                input=lengths["input_len"], output=lengths["output_len"], turns=_positive(w, "turns", 1, int),
                tool_ms=float(_positive(w, "tool_ms", 0.0, strict=False)),
                prefix_tokens=_positive(w, "shared_prefix", 0, int, strict=False),
                prefix_groups=_positive(w, "prefix_groups", 1, int), seed=seed, resample=resample)


def _file_digest(path: str, cache: dict) -> str:
    if path not in cache:
        try:
            cache[path] = hashlib.sha256(Path(path).read_bytes()).hexdigest()
        except OSError as e:
            raise InputError(f"workload.path: {path}: cannot read ({e.strerror})") from None
    return cache[path]


def point_id(doc: dict) -> str:
    """10 hex digits of the SHA-256 of the point's resolved inputs (canonical JSON)."""
    text = json.dumps(doc, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:10]


def build_points(spec: SweepSpec, check=None) -> list[Point]:
    """Every point, built and checked; the first bad one raises InputError
    `<spec>: point <id> (<params>): <field>: <what>` (and says how many others are bad). check(point),
    when given, runs further checks (the instances built: profiles found, the model fits)."""
    points, bad, digests, traces = [], [], {}, {}
    for index, vals in enumerate(spec.values):
        params = tuple(zip(spec.axes, vals))
        by_group = {"cluster": {}, "engine": {}, "workload": {}}
        for axis, v in params:
            group, name = axis.split(".", 1)
            by_group[group][name] = v
        engine = {**spec.engine, **by_group["engine"]}
        workload = {**spec.workload, **by_group["workload"]}
        cluster = None
        doc = {"cluster": spec.cluster, "engine": engine, "workload": workload, "slo": spec.slo,
               "routing_policy": spec.routing_policy, "peak_mem_interval_ms": spec.peak_mem_interval_ms,
               "params": [[a, v] for a, v in params]}
        try:
            if "path" in workload:
                doc["workload_sha256"] = _file_digest(workload["path"], digests)
            pid = point_id(doc)
            cluster = apply_cluster(spec.cluster, by_group["cluster"])
            _no_instance_override(cluster, by_group["engine"])
            cluster_from_dict(cluster, "cluster")
            engine_args(engine)
            workload_spec(workload, traces)
            point = Point(index, pid, params, cluster, engine, workload)
            if check is not None:
                check(point)
        except InputError as e:
            pid = point_id(doc) if "path" not in workload or "workload_sha256" in doc else "-"
            bad.append(f"{spec.path}: point {pid} ({describe(params) or 'base'}): {e}")
            continue
        points.append(point)
    if bad:
        more = f" (and {len(bad) - 1} more bad point{'s' if len(bad) > 2 else ''})" if len(bad) > 1 else ""
        raise InputError(bad[0] + more)
    return points


def instance_check():
    """check(point) for build_points: the point's instances are built as a run builds them (profile
    or roofline found, weights fit), once per distinct cluster and engine."""
    from ..simulate import prepare

    seen = set()

    def check(point: Point) -> None:
        key = json.dumps([point.cluster, point.engine], sort_keys=True, default=str)
        if key not in seen:
            prepare(cluster_from_dict(point.cluster, "cluster"), engine_args(point.engine), [])
            seen.add(key)
    return check
