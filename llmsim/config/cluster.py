"""Cluster config (the reference's JSON schema): loading and validation."""
import math
from dataclasses import dataclass, field, replace
from pathlib import Path

from ..units import gb_to_bytes
from ._fields import Fields, parse_json, read_config_bytes
from .engine import DTYPE_BYTES, IGNORED_KEYS, OVERRIDE_KEYS
from .network import NetworkSpec, check_placement, parse_network


@dataclass(frozen=True)
class MemSpec:
    size_bytes: int
    bw_gbps: float
    latency_ns: int


@dataclass(frozen=True)
class InstanceConfig:
    index: int
    node: int
    where: str  # "file: nodes[i].instances[j]" for error messages
    model_name: str
    hardware: str
    npu_mem: MemSpec
    mem_util: float | None
    num_npus: int
    tp_size: int
    pp_size: int
    first_npu: int
    overrides: dict = field(default_factory=dict)
    pd_type: str | None = None  # "prefill" / "decode": disaggregated pools (llmsim/disagg.py); None: colocated
    ep_size: int = 1  # expert parallelism: 1, tp_size, or tp_size x the DP group's size (docs/moe.md)
    dp_group: str | None = None  # instances sharing a name form one data-parallel group (llmsim/dp.py)
    dp_rank: int = 0  # its rank in the group (file order)
    dp_size: int = 1  # the group's size


@dataclass(frozen=True)
class ClusterConfig:
    path: str
    num_nodes: int
    link_bw_gbps: tuple[float, ...]
    link_latency_ns: tuple[float, ...]
    cpu_mem: tuple[MemSpec, ...]  # per node
    instances: tuple[InstanceConfig, ...]
    warnings: tuple[str, ...] = ()
    network: NetworkSpec | None = None  # node-aware fabrics (config/network.py); None: the flat network

    @property
    def total_npus(self) -> int:
        return sum(i.num_npus for i in self.instances)


_TOP = {"num_nodes", "link_bw", "link_latency", "nodes", "cxl_mem", "network"}
_NODE = {"num_instances", "cpu_mem", "instances", "power"}
_MEM = {"mem_size", "mem_bw", "mem_latency"}
_INST = {"model_name", "hardware", "npu_mem", "pd_type", "num_npus", "tp_size", "pp_size", "ep_size",
         "dp_group", "placement"} | set(OVERRIDE_KEYS) | IGNORED_KEYS


# Sane physical ranges: beyond them a value is a typo or a unit mix-up (and overflows or hangs).
MAX_MEM_GB, MAX_MEM_BW_GBPS, MAX_LATENCY_NS = 1e6, 1e7, 1e12
LINK_BW_GBPS = (1e-3, 1e6)
MAX_PARALLEL = 65536


def _mem(f: Fields, extra: set[str], warnings: list[str]) -> MemSpec:
    warnings += f.unknown(_MEM | extra)
    return MemSpec(
        size_bytes=gb_to_bytes(f.get("mem_size", (int, float), minimum=0, exclusive_min=True, maximum=MAX_MEM_GB)),
        bw_gbps=float(f.get("mem_bw", (int, float), minimum=0, exclusive_min=True, maximum=MAX_MEM_BW_GBPS)),
        latency_ns=int(f.get("mem_latency", (int, float), minimum=0, maximum=MAX_LATENCY_NS)),
    )


def _link(f: Fields, key: str, positive: bool) -> tuple[float, ...]:
    raw = f.get(key, (int, float, list))
    vals = raw if isinstance(raw, list) else [raw]
    low, high, unit = LINK_BW_GBPS + ("GB/s",) if positive else (0, MAX_LATENCY_NS, "ns")
    for i, v in enumerate(vals):
        where = key if not isinstance(raw, list) else f"{key}[{i}]"
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0 or (positive and v == 0):
            f.fail(f"expected {'positive' if positive else 'non-negative'} numbers, got {v!r}", where)
        if not math.isfinite(v) or not low <= v <= high:
            f.fail(f"expected a value in {unit} within [{low:g}, {high:g}], got {v!r}", where)
    if not vals:
        f.fail("expected a number or a non-empty list", key)
    return tuple(float(v) for v in vals)


def _parallelism(f: Fields) -> tuple[int, int, int]:
    """The reference's resolution: pp defaults to 1; num_npus and tp_size infer each other."""
    pp = f.get("pp_size", int, None, minimum=1, maximum=MAX_PARALLEL)
    tp = f.get("tp_size", int, None, minimum=1, maximum=MAX_PARALLEL)
    n = f.get("num_npus", int, None, minimum=1, maximum=MAX_PARALLEL)
    pp_given = pp not in (None, 1)
    pp = pp or 1
    if n is not None and tp is not None:
        if n != tp * pp:
            if pp_given:
                f.fail(f"{n} != tp_size * pp_size = {tp} * {pp} = {tp * pp}", "num_npus")
            if n % tp:
                f.fail(f"{n} is not a multiple of tp_size {tp}", "num_npus")
            pp = n // tp
    elif n is not None:
        if n % pp:
            f.fail(f"{n} is not a multiple of pp_size {pp}", "num_npus")
        tp = n // pp
    else:
        tp = tp or 1
        n = tp * pp
        if n > MAX_PARALLEL:
            f.fail(f"tp_size * pp_size = {tp} * {pp} = {n} NPUs exceeds the limit of {MAX_PARALLEL}", "num_npus")
    return n, tp, pp


def load_cluster_config(path: str | Path) -> ClusterConfig:
    path = str(path)
    text = read_config_bytes(path, "cluster config")
    return cluster_from_dict(parse_json(path, text), path)


def cluster_from_dict(raw: dict, path: str = "cluster config") -> ClusterConfig:
    """A cluster config in the reference's schema, already parsed (built in code); errors name
    `path` and the field."""
    warnings: list[str] = []
    top = Fields(path, raw, "")
    warnings += top.unknown(_TOP)
    num_nodes = top.get("num_nodes", int, minimum=1)
    network = parse_network(top, warnings)
    if network is not None and "link_bw" not in raw and "link_latency" not in raw:
        # the node-aware fabrics replace the flat network's figures
        link_bw, link_lat = (network.intra.bw_gbps,), (network.intra.latency_ns,)
    else:
        link_bw = _link(top, "link_bw", positive=True)
        link_lat = _link(top, "link_latency", positive=False)
    nodes = top.get("nodes", list)
    if len(nodes) != num_nodes:
        top.fail(f"num_nodes is {num_nodes} but {len(nodes)} nodes are listed", "nodes")
    cpu_mems, instances, next_npu = [], [], 0
    for n_idx, node_raw in enumerate(nodes):
        node = Fields(path, node_raw, f"nodes[{n_idx}]")
        warnings += node.unknown(_NODE)
        cpu_mems.append(_mem(node.child("cpu_mem"), {"pim_config"}, warnings))
        # with a node-aware network a node may hold no instance of its own (another one spans it)
        n_inst = node.get("num_instances", int, minimum=0 if network is not None else 1)
        insts = node.get("instances", list)
        if len(insts) != n_inst:
            node.fail(f"num_instances is {n_inst} but {len(insts)} instances are listed", "instances")
        for i_idx, inst_raw in enumerate(insts):
            f = Fields(path, inst_raw, f"nodes[{n_idx}].instances[{i_idx}]")
            warnings += f.unknown(_INST)
            warnings += [f"{f.where(k)}: not modelled (dense TP/PP path), ignored" for k in IGNORED_KEYS if k in inst_raw]
            pd = f.get("pd_type", (str, type(None)))
            if pd is not None:
                if pd not in ("prefill", "decode"):
                    f.fail(f"expected null, \"prefill\" or \"decode\", got {pd!r}", "pd_type")
            dp_group = f.get("dp_group", (str, type(None)), None)
            if dp_group is not None and not dp_group:
                f.fail("expected a non-empty name (or null)", "dp_group")
            ep = f.get("ep_size", int, 1, minimum=1, maximum=MAX_PARALLEL)
            npu_f = f.child("npu_mem")
            npu_mem = _mem(npu_f, {"mem_util"}, warnings)
            mem_util = npu_f.get("mem_util", (int, float), None, minimum=0, exclusive_min=True, maximum=1)
            num_npus, tp, pp = _parallelism(f)
            if ep > 1 and ep != tp and dp_group is None:  # vLLM without DP: EP size = the TP group's size
                f.fail("ep_size must equal tp_size without data parallelism (with dp_group: tp_size x the group's "
                       f"size) (ep_size {ep}, tp_size {tp})", "ep_size")
            overrides = {}
            for key, kind in OVERRIDE_KEYS.items():
                if key in inst_raw:
                    low = (1 if key == "block_size" else 0) if kind is int else None
                    overrides[key] = f.get(key, kind, minimum=low)
            if overrides.get("kv_cache_dtype", "auto") not in ("auto", "fp8"):
                f.fail(f"expected \"auto\" or \"fp8\", got {overrides['kv_cache_dtype']!r}", "kv_cache_dtype")
            if "dtype" in overrides and overrides["dtype"] not in DTYPE_BYTES:
                f.fail(f"expected one of {', '.join(DTYPE_BYTES)}, got {overrides['dtype']!r}", "dtype")
            instances.append(InstanceConfig(
                index=len(instances), node=n_idx, where=f.where(), model_name=f.get("model_name", str),
                hardware=f.get("hardware", str), npu_mem=npu_mem,
                mem_util=None if mem_util is None else float(mem_util), num_npus=num_npus, tp_size=tp,
                pp_size=pp, first_npu=next_npu, overrides=overrides, pd_type=pd, ep_size=ep, dp_group=dp_group))
            next_npu += num_npus
    instances = _dp_groups(top, instances)
    _check_pools(top, instances)
    if network is not None:
        check_placement(network, top.child("network"), instances, next_npu, num_nodes)
    return ClusterConfig(path=path, num_nodes=num_nodes, link_bw_gbps=link_bw, link_latency_ns=link_lat,
                         cpu_mem=tuple(cpu_mems), instances=tuple(instances), warnings=tuple(warnings),
                         network=network)


def _check_pools(top: Fields, instances: list[InstanceConfig]) -> None:
    """Disaggregated serving needs both pools, every instance in one of them (a colocated instance
    has no place in the proxy's two-step flow), and one model (the decode side reads the prefill
    side's KV cache as is)."""
    pds = [i.pd_type for i in instances]
    if not any(pds):
        return
    for i in instances:
        if i.pd_type is None:
            top.fail(f"{i.where.split(': ', 1)[-1]} has pd_type null but other instances are disaggregated: "
                     "give every instance pd_type \"prefill\" or \"decode\"", "pd_type")
    for need in ("prefill", "decode"):
        if need not in pds:
            other = "decode" if need == "prefill" else "prefill"
            top.fail(f"{other} instances but no {need} instance: disaggregated serving needs at least one of each",
                     "pd_type")
    models = sorted({i.model_name for i in instances})
    if len(models) > 1:
        top.fail(f"disaggregated instances serve different models ({', '.join(models)}): the decode side loads "
                 "the prefill side's KV cache, so they must serve one model", "pd_type")


def _dp_groups(top: Fields, instances: list[InstanceConfig]) -> list[InstanceConfig]:
    """Instances sharing a dp_group name are one vLLM data-parallel deployment (data_parallel_size
    = the group's size): one model, one tp and pp; ep_size tp x dp with enable_expert_parallel, else 1.
    A cluster may hold several groups and plain instances beside them (each an endpoint of the
    run's router); with prefill/decode pools a group sits in one pool."""
    names = list(dict.fromkeys(i.dp_group for i in instances if i.dp_group is not None))
    if not names:
        return instances
    out = list(instances)
    for name in names:
        members = [i for i in instances if i.dp_group == name]
        first, n = members[0], len(members)
        for i in members:
            f = lambda key: f"{i.where.split(': ', 1)[-1]}.{key}"
            for key in ("model_name", "hardware", "tp_size", "pp_size", "ep_size", "pd_type"):
                if getattr(i, key) != getattr(first, key):
                    top.fail(f"dp_group '{name}' members disagree ({getattr(i, key)!r} against {getattr(first, key)!r} "
                             "of its first instance); a data-parallel group runs one model with one layout", f(key))
            if i.pp_size > 1:
                top.fail(f"dp_group '{name}': pipeline parallelism inside a data-parallel group is not wired yet",
                         f("pp_size"))
        if n < 2:
            top.fail(f"dp_group '{name}' has one instance; a data-parallel group needs two or more (or remove "
                     "dp_group)", "dp_group")
        if first.ep_size not in (1, first.tp_size * n):
            top.fail(f"dp_group '{name}': ep_size {first.ep_size} must be 1 (no expert parallelism) or tp_size x the "
                     f"group's size = {first.tp_size} x {n} = {first.tp_size * n} (vLLM's expert parallelism spans "
                     "TP x DP)", "ep_size")
        for r, i in enumerate(members):
            out[i.index] = replace(i, dp_rank=r, dp_size=n)
    return out
