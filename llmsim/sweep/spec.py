"""A sweep spec (YAML): base cluster, engine and workload, SLOs, and the axes `grid:` and `zip:`.

    cluster: configs/cluster/single_node_single_instance.json   # a path, or the config inline
    engine: {dtype: float16}
    workload: {num_requests: 200, rate: 5, input_len: "lognormal:512:0.8", output_len: "fixed:128", seed: 0}
    slo: {ttft_ms: 1000, tpot_ms: 50}
    grid: {workload.rate: [2, 5, 10]}                       # cartesian product
    zip: {cluster.tp_size: [1, 2], cluster.pp_size: [2, 1]} # advanced together

Loading checks the spec's shape and every axis name; points.py builds and checks each point.
"""
from __future__ import annotations

import itertools
import json
import math
from dataclasses import dataclass, field, fields
from pathlib import Path

import yaml

from ..config._fields import parse_json, read_config_bytes
from ..config.engine import EngineArgs
from ..errors import InputError
from ..paths import resolve_input

TOP_KEYS = {"cluster", "engine", "workload", "slo", "grid", "zip", "routing_policy", "peak_mem_interval_ms"}

# Cluster-level names: each applies to every node / every instance of the base config.
CLUSTER_TOP = {"link_bw", "link_latency"}
CLUSTER_NODE = {"num_instances", "cpu_mem.mem_size", "cpu_mem.mem_bw", "cpu_mem.mem_latency"}
CLUSTER_INSTANCE = {"model_name", "hardware", "tp_size", "pp_size", "num_npus", "npu_mem.mem_size", "npu_mem.mem_bw",
                    "npu_mem.mem_latency", "npu_mem.mem_util", "ep_size"}
CLUSTER_FIELDS = CLUSTER_TOP | CLUSTER_NODE | CLUSTER_INSTANCE
ENGINE_FIELDS = {f.name for f in fields(EngineArgs)}
# The generator's parameters (llmsim workload generate's options), or a fixed JSONL `path`.
WORKLOAD_FIELDS = {"num_requests", "rate", "arrivals", "cv", "input_len", "output_len", "from_trace", "turns",
                   "tool_ms", "shared_prefix", "prefix_groups", "seed", "path"}
SLO_FIELDS = {"ttft_ms", "tpot_ms"}


@dataclass(frozen=True)
class SweepSpec:
    path: str
    cluster: dict  # the base cluster config, parsed
    cluster_source: str  # its file, or "<spec>: cluster" when inline (error messages)
    engine: dict
    workload: dict
    slo: dict
    axes: tuple[str, ...]  # every swept field, in spec order (grid first, then zip)
    values: tuple[tuple, ...] = field(default=())  # one tuple per point, aligned with axes
    routing_policy: str = "LOAD"
    peak_mem_interval_ms: float = 10.0


def _fail(path: str, where: str, msg: str):
    raise InputError(f"{path}: {where}: {msg}")


def check_axis_name(path: str, where: str, name) -> None:
    """`cluster.<field>`, `engine.<EngineArgs field>` or `workload.<generator field>`; else one line naming it."""
    if not isinstance(name, str) or "." not in name:
        _fail(path, where, f"axis {name!r}: expected cluster.<field>, engine.<field> or workload.<field>")
    group, rest = name.split(".", 1)
    known = {"cluster": CLUSTER_FIELDS, "engine": ENGINE_FIELDS, "workload": WORKLOAD_FIELDS - {"path"}}.get(group)
    if known is None:
        _fail(path, where, f"axis {name!r}: unknown group {group!r} (cluster, engine or workload)")
    if rest not in known:
        _fail(path, where, f"unknown field {name!r} (known {group} fields: {', '.join(sorted(known))})")


def _axes_block(path: str, raw, key: str) -> dict:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        _fail(path, key, f"expected a mapping of field name -> list of values, got {type(raw).__name__}")
    for name, vals in raw.items():
        check_axis_name(path, f"{key}.{name}", name)
        if not isinstance(vals, list) or not vals:
            _fail(path, f"{key}.{name}", "expected a non-empty list of values")
    return raw


def expand(grid: dict, zipped: dict, path: str = "sweep spec") -> tuple[tuple[str, ...], list[tuple]]:
    """The points: the cartesian product of grid's lists, times zip's lists taken together
    (all of one length). No axes: one point, the base configuration."""
    dup = sorted(set(grid) & set(zipped))
    if dup:
        _fail(path, "zip", f"{dup[0]!r} is in both grid and zip")
    lengths = {len(v) for v in zipped.values()}
    if len(lengths) > 1:
        _fail(path, "zip", "the lists must all have the same length, got "
              + ", ".join(f"{k}: {len(v)}" for k, v in zipped.items()))
    zip_rows = list(zip(*zipped.values())) if zipped else [()]
    axes = tuple(grid) + tuple(zipped)
    points = [g + z for g in itertools.product(*grid.values()) for z in zip_rows]
    return axes, points


def _mapping(path: str, raw: dict, key: str, known: set[str] | None) -> dict:
    val = raw.get(key) or {}
    if not isinstance(val, dict):
        _fail(path, key, f"expected a mapping, got {type(val).__name__}")
    if known is not None:
        for k in val:
            if k not in known:
                _fail(path, f"{key}.{k}", f"unknown field (known: {', '.join(sorted(known))})")
    return val


def _number(path: str, where: str, v, minimum: float = 0.0) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= minimum:
        _fail(path, where, f"expected a finite number > {minimum:g}, got {v!r}")
    return float(v)


def _relative(spec_path: Path, p: str) -> str:
    """A path in the spec is found as the CLI finds inputs (current directory, then the shipped
    data), else beside the spec."""
    found = resolve_input(p)
    if Path(found).exists() or Path(p).is_absolute():
        return found
    beside = spec_path.parent / p
    return str(beside) if beside.exists() else p


def load_spec(path: str) -> SweepSpec:
    path = resolve_input(path)  # a shipped spec (configs/sweeps/...) runs from any directory
    raw = yaml_load(path)
    if not isinstance(raw, dict):
        raise InputError(f"{path}: expected a mapping at the top level")
    for k in raw:
        if k not in TOP_KEYS:
            _fail(path, str(k), f"unknown key (known: {', '.join(sorted(TOP_KEYS))})")
    base = raw.get("cluster")
    if isinstance(base, str):
        source = _relative(Path(path), base)
        cluster = parse_json(source, read_config_bytes(source, "cluster config"))
    elif isinstance(base, dict):
        source, cluster = f"{path}: cluster", base
    else:
        _fail(path, "cluster", "expected a cluster-config path or an inline mapping")
    engine = _mapping(path, raw, "engine", ENGINE_FIELDS)
    workload = dict(_mapping(path, raw, "workload", WORKLOAD_FIELDS))
    for key in ("path", "from_trace"):
        if isinstance(workload.get(key), str):
            workload[key] = _relative(Path(path), workload[key])
    slo = _mapping(path, raw, "slo", SLO_FIELDS)
    slo = {k: _number(path, f"slo.{k}", v) for k, v in slo.items()}
    grid, zipped = _axes_block(path, raw.get("grid"), "grid"), _axes_block(path, raw.get("zip"), "zip")
    axes, values = expand(grid, zipped, path)
    policy = raw.get("routing_policy", "LOAD")
    if policy not in ("LOAD", "RR", "RAND"):
        _fail(path, "routing_policy", f"expected LOAD, RR or RAND, got {policy!r}")
    interval = _number(path, "peak_mem_interval_ms", raw.get("peak_mem_interval_ms", 10.0))
    return SweepSpec(path, json.loads(json.dumps(cluster)), source, engine, workload, slo, axes, tuple(values),
                     policy, interval)


def yaml_load(path: str):
    text = read_config_bytes(path, "sweep spec")
    try:
        return yaml.safe_load(text.decode("utf-8-sig"))
    except UnicodeDecodeError as e:
        raise InputError(f"{path}: not UTF-8 text (byte {e.start})") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        raise InputError(f"{path}: {where}invalid YAML ({' '.join(str(getattr(e, 'problem', e)).split())})") from None
