"""Which links an instance's communication crosses: its TP group's ring dimensions and each stage
boundary's link, on the flat network of link_bw / link_latency (the reference's layout: TP on
dimension 0, stages on the next) or on a node-aware one (config/network.py)."""
from dataclasses import dataclass

from ..config.cluster import ClusterConfig, InstanceConfig
from ..graph.iteration import OpKind
from .network import (Link, hierarchical_allgather_ns, hierarchical_allreduce_ns, ring_allgather_ns,
                      ring_allreduce_ns, ring_alltoall_ns, ring_reducescatter_ns)


@dataclass(frozen=True)
class InstanceLinks:
    tp_dims: tuple[tuple[Link, int], ...]  # the TP group's ring dimensions, innermost first: (link, NPUs)
    boundary: tuple[Link, ...]  # stage s's SEND to stage s + 1 crosses boundary[s]
    dp: tuple[Link, int] | None = None  # a data-parallel group's MoE collectives: (link, ranks)


def _hop(bw: float, latency: float, hops: int) -> Link:
    return Link(bw, hops * latency)  # a switch is two hops (GPU, switch, GPU); its latency is per hop


def instance_links(cluster: ClusterConfig, inst: InstanceConfig) -> InstanceLinks:
    net, tp, pp = cluster.network, inst.tp_size, inst.pp_size
    dp = None
    if inst.dp_group is not None:
        members = [i for i in cluster.instances if i.dp_group == inst.dp_group]
        dp = (dp_link(cluster, members), len(members))
    if net is None:
        bw, lat = cluster.link_bw_gbps, cluster.link_latency_ns
        dim = lambda vals, k: vals[k] if k < len(vals) else vals[0]  # a scalar is broadcast to every dimension
        k = 1 if max(len(bw), len(lat)) > 1 else 0
        return InstanceLinks(((Link(bw[0], lat[0]), tp),), (Link(dim(bw, k), dim(lat, k)),) * (pp - 1), dp)
    intra = _hop(net.intra.bw_gbps, net.intra.latency_ns, net.intra.hops)
    inter = _hop(net.inter.bw_gbps, net.inter.latency_ns, net.inter.hops)
    g = net.gpus_per_node
    # validated: a TP group sits inside one node, or spans whole nodes (a ring per node, then across)
    tp_dims = ((intra, tp),) if tp <= g else ((intra, g), (inter, tp // g))
    boundary = []
    for s in range(pp - 1):
        src = inst.first_npu + s * tp  # rank r sends to rank r: every rank crosses the same fabric
        boundary.append(intra if net.node_of(src) == net.node_of(src + tp) else inter)
    return InstanceLinks(tp_dims, tuple(boundary), dp)


def allreduce_ns(links: InstanceLinks, size_bytes: int, *, local_mem_bw_gbps: float, total_npus: int) -> int:
    if len(links.tp_dims) == 1:
        link, n = links.tp_dims[0]
        return ring_allreduce_ns(link, size_bytes, n, local_mem_bw_gbps=local_mem_bw_gbps, total_npus=total_npus)
    return hierarchical_allreduce_ns(links.tp_dims, size_bytes, local_mem_bw_gbps=local_mem_bw_gbps,
                                     total_npus=total_npus)


def allgather_ns(links: InstanceLinks, size_bytes: int) -> int:
    if len(links.tp_dims) == 1:
        link, n = links.tp_dims[0]
        return ring_allgather_ns(link, size_bytes, n)
    return hierarchical_allgather_ns(links.tp_dims, size_bytes)


def dp_link(cluster: ClusterConfig, members) -> Link:
    """The link a data-parallel group's MoE collectives cross between its instances: on the flat
    network the instance dimension (dimension 1 of link_bw / link_latency, a scalar broadcast), as a
    stage boundary's; on a node-aware one the intra-node fabric when every member sits on one node,
    else the inter-node fabric (a switch is two hops)."""
    net = cluster.network
    if net is None:
        bw, lat = cluster.link_bw_gbps, cluster.link_latency_ns
        return Link(bw[1] if len(bw) > 1 else bw[0], lat[1] if len(lat) > 1 else lat[0])
    nodes = {net.node_of(p) for i in members for p in range(i.first_npu, i.first_npu + i.num_npus)}
    fab = net.intra if len(nodes) == 1 else net.inter
    return _hop(fab.bw_gbps, fab.latency_ns, fab.hops)


def dp_collective_ns(links: InstanceLinks, kind, size_bytes: int, local_mem_bw_gbps: float) -> int:
    """A DP group's MoE dispatch or combine (graph/dp_step.py) as a ring on the group's link:
    size_bytes one rank's part for the all-gather, the whole tensor for the reduce-scatter and the
    all-reduce, one rank's whole buffer for the all-to-all (how ASTRA-Sim reads comm_size)."""
    link, ranks = links.dp
    if kind is OpKind.DP_ALLGATHER:
        return ring_allgather_ns(link, size_bytes, ranks)
    if kind is OpKind.DP_REDUCESCATTER:
        return ring_reducescatter_ns(link, size_bytes, ranks, local_mem_bw_gbps=local_mem_bw_gbps)
    if kind is OpKind.DP_ALLREDUCE:
        return ring_allreduce_ns(link, size_bytes, ranks, local_mem_bw_gbps=local_mem_bw_gbps)
    if kind is OpKind.DP_ALLTOALL:
        return ring_alltoall_ns(link, size_bytes, ranks)
    raise ValueError(f"not a data-parallel collective: {kind!r}")
