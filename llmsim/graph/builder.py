"""Build an IterationGraph for a batch from an instance's layout and its per-layer timings."""
from dataclasses import dataclass

from ..batch import Batch
from ..config.model import ModelSpec
from ..perf.architecture import Architecture
from .iteration import IterationGraph, Op, OpKind, StageProgram
from ..stage_split import stage_layer_counts

# Row-parallel linears end in a TP all-reduce of the full activation.
ALLREDUCE_AFTER = frozenset({"o_proj", "down_proj"})


@dataclass(frozen=True)
class InstanceLayout:
    instance: int
    first_npu: int
    model: ModelSpec
    arch: Architecture
    tp_size: int
    pp_size: int
    act_bytes: int  # bytes per activation element (the weight dtype's width)

    @property
    def layer_counts(self) -> list[int]:
        return stage_layer_counts(self.model.num_layers, self.pp_size)


def _compute_ops(layers, durations: dict[str, int], act_bytes: int, tp: int) -> list[Op]:
    ops = []
    for name in layers:
        d = durations.get(name)
        if d is None:  # layer absent from the profile (e.g. no attention row): skipped
            continue
        ops.append(Op(OpKind.COMPUTE, name, duration_ns=d))
        if tp > 1 and name in ALLREDUCE_AFTER:
            ops.append(Op(OpKind.ALLREDUCE, f"{name}.allreduce", size_bytes=act_bytes))
    return ops


def build_graph(layout: InstanceLayout, batch: Batch, durations: dict[str, int]) -> IterationGraph:
    m, arch, pp, tp = layout.model, layout.arch, layout.pp_size, layout.tp_size
    b = layout.act_bytes
    act = batch.total_len * m.hidden_size * b  # activation tensor handed between stages
    block = tuple(_compute_ops(arch.block_layers, durations, act, tp))
    stages, first = [], 0
    for s, n in enumerate(layout.layer_counts):
        if s == 0:
            # token ids come in from host memory
            head = [Op(OpKind.MEM_LOAD, "input", size_bytes=batch.total_len * 2 * b)]
            head += _compute_ops(arch.prologue, durations, act, tp)
        else:
            head = [Op(OpKind.RECV, "recv_activation", size_bytes=act, peer_stage=s - 1)]
        if s == pp - 1:
            tail = _compute_ops(arch.head, durations, act, tp)
            tail.append(Op(OpKind.MEM_STORE, "output", size_bytes=4 * batch.total_len))
        else:
            tail = [Op(OpKind.SEND, "send_activation", size_bytes=act, peer_stage=s + 1)]
        stages.append(StageProgram(s, first, tuple(head), block, n, tuple(tail)))
        first += n
    return IterationGraph(batch.id, layout.instance, layout.first_npu, tp, tuple(stages))
