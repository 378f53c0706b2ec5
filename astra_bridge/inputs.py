"""ASTRA-Sim's network, system, memory and comm-group inputs, generated from our cluster config.

Byte-compatible with what LLMServingSim writes for the same configs (captured examples in
tests/data/astra-inputs/). Pure functions returning text; `write_inputs` is the only side effect.
"""
import json
import math
from dataclasses import dataclass, replace
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


@dataclass(frozen=True)
class AstraLayout:
    """How the cluster maps onto ASTRA-Sim's multi-dimensional network."""
    dims: tuple[int, ...]
    bandwidth: tuple[float, ...]
    latency: tuple[float, ...]
    topology: tuple[str, ...]
    ids: tuple[int, ...] | None = None  # our NPU number -> ASTRA-Sim's; None: the same
    tp_involved: tuple[bool, ...] | None = None  # the TP collectives' involved_dim; None: every dimension

    def id(self, npu: int) -> int:
        return npu if self.ids is None else self.ids[npu]


def astra_layout(cluster: ClusterConfig, flavor: str = "llmservingsim") -> AstraLayout:
    """The reference's flat layout, or with a node-aware network (llmsim/config/network.py) three
    dimensions [TP group, nodes, TP groups within a node] on the intra-node, inter-node and
    intra-node fabrics. ASTRA-Sim sends a message on the first dimension in which the two NPUs'
    coordinates differ, so the nodes come before the within-node dimension: a stage boundary across
    nodes then crosses the inter-node fabric. Size-1 dimensions are dropped (nothing spans them)."""
    net = cluster.network
    if net is None:
        dims = upstream_dims(cluster) if flavor == "upstream" else topology_dims(cluster)
        n = len(dims)
        return AstraLayout(tuple(dims), tuple(_per_dim(cluster, cluster.link_bw_gbps, "link_bw", n)),
                           tuple(_per_dim(cluster, cluster.link_latency_ns, "link_latency", n)),
                           ("FullyConnected",) * n, None, (True,) + (False,) * (n - 1) if n > 1 else None)
    tps = sorted({i.tp_size for i in cluster.instances})
    g, nodes = net.gpus_per_node, cluster.num_nodes
    if len(tps) > 1 or tps[0] > g:
        raise InputError(f"{cluster.path}: network: ASTRA-Sim's collectives span whole dimensions, so the bridge needs "
                         f"one TP size for all instances, inside a node (tp_size {tps}, {g} GPUs per node); "
                         "use --backend embedded")
    tp = tps[0]
    per_node = g // tp
    ids = []
    for p in range(cluster.total_npus):
        local = p % g
        ids.append(local % tp + tp * (p // g + nodes * (local // tp)))
    full = [(tp, net.intra, True), (nodes, net.inter, False), (per_node, net.intra, False)]
    kept = [d for d in full if d[0] > 1] or [(2, net.intra, False)]  # a lone NPU gets an idle partner
    involved = tuple(d[2] for d in kept)
    return AstraLayout(tuple(d[0] for d in kept), tuple(d[1].bw_gbps for d in kept),
                       tuple(d[1].latency_ns for d in kept), tuple(d[1].topology for d in kept), tuple(ids),
                       involved if len(kept) > 1 else None)


def network_yml(cluster: ClusterConfig, dims: list[int] | None = None, layout: AstraLayout | None = None) -> str:
    if layout is None:
        dims = dims or topology_dims(cluster)
        layout = AstraLayout(tuple(dims), tuple(_per_dim(cluster, cluster.link_bw_gbps, "link_bw", len(dims))),
                             tuple(_per_dim(cluster, cluster.link_latency_ns, "link_latency", len(dims))),
                             ("FullyConnected",) * len(dims))
    fmt = lambda xs: "[" + ", ".join(str(x) for x in xs) + "]"
    return (f"topology: [{', '.join(layout.topology)}]\n"
            f"npus_count: {fmt(layout.dims)}\nbandwidth: {fmt(layout.bandwidth)}\nlatency: {fmt(layout.latency)}\n")


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


def prefill_first(cluster: ClusterConfig, layout: AstraLayout) -> AstraLayout:
    """Prefill/decode pools on the fork: prefill instances' NPUs numbered before decode instances'.
    The fork asks its NPUs in id order at each tick, so a prefill finishing at t is seen before a
    decode instance is asked at t (it hands that instance work at t). On the flat layout whole
    blocks of the first dimension are renumbered (a symmetry of its FullyConnected dimensions);
    a node-aware layout is left as it is and must already be in that order."""
    order = sorted(cluster.instances, key=lambda i: i.pd_type != "prefill")
    if layout.ids is None:
        d0 = layout.dims[0]
        if all(i.first_npu % d0 == 0 and i.num_npus % d0 == 0 for i in cluster.instances):
            new, g = {}, 0
            for inst in order:
                for b in range(inst.first_npu // d0, (inst.first_npu + inst.num_npus) // d0):
                    new[b], g = g, g + 1
            layout = replace(layout, ids=tuple(p % d0 + d0 * new[p // d0] for p in range(cluster.total_npus)))
    last_prefill = max(layout.id(p) for i in order if i.pd_type == "prefill"
                       for p in range(i.first_npu, i.first_npu + i.num_npus))
    first_decode = min(layout.id(p) for i in order if i.pd_type == "decode"
                       for p in range(i.first_npu, i.first_npu + i.num_npus))
    if first_decode < last_prefill:
        raise InputError(f"{cluster.path}: pd_type: on astra-sim-fork every prefill instance's NPUs must come before "
                         "every decode instance's in ASTRA-Sim's numbering, which this node layout breaks; place the "
                         "prefill instances on the lower nodes, or use --astra-sim-flavor upstream or --backend embedded")
    return layout


def write_inputs(cluster: ClusterConfig, root: Path, flavor: str) -> InputPaths:
    if flavor not in FLAVORS:
        raise InputError(f"astra-sim flavor: expected one of {', '.join(FLAVORS)}, got {flavor!r}")
    layout = astra_layout(cluster, flavor)
    dims = topology_dims(cluster)
    if cluster.network is None and math.prod(dims) != cluster.total_npus:
        tps = sorted({i.tp_size for i in cluster.instances})
        raise InputError(f"{cluster.path}: the ASTRA-Sim topology {dims} cannot hold {cluster.total_npus} NPUs: "
                         f"the bridge needs one layout for all instances (tp_size {tps}); use --backend embedded")
    paths = InputPaths(root / "network" / "network.yml", root / "system" / "system.json",
                       root / "memory" / "memory_expansion.json", root / "comm_group" / "comm_group.json")
    dims = list(layout.dims)
    for path, text in ((paths.network, network_yml(cluster, layout=layout)), (paths.system, system_json(cluster, dims)),
                       (paths.memory, memory_json(cluster, flavor)), (paths.comm_group, comm_group_json(cluster))):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return paths
