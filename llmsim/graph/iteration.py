"""Batch -> IterationGraph: per pipeline stage, the ordered ops each NPU of that stage runs.

Plain data shared by both backends. To stay cheap on the hot path a stage keeps one decoder
block's ops and a repeat count; `StageProgram.ops()` expands it only when traces are written.
"""
from dataclasses import dataclass
from enum import IntEnum


class OpKind(IntEnum):
    COMPUTE = 0
    ALLREDUCE = 1
    SEND = 2
    RECV = 3
    MEM_LOAD = 4
    MEM_STORE = 5
    ALLGATHER = 6  # size_bytes: one rank's contribution (ASTRA-Sim's ALL_GATHER comm_size)
    # A data-parallel group's MoE dispatch and combine (graph/dp_step.py): over the group's ranks
    # (the same TP rank of every DP rank), not the TP group.
    DP_ALLGATHER = 7  # size_bytes: one rank's contribution
    DP_REDUCESCATTER = 8  # size_bytes: the whole tensor (ASTRA-Sim's REDUCE_SCATTER comm_size)
    DP_ALLREDUCE = 9  # size_bytes: the whole tensor (vLLM's naive all2all backend's combine)
    DP_ALLTOALL = 10  # size_bytes: one rank's whole buffer, size/N to each rank (the all-to-all backends)


@dataclass(frozen=True)
class Op:
    kind: OpKind
    name: str
    duration_ns: int = 0  # COMPUTE
    size_bytes: int = 0  # communication and memory ops
    peer_stage: int = -1  # SEND/RECV


@dataclass(frozen=True)
class StageProgram:
    stage: int
    first_layer: int  # global index of its first decoder layer
    head_ops: tuple[Op, ...]  # RECV or MEM_LOAD, then the prologue (stage 0)
    block_ops: tuple[Op, ...]  # one decoder layer, run n_blocks times
    n_blocks: int
    tail_ops: tuple[Op, ...]  # the head layers (last stage), then SEND or MEM_STORE

    def ops(self):
        yield from self.head_ops
        for _ in range(self.n_blocks):
            yield from self.block_ops
        yield from self.tail_ops


@dataclass(frozen=True)
class IterationGraph:
    batch_id: int
    instance: int
    first_npu: int
    tp_size: int
    stages: tuple[StageProgram, ...]
    dp_step: int = -1  # a data-parallel group's step number (its ranks' graphs run together); -1: none

    @property
    def pp_size(self) -> int:
        return len(self.stages)

    def npu(self, stage: int, rank: int = 0) -> int:
        return self.first_npu + stage * self.tp_size + rank
