"""IterationGraph -> Chakra execution traces, one `<prefix>.<npu>.et` per NPU of the instance.

Each NPU's nodes form one chain (every node depends on the previous one), as in the reference:
stage 0 starts with the input MEM_LOAD, later stages with a RECV from the previous stage; each
stage holds only its own layers; TP all-reduces carry the full tensor; non-final stages end with
the matching SEND (same tag, src, dst, size), the last stage with the output MEM_STORE.
The fork flavour keeps one COMP node per layer (durations in ns). Upstream reads whole
microseconds, so rounding ~300 layer nodes would drift by up to ~1 % per iteration: each run of
consecutive compute nodes is fused into one node, and the runs are rounded so that a stage's
running total of compute stays within half a microsecond of the exact one.
"""
from pathlib import Path

from llmsim.graph.iteration import IterationGraph, OpKind

from .chakra.codec import (CollectiveCommType, coll_node, comp_node, global_metadata, mem_node, recv_node,
                           send_node, write_et)


_DP_COLLECTIVES = {OpKind.DP_ALLGATHER: CollectiveCommType.ALL_GATHER, OpKind.DP_REDUCESCATTER:
                   CollectiveCommType.REDUCE_SCATTER, OpKind.DP_ALLREDUCE: CollectiveCommType.ALL_REDUCE,
                   OpKind.DP_ALLTOALL: CollectiveCommType.ALL_TO_ALL}


def npu_nodes(graph: IterationGraph, stage: int, rank: int, flavor: str, multi_dim: bool,
              first_id: int = 0, mem_cost_ns=None, tag: int | None = None, layout=None, dp_pg: str | None = None) -> list:
    """mem_cost_ns(size) -> ns: with it, upstream traces fold host-memory ops into compute time.
    tag: the send/recv tag (default: the batch id). layout (inputs.AstraLayout): ASTRA-Sim's NPU
    numbering and the TP collectives' dimensions, when not the reference's flat layout. dp_pg: the
    DP collectives' communicator group (a DP group beside others: dp_steps.py); None: they span
    the dimensions beside TP's."""
    tag = graph.batch_id if tag is None else tag
    prog = graph.stages[stage]
    ident = layout.id if layout is not None else (lambda n: n)
    me = ident(graph.npu(stage, rank))
    # TP collectives span dimension 0 only
    dims = list(layout.tp_involved) if layout is not None and layout.tp_involved else (
        [True, False] if multi_dim and layout is None else None)
    # A DP group's collectives span every other dimension: the same TP rank of each DP rank (the
    # bridge runs a group alone in the cluster: astra_bridge/dp_steps.py)
    dp_dims = None if dims is None else [not d for d in dims]
    nodes, fused, fused_names = [], 0, []

    def add(make, *args, **kw):
        deps = [nodes[-1].id] if nodes else []
        nodes.append(make(flavor, first_id + len(nodes), *args, data_deps=deps, **kw))

    # Upstream reads whole microseconds. Rounding each fused run on its own drifts: a stage
    # repeats the same layer 16-40 times, so the runs' rounding errors repeat too and add up
    # (+4 to +6 us per stage on the tp=2 x pp=2 example). Each run is instead rounded so the
    # stage's running total stays within half a microsecond of the exact one.
    exact_ns, written_us = 0, 0
    sends = recvs = 0  # the k-th message of a boundary (hidden states, residual) gets tag _tag(tag, k)

    def flush():
        nonlocal fused, fused_names, exact_ns, written_us
        if fused:
            name = fused_names[0] if len(fused_names) == 1 else f"{fused_names[0]}..{fused_names[-1]}({len(fused_names)})"
            if flavor == "upstream":
                exact_ns += fused
                us = max(1, (exact_ns + 500) // 1000 - written_us)
                written_us += us
                add(comp_node, name, us * 1000)
            else:
                add(comp_node, name, fused)
        fused, fused_names = 0, []

    for row, op in enumerate(prog.ops()):
        if flavor == "upstream" and mem_cost_ns is not None and op.kind in (OpKind.MEM_LOAD, OpKind.MEM_STORE):
            # Upstream's remote-memory model asserts on 0 ns events and crashes on MEM nodes with
            # tp > 1: the transfer's time is folded into the neighbouring compute run instead.
            fused += mem_cost_ns(op.size_bytes)
            fused_names.append(op.name)
            continue
        if op.kind is OpKind.COMPUTE:
            name = f"{op.name}_{row}"  # row index within the stage, as the reference names rows
            if flavor == "upstream":
                fused += op.duration_ns
                fused_names.append(name)
            else:
                add(comp_node, name, op.duration_ns)
            continue
        flush()
        if op.kind in (OpKind.ALLREDUCE, OpKind.ALLGATHER):
            kind = CollectiveCommType.ALL_REDUCE if op.kind is OpKind.ALLREDUCE else CollectiveCommType.ALL_GATHER
            add(coll_node, op.name, kind, op.size_bytes, involved_dim=dims)
        elif op.kind in _DP_COLLECTIVES:
            kind = _DP_COLLECTIVES[op.kind]
            if dp_pg is None:
                add(coll_node, op.name, kind, op.size_bytes, involved_dim=dp_dims)
            else:  # the group from the comm-group file (upstream names it; the fork takes the file's)
                add(coll_node, op.name, kind, op.size_bytes, pg_name=dp_pg if flavor == "upstream" else None)
        elif op.kind is OpKind.SEND:
            add(send_node, op.name, me, ident(graph.npu(op.peer_stage, rank)), op.size_bytes, _tag(tag, sends))
            sends += 1
        elif op.kind is OpKind.RECV:
            add(recv_node, op.name, ident(graph.npu(op.peer_stage, rank)), me, op.size_bytes, _tag(tag, recvs))
            recvs += 1
        elif op.kind in (OpKind.MEM_LOAD, OpKind.MEM_STORE):
            add(mem_node, op.name, op.kind is OpKind.MEM_STORE, op.size_bytes)
    flush()
    return nodes


def _tag(tag: int, k: int) -> int:
    """The k-th message of a stage boundary: one tag each, so no message can match another's receive
    (the first keeps the batch's tag, as in the reference's single-tensor traces)."""
    return tag + k * (1 << 29)  # comm_tag is an int32; batch ids stay below 2^29


def write_graph(graph: IterationGraph, prefix: Path, flavor: str, multi_dim: bool, mem_cost_ns=None,
                anonymous: bool = False, layout=None, dp_pg=None) -> Path:
    """Write `<prefix>.<npu>.et` for every NPU of the graph's instance; returns the prefix.
    anonymous: no batch id in the files (tag 0), so two batches of one shape give identical bytes
    (a graph run in a process of its own needs no unique tags). dp_pg(rank) -> the DP collectives'
    communicator group of the instance's TP rank (npu_nodes)."""
    prefix.parent.mkdir(parents=True, exist_ok=True)
    name = "iteration" if anonymous else graph_folder(graph)
    meta = global_metadata(schema="1.0.2-chakra.0.0.4", input_file=name)
    for stage in range(graph.pp_size):
        for rank in range(graph.tp_size):
            npu = graph.npu(stage, rank) if layout is None else layout.id(graph.npu(stage, rank))
            write_et(f"{prefix}.{npu}.et", meta, npu_nodes(graph, stage, rank, flavor, multi_dim,
                                                           mem_cost_ns=mem_cost_ns, tag=0 if anonymous else None,
                                                           layout=layout, dp_pg=dp_pg(rank) if dp_pg else None))
    return prefix


def graph_folder(graph: IterationGraph) -> str:
    """Where a dump puts a graph's files: a batch's own folder, or one per step of a DP group (its
    ranks' NPUs run together)."""
    if graph.dp_step >= 0:
        return f"dp_step{graph.dp_step}"
    return f"instance{graph.instance}_batch{graph.batch_id}"


def write_wait(npus, prefix: Path, flavor: str, duration_ns: int, empty=()) -> Path:
    """A workload that only lets time pass (start-up, or an idle stage 0 waiting for its next
    event) on `npus`; the NPUs in `empty` get a workload with no nodes (done at once)."""
    prefix.parent.mkdir(parents=True, exist_ok=True)
    meta = global_metadata(schema="1.0.2-chakra.0.0.4", input_file="wait")
    for npu in npus:
        write_et(f"{prefix}.{npu}.et", meta, [comp_node(flavor, 0, f"wait_{duration_ns}ns", max(1, duration_ns))])
    for npu in empty:
        write_et(f"{prefix}.{npu}.et", meta, [])
    return prefix
