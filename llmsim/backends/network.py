"""Communication and memory costs with ASTRA-Sim's congestion-unaware analytical semantics.

Pure functions of sizes and link figures; every result is integer ns.
"""
from dataclasses import dataclass

from ..units import bytes_per_ns


@dataclass(frozen=True)
class Link:
    bw_gbps: float
    latency_ns: float

    def transfer_ns(self, size_bytes: int) -> float:
        return self.latency_ns + size_bytes / bytes_per_ns(self.bw_gbps)


def p2p_ns(link: Link, size_bytes: int) -> int:
    """One message over one FullyConnected hop: latency + bytes / bandwidth."""
    return int(link.transfer_ns(size_bytes))


def ring_allreduce_ns(link: Link, size_bytes: int, ranks: int) -> int:
    """Ring all-reduce of the full tensor: reduce-scatter then all-gather, each ranks-1 steps of
    size/ranks bytes."""
    if ranks <= 1:
        return 0
    step = link.transfer_ns(size_bytes / ranks)
    return int(2 * (ranks - 1) * step)


def mem_ns(bw_gbps: float, latency_ns: int, size_bytes: int) -> int:
    return int(latency_ns + size_bytes / bytes_per_ns(bw_gbps))
