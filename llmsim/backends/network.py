"""Communication and memory costs with ASTRA-Sim's congestion-unaware analytical semantics.

Pure functions of sizes and link figures; every result is integer ns.
"""
from dataclasses import dataclass
from functools import lru_cache

from ..units import bytes_per_ns


@dataclass(frozen=True)
class Link:
    bw_gbps: float
    latency_ns: float

    def transfer_ns(self, size_bytes: int) -> float:
        return self.latency_ns + size_bytes / bytes_per_ns(self.bw_gbps)


def p2p_ns(link: Link, size_bytes: float) -> int:
    """One message over one FullyConnected hop: trunc(latency + bytes / bandwidth). The sender
    completes when the message arrives; a RECV posted earlier completes then too."""
    return int(link.transfer_ns(size_bytes))


def reduction_ns(size_bytes: int, local_mem_bw_gbps: float) -> int:
    # ASTRA-Sim charges each reduced packet three passes over local memory (GB/s read as 1e9 B/s).
    return 3 * int(size_bytes / (local_mem_bw_gbps * 1e9) * 1e9)


@lru_cache(maxsize=4096)  # pure; the same activation sizes recur every iteration
def ring_allreduce_ns(link: Link, size_bytes: int, ranks: int, *, local_mem_bw_gbps: float,
                      endpoint_delay_ns: int = 10, splits: int = 1, total_npus: int = 0) -> int:
    """Ring all-reduce on one dimension of `ranks` NPUs, `size_bytes` the full tensor. As ASTRA-Sim's
    system layer runs it: the tensor is cut into `splits` chunks that run one after another; each
    chunk takes 2(N-1) hand-offs of chunk/N bytes, each costing a link transfer plus the endpoint
    delay, plus N-1 reductions, plus one endpoint delay to start."""
    if ranks <= 1:
        return 0
    chunk = size_bytes // splits
    if total_npus > chunk:
        chunk = total_npus
        size_bytes = splits * chunk
    streams = -(-size_bytes // chunk)
    m = chunk // ranks
    e = endpoint_delay_ns
    per_chunk = e + 2 * (ranks - 1) * (p2p_ns(link, m) + e) + (ranks - 1) * reduction_ns(m, local_mem_bw_gbps)
    return streams * per_chunk


@lru_cache(maxsize=4096)
def ring_allgather_ns(link: Link, size_bytes: int, ranks: int, *, endpoint_delay_ns: int = 10, splits: int = 1) -> int:
    """Ring all-gather on one dimension of `ranks` NPUs, `size_bytes` each rank's contribution (how
    ASTRA-Sim's ALL_GATHER reads comm_size: Ring's msg_size is the data size, the result N times
    it). Each of the `splits` chunks takes N-1 hand-offs of the whole chunk, each a link transfer
    plus the endpoint delay, with no reduction, plus one endpoint delay to start; unlike the
    all-reduce, the chunk is not raised to the NPU count (Sys::determine_chunk_size)."""
    if ranks <= 1:
        return 0
    chunk = size_bytes // splits
    streams = -(-size_bytes // chunk) if chunk else 0
    e = endpoint_delay_ns
    return streams * (e + (ranks - 1) * (p2p_ns(link, chunk) + e))


def ring_alltoall_ns(link: Link, size_bytes: int, ranks: int, *, endpoint_delay_ns: int = 10) -> int:
    """Ring all-to-all on one dimension of `ranks` NPUs, `size_bytes` one rank's whole buffer (size/N
    for each rank). As both ASTRA-Sim builds run ALL_TO_ALL with the ring implementation (measured:
    1 MiB over 2, 4 and 8 NPUs at 16 GB/s, 20 us: 50,537, 211,618 and 773,902 ns): N(N-1)/2
    hand-offs of size/N bytes, each a link transfer plus the endpoint delay, one endpoint delay to
    start."""
    if ranks <= 1:
        return 0
    e = endpoint_delay_ns
    return e + ranks * (ranks - 1) // 2 * (p2p_ns(link, size_bytes // ranks) + e)


@lru_cache(maxsize=4096)
def ring_reducescatter_ns(link: Link, size_bytes: int, ranks: int, *, local_mem_bw_gbps: float,
                          endpoint_delay_ns: int = 10) -> int:
    """Ring reduce-scatter on one dimension of `ranks` NPUs, `size_bytes` the full tensor (each rank
    keeps size/N of the sum): the reduce-scatter half of ring_allreduce_ns, as ASTRA-Sim's Ring runs
    REDUCE_SCATTER: N-1 hand-offs of size/N bytes, each a link transfer plus the endpoint delay, N-1
    reductions of size/N, plus one endpoint delay to start."""
    if ranks <= 1:
        return 0
    m = size_bytes // ranks
    e = endpoint_delay_ns
    return e + (ranks - 1) * (p2p_ns(link, m) + e) + (ranks - 1) * reduction_ns(m, local_mem_bw_gbps)


def hierarchical_allreduce_ns(dims: tuple[tuple[Link, int], ...], size_bytes: int, *, local_mem_bw_gbps: float,
                              endpoint_delay_ns: int = 10, splits: int = 1, total_npus: int = 0) -> int:
    """An all-reduce over several dimensions, (link, NPUs) innermost first, as ASTRA-Sim's
    localBWAware collective runs it: reduce-scatter on every dimension but the last, all-reduce on
    the last, all-gather back down; each chunk's phases one after another."""
    dims = tuple((link, n) for link, n in dims if n > 1)
    if not dims:
        return 0
    if len(dims) == 1:
        return ring_allreduce_ns(dims[0][0], size_bytes, dims[0][1], local_mem_bw_gbps=local_mem_bw_gbps,
                                 endpoint_delay_ns=endpoint_delay_ns, splits=splits, total_npus=total_npus)
    chunk = size_bytes // splits
    if total_npus > chunk:
        chunk, size_bytes = total_npus, splits * total_npus
    e, c, per_chunk = endpoint_delay_ns, chunk, 0
    for link, n in dims[:-1]:
        per_chunk += ring_reducescatter_ns(link, c, n, local_mem_bw_gbps=local_mem_bw_gbps, endpoint_delay_ns=e)
        c //= n
    link, n = dims[-1]
    per_chunk += ring_allreduce_ns(link, c, n, local_mem_bw_gbps=local_mem_bw_gbps, endpoint_delay_ns=e)
    for link, n in reversed(dims[:-1]):
        per_chunk += ring_allgather_ns(link, c, n, endpoint_delay_ns=e)
        c *= n
    return -(-size_bytes // chunk) * per_chunk


def hierarchical_allgather_ns(dims: tuple[tuple[Link, int], ...], size_bytes: int, *, endpoint_delay_ns: int = 10,
                              splits: int = 1) -> int:
    """An all-gather over several dimensions (link, NPUs), innermost first, `size_bytes` one rank's
    part: ASTRA-Sim runs it outermost dimension first (its dim_mapper is reversed for All_Gather),
    each phase gathering what the previous one produced."""
    chunk = size_bytes // splits
    if not chunk:
        return 0
    c, per_chunk = chunk, 0
    for link, n in reversed(dims):
        if n > 1:
            per_chunk += ring_allgather_ns(link, c, n, endpoint_delay_ns=endpoint_delay_ns)
            c *= n
    return -(-size_bytes // chunk) * per_chunk


def mem_ns(bw_gbps: float, latency_ns: int, size_bytes: int) -> int:
    """Host (remote) memory load/store: latency + bytes / bandwidth, whole GB/s read as 1e9 B/s."""
    return int(latency_ns) + int(size_bytes / int(bw_gbps))
