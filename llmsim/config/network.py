"""The node-aware network: an optional `network` object in the cluster config (docs/network.md).

    "network": {
      "gpus_per_node": 8,
      "intra_node": {"bandwidth": 450, "latency": 250, "topology": "Switch"},
      "inter_node": {"bandwidth": 50, "latency": 2000, "topology": "Switch"}
    }

NPUs are numbered as the instances list them (the reference's order) and NPU p sits on node
p // gpus_per_node. Bandwidth is per GPU in GB/s, latency per hop in ns; a Switch costs two hops
(GPU, switch, GPU), FullyConnected one. Without the object every NPU shares the flat network of
`link_bw` / `link_latency`, exactly as before.
"""
from dataclasses import dataclass

from ._fields import Fields

TOPOLOGIES = {"Switch": 2, "FullyConnected": 1}  # hops between two GPUs of the fabric
_FABRIC = {"bandwidth", "latency", "topology"}
_NETWORK = {"gpus_per_node", "intra_node", "inter_node"}
MAX_BW_GBPS, MAX_LATENCY_NS = 1e6, 1e12


@dataclass(frozen=True)
class Fabric:
    bw_gbps: float
    latency_ns: float  # per hop
    topology: str

    @property
    def hops(self) -> int:
        return TOPOLOGIES[self.topology]


@dataclass(frozen=True)
class NetworkSpec:
    gpus_per_node: int
    intra: Fabric  # inside a node (NVLink / NVSwitch, PCIe)
    inter: Fabric  # between nodes, per GPU NIC (InfiniBand, RoCE)

    def node_of(self, npu: int) -> int:
        return npu // self.gpus_per_node


def _fabric(f: Fields, warnings: list[str]) -> Fabric:
    warnings += f.unknown(_FABRIC)
    topo = f.get("topology", str, "Switch")
    if topo not in TOPOLOGIES:
        f.fail(f"expected one of {', '.join(TOPOLOGIES)}, got {topo!r}", "topology")
    return Fabric(float(f.get("bandwidth", (int, float), minimum=0, exclusive_min=True, maximum=MAX_BW_GBPS)),
                  float(f.get("latency", (int, float), minimum=0, maximum=MAX_LATENCY_NS)), topo)


def parse_network(top: Fields, warnings: list[str]) -> NetworkSpec | None:
    if "network" not in top.obj:
        return None
    f = top.child("network")
    warnings += f.unknown(_NETWORK)
    return NetworkSpec(f.get("gpus_per_node", int, minimum=1, maximum=1 << 20),
                       _fabric(f.child("intra_node"), warnings), _fabric(f.child("inter_node"), warnings))


def check_placement(net: NetworkSpec, f_network: Fields, instances, total_npus: int, num_nodes: int) -> None:
    """The `nodes` list is the physical nodes: each instance starts on the node that lists it, and
    every TP group sits inside one node or spans whole nodes (so it has one shape per fabric)."""
    g = net.gpus_per_node
    if total_npus != num_nodes * g:
        f_network.fail(f"the instances use {total_npus} NPUs but num_nodes x gpus_per_node = {num_nodes} x {g}: "
                       "with a network object each entry of `nodes` is one physical node, filled", "gpus_per_node")
    for inst in instances:
        if net.node_of(inst.first_npu) != inst.node:
            f_network.fail(f"{inst.where} starts at NPU {inst.first_npu}, on node {net.node_of(inst.first_npu)}: "
                           f"list it under nodes[{net.node_of(inst.first_npu)}] (an instance may extend into the "
                           "following nodes)", "gpus_per_node")
        for s in range(inst.pp_size):
            first = inst.first_npu + s * inst.tp_size
            last = first + inst.tp_size - 1
            inside = first // g == last // g
            whole = first % g == 0 and inst.tp_size % g == 0
            if not (inside or whole):
                f_network.fail(f"{inst.where}: stage {s}'s TP group (NPUs {first}-{last}) straddles a node boundary: "
                               f"a TP group must sit inside one node or span whole nodes of {g}", "gpus_per_node")
