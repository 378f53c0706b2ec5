"""Build an IterationGraph for a batch from an instance's layout and its per-layer timings."""
from dataclasses import dataclass

from ..batch import Batch
from ..config.model import ModelSpec
from ..perf.architecture import Architecture
from .iteration import IterationGraph, Op, OpKind, StageProgram
from ..stage_split import stage_layer_counts

# Row-parallel linears end in a TP all-reduce of the full activation. So does an MoE block
# without expert parallelism: vLLM's Qwen3MoeSparseMoeBlock / Qwen2MoeSparseMoeBlock build their
# FusedMoE (SharedFusedMoE) and shared expert with reduce_results=False, add the shared output to
# the routed one, and all-reduce the sum once over the TP group
# (experts.maybe_all_reduce_tensor_model_parallel); MixtralMoE's FusedMoE reduces its own output
# (reduce_results=True). Either way: one all-reduce of tokens x hidden after the block. The same
# with expert parallelism inside the TP group (ep = tp, no DP): vLLM creates no all2all manager
# at data_parallel_size 1 and FusedMoE dispatches nothing (its naive dispatch/combine needs
# dp_size > 1), every rank runs its own experts on all the batch's tokens and the partial outputs
# are all-reduced the same way (FusedMoE.maybe_all_reduce_tensor_model_parallel; docs/moe.md).
ALLREDUCE_AFTER = frozenset({"o_proj", "down_proj", "moe"})
# What a non-final stage hands on in vLLM: its IntermediateTensors. Every family llmsim models
# (Llama, Qwen3, Mixtral, PhiMoE, Qwen3-MoE) builds them from
# make_empty_intermediate_tensors_factory(["hidden_states", "residual"], hidden_size), in the
# model's dtype.
PP_TENSORS = ("hidden_states", "residual")


@dataclass(frozen=True)
class BatchShape:
    """What build_graph reads of a batch: a probe, or a DP rank's padded (or dummy) step."""
    id: int
    total_len: int


@dataclass(frozen=True)
class InstanceLayout:
    instance: int
    first_npu: int
    model: ModelSpec
    arch: Architecture
    tp_size: int
    pp_size: int
    act_bytes: int  # bytes per activation element (the weight dtype's width)
    stage_transfer: str = "vllm"  # EngineArgs.stage_transfer

    @property
    def layer_counts(self) -> list[int]:
        return stage_layer_counts(self.model.num_layers, self.pp_size)


def _compute_ops(layers, durations: dict[str, int], act_bytes: int, tp: int, dp=None, moe=()) -> list[Op]:
    ops = []
    for name in layers:
        d = durations.get(name)
        if d is None:  # layer absent from the profile (e.g. no attention row): skipped
            continue
        if dp is not None and name in moe:  # a DP group's dispatch, experts, combine (graph/dp_step.py)
            (k0, b0), (k1, b1) = dp.collectives
            ops += [Op(k0, "moe.dispatch", size_bytes=b0), Op(OpKind.COMPUTE, name, duration_ns=d),
                    Op(k1, "moe.combine", size_bytes=b1)]
        else:
            ops.append(Op(OpKind.COMPUTE, name, duration_ns=d))
        if tp > 1 and name in ALLREDUCE_AFTER:
            ops.append(Op(OpKind.ALLREDUCE, f"{name}.allreduce", size_bytes=act_bytes))
    return ops


def _boundary_ops(layout: InstanceLayout, tokens: int, s: int) -> tuple[list[Op], list[Op]]:
    """(the receiving stage s's head ops, the sending stage s-1's tail ops) at boundary s-1 -> s.

    vLLM (GroupCoordinator.isend_tensor_dict / irecv_tensor_dict with all_gather_group = the TP
    group): each tensor whose element count divides by tp is cut into tp slices; rank r sends
    slice r to rank r of the next stage, whose ranks post both receives and then all-gather each
    tensor (comm size: one rank's slice, as ASTRA-Sim's ALL_GATHER takes it). The reference
    sends one activation tensor, whole, from every rank.
    """
    m, tp, b = layout.model, layout.tp_size, layout.act_bytes
    full = tokens * m.hidden_size * b
    if layout.stage_transfer == "reference":
        return ([Op(OpKind.RECV, "recv_activation", size_bytes=full, peer_stage=s - 1)],
                [Op(OpKind.SEND, "send_activation", size_bytes=full, peer_stage=s)])
    split = tp > 1 and m.hidden_size % tp == 0  # every token's row divides, so every batch's tensor does
    part = full // tp if split else full
    recv = [Op(OpKind.RECV, f"recv_{t}", size_bytes=part, peer_stage=s - 1) for t in PP_TENSORS]
    if split:
        recv += [Op(OpKind.ALLGATHER, f"{t}.allgather", size_bytes=part) for t in PP_TENSORS]
    return recv, [Op(OpKind.SEND, f"send_{t}", size_bytes=part, peer_stage=s) for t in PP_TENSORS]


def build_graph(layout: InstanceLayout, batch: Batch, durations: dict[str, int], dp=None,
                host_io: bool = True, dp_step: int = -1) -> IterationGraph:
    """dp (graph/dp_step.DPStep): a data-parallel group's step, each MoE layer between its dispatch
    and combine; host_io False: no token ids in or out (vLLM's DP dummy batch)."""
    m, arch, pp, tp = layout.model, layout.arch, layout.pp_size, layout.tp_size
    b = layout.act_bytes
    act = batch.total_len * m.hidden_size * b  # one activation tensor: the TP all-reduces' size
    block = tuple(_compute_ops(arch.block_layers, durations, act, tp, dp, arch.mlp_moe))
    stages, first = [], 0
    for s, n in enumerate(layout.layer_counts):
        if s == 0:
            # token ids come in from host memory
            head = [Op(OpKind.MEM_LOAD, "input", size_bytes=batch.total_len * 2 * b)] if host_io else []
            head += _compute_ops(arch.prologue, durations, act, tp)
        else:
            head = _boundary_ops(layout, batch.total_len, s)[0]
        if s == pp - 1:
            tail = _compute_ops(arch.head, durations, act, tp)
            if host_io:
                tail.append(Op(OpKind.MEM_STORE, "output", size_bytes=4 * batch.total_len))
        else:
            tail = _boundary_ops(layout, batch.total_len, s + 1)[1]
        stages.append(StageProgram(s, first, tuple(head), block, n, tuple(tail)))
        first += n
    return IterationGraph(batch.id, layout.instance, layout.first_npu, tp, tuple(stages), dp_step)
