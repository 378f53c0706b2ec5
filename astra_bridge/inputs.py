"""ASTRA-Sim's network, system, memory and comm-group inputs, generated from our cluster config.

Byte-compatible with what LLMServingSim writes for the same configs (captured examples in
tests/data/astra-inputs/). Pure functions returning text; `write_inputs` is the only side effect.
"""
import json
import math
from dataclasses import dataclass
from pathlib import Path

from llmsim.config.cluster import ClusterConfig
from llmsim.errors import InputError

FLAVORS = ("llmservingsim", "upstream")


def topology_dims(cluster: ClusterConfig) -> list[int]:
    """The reference's layout: TP groups on the first dimension, then stages/instances; all
    FullyConnected; trailing 1s dropped (a single NPU keeps [1])."""
    total = cluster.total_npus
    total_pp = sum(i.pp_size for i in cluster.instances)
    n_inst = len(cluster.instances)
    dims = [total // n_inst, n_inst] if total == total_pp else [total // total_pp, total_pp]
    while len(dims) > 1 and dims[-1] == 1:
        dims.pop()
    return dims


def _per_dim(cluster: ClusterConfig, values: tuple[float, ...], key: str, n: int) -> list[float]:
    if len(values) == 1:
        return [float(values[0])] * n
    if len(values) != n:
        raise InputError(f"{cluster.path}: {key}: {len(values)} values given but the topology has {n} "
                         f"dimensions {topology_dims(cluster)}; give one value or one per dimension")
    return [float(v) for v in values]


def upstream_dims(cluster: ClusterConfig) -> list[int]:
    """Upstream's analytical network rejects 1-NPU dimensions: they are dropped (nothing spans
    them), and a lone NPU gets an idle partner."""
    dims = [d for d in topology_dims(cluster) if d > 1]
    return dims or [2]


def network_yml(cluster: ClusterConfig, dims: list[int] | None = None) -> str:
    dims = dims or topology_dims(cluster)
    bw = _per_dim(cluster, cluster.link_bw_gbps, "link_bw", len(dims))
    lat = _per_dim(cluster, cluster.link_latency_ns, "link_latency", len(dims))
    fmt = lambda xs: "[" + ", ".join(str(x) for x in xs) + "]"
    return (f"topology: [{', '.join(['FullyConnected'] * len(dims))}]\n"
            f"npus_count: {fmt(dims)}\nbandwidth: {fmt(bw)}\nlatency: {fmt(lat)}\n")


def system_json(cluster: ClusterConfig, dims: list[int] | None = None) -> str:
    n = len(dims or topology_dims(cluster))
    # The reference lets the last node's first instance set local-mem-bw; with one node that is instance 0.
    first_of_node = {}
    for inst in cluster.instances:
        first_of_node.setdefault(inst.node, inst)
    local_bw = first_of_node[max(first_of_node)].npu_mem.bw_gbps
    doc = {
        "scheduling-policy": "LIFO", "endpoint-delay": 10, "active-chunks-per-dimension": 1,
        "preferred-dataset-splits": 1,
        "all-reduce-implementation": ["ring"] * n, "all-gather-implementation": ["ring"] * n,
        "reduce-scatter-implementation": ["ring"] * n, "all-to-all-implementation": ["ring"] * n,
        "collective-optimization": "localBWAware", "local-mem-bw": _num(local_bw), "boost-mode": 0,
    }
    return json.dumps(doc, indent=2)


def _num(x: float):
    return int(x) if float(x).is_integer() else x


def memory_json(cluster: ClusterConfig, flavor: str) -> str:
    """Host memory as ASTRA-Sim's remote memory: only the first node's cpu_mem reaches it, one device
    per node (as in the reference)."""
    cpu = cluster.cpu_mem[0]
    if flavor == "llmservingsim":
        doc = {"remote_mem": {"memory-type": "PER_NODE_MEMORY_EXPANSION", "mem-bw": _num(cpu.bw_gbps),
                              "mem-latency": cpu.latency_ns, "num-devices": 1}}
    else:
        doc = {"memory-type": "PER_NODE_MEMORY_EXPANSION", "num-nodes": 1,
               "num-npus-per-node": cluster.total_npus, "remote-mem-latency": cpu.latency_ns,
               "remote-mem-bw": _num(cpu.bw_gbps)}
    return json.dumps(doc, indent=2)


def tp_groups(cluster: ClusterConfig) -> dict[str, list[int]]:
    """One communicator per (instance, stage) TP group, named by its first NPU + 1 ("0" means all)."""
    groups = {}
    for inst in cluster.instances:
        if inst.tp_size > 1:
            for s in range(inst.pp_size):
                first = inst.first_npu + s * inst.tp_size
                groups[str(first + 1)] = list(range(first, first + inst.tp_size))
    return groups


def comm_group_json(cluster: ClusterConfig) -> str:
    return json.dumps(tp_groups(cluster), indent=2)


@dataclass(frozen=True)
class InputPaths:
    network: Path
    system: Path
    memory: Path
    comm_group: Path


def write_inputs(cluster: ClusterConfig, root: Path, flavor: str) -> InputPaths:
    if flavor not in FLAVORS:
        raise InputError(f"astra-sim flavor: expected one of {', '.join(FLAVORS)}, got {flavor!r}")
    if cluster.network is not None:
        raise InputError(f"{cluster.path}: network: the ASTRA-Sim bridge does not write node-aware network inputs "
                         "yet (docs/network.md); use --backend embedded")
    dims = topology_dims(cluster)
    if math.prod(dims) != cluster.total_npus:
        tps = sorted({i.tp_size for i in cluster.instances})
        raise InputError(f"{cluster.path}: the ASTRA-Sim topology {dims} cannot hold {cluster.total_npus} NPUs: "
                         f"the bridge needs one layout for all instances (tp_size {tps}); use --backend embedded")
    paths = InputPaths(root / "network" / "network.yml", root / "system" / "system.json",
                       root / "memory" / "memory_expansion.json", root / "comm_group" / "comm_group.json")
    dims = upstream_dims(cluster) if flavor == "upstream" else None
    for path, text in ((paths.network, network_yml(cluster, dims)), (paths.system, system_json(cluster, dims)),
                       (paths.memory, memory_json(cluster, flavor)), (paths.comm_group, comm_group_json(cluster))):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return paths
