"""Which links an instance's communication crosses: its TP group's ring dimensions and each stage
boundary's link, on the flat network of link_bw / link_latency (the reference's layout: TP on
dimension 0, stages on the next) or on a node-aware one (config/network.py)."""
from dataclasses import dataclass

from ..config.cluster import ClusterConfig, InstanceConfig
from .network import (Link, hierarchical_allgather_ns, hierarchical_allreduce_ns, ring_allgather_ns,
                      ring_allreduce_ns)


@dataclass(frozen=True)
class InstanceLinks:
    tp_dims: tuple[tuple[Link, int], ...]  # the TP group's ring dimensions, innermost first: (link, NPUs)
    boundary: tuple[Link, ...]  # stage s's SEND to stage s + 1 crosses boundary[s]


def _hop(bw: float, latency: float, hops: int) -> Link:
    return Link(bw, hops * latency)  # a switch is two hops (GPU, switch, GPU); its latency is per hop


def instance_links(cluster: ClusterConfig, inst: InstanceConfig) -> InstanceLinks:
    net, tp, pp = cluster.network, inst.tp_size, inst.pp_size
    if net is None:
        bw, lat = cluster.link_bw_gbps, cluster.link_latency_ns
        dim = lambda vals, k: vals[k] if k < len(vals) else vals[0]  # a scalar is broadcast to every dimension
        k = 1 if max(len(bw), len(lat)) > 1 else 0
        return InstanceLinks(((Link(bw[0], lat[0]), tp),), (Link(dim(bw, k), dim(lat, k)),) * (pp - 1))
    intra = _hop(net.intra.bw_gbps, net.intra.latency_ns, net.intra.hops)
    inter = _hop(net.inter.bw_gbps, net.inter.latency_ns, net.inter.hops)
    g = net.gpus_per_node
    # validated: a TP group sits inside one node, or spans whole nodes (a ring per node, then across)
    tp_dims = ((intra, tp),) if tp <= g else ((intra, g), (inter, tp // g))
    boundary = []
    for s in range(pp - 1):
        src = inst.first_npu + s * tp  # rank r sends to rank r: every rank crosses the same fabric
        boundary.append(intra if net.node_of(src) == net.node_of(src + tp) else inter)
    return InstanceLinks(tp_dims, tuple(boundary))


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
