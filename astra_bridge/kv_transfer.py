"""A prefill instance's KV cache moved to a decode instance, timed by ASTRA-Sim itself.

Rank k of the prefill instance SENDs its shard to rank k of the decode instance (ranks pair up in
order, wrapping when the decode instance is smaller), all at once; the transfer is done when the
last RECV is. Transfers do not contend in the congestion-unaware model, so each backend runs one
shape (instances, bytes) once, in a run of its own, and caches it.
"""
from pathlib import Path

from .chakra.codec import comp_node, global_metadata, recv_node, send_node, write_et


def rank_pairs(cluster, src: int, dst: int, ident) -> list[tuple[int, int]]:
    """(sender, receiver) in ASTRA-Sim's NPU numbers."""
    a, b = cluster.instances[src], cluster.instances[dst]
    return [(ident(a.first_npu + k), ident(b.first_npu + k % b.num_npus)) for k in range(a.num_npus)]


def write_kv_transfer(prefix: Path, pairs, shard_bytes: int, flavor: str, total_npus: int) -> Path:
    """`<prefix>.<npu>.et` for every NPU; NPUs with no part get an empty workload (the fork) or a
    1 us compute node (upstream rejects an empty one)."""
    prefix.parent.mkdir(parents=True, exist_ok=True)
    meta = global_metadata(schema="1.0.2-chakra.0.0.4", input_file="kv_transfer")
    nodes = {n: [] for n in range(total_npus)}
    for s, d in pairs:
        nodes[s].append(send_node(flavor, len(nodes[s]), "send_kv", s, d, shard_bytes, 1))
        nodes[d].append(recv_node(flavor, len(nodes[d]), "recv_kv", s, d, shard_bytes, 1))
    idle = [] if flavor == "llmservingsim" else [comp_node(flavor, 0, "idle", 1000)]
    for n, ns in nodes.items():
        write_et(f"{prefix}.{n}.et", meta, ns or idle)
    return prefix
