"""One lockstep step of a data-parallel group (llmsim/dp.py), as both kinds of backend run it: what
every MoE layer moves and computes (DPStep) and each rank's iteration graph, its MoE layers between
the dispatch and the combine.

vLLM's default all2all backend (allgather_reducescatter, AgRsAll2AllManager, docs/moe.md) gathers
every rank's hidden states and router logits over the DP group before the experts and
reduce-scatters their output after; every rank's experts see the gathered tokens. The embedded
backend times the same steps from their shapes (StageCosts.dp_times); tests/test_dp_groups.py
checks the two paths equal.
"""
from dataclasses import dataclass

from .builder import BatchShape, build_graph
from .iteration import IterationGraph, OpKind


# vLLM's all2all backends (--all2all-backend, ParallelConfig.all2all_backend) and how llmsim moves
# the tokens for each: the dispatch and the combine collectives of every MoE layer.
ALL2ALL_BACKENDS = ("allgather_reducescatter", "naive", "pplx", "deepep_high_throughput", "deepep_low_latency")
ALLTOALL_BACKENDS = ("pplx", "deepep_high_throughput", "deepep_low_latency")


@dataclass(frozen=True)
class DPStep:
    # (dispatch, combine): (OpKind, bytes) each, as the backend's graph and timing take them
    collectives: tuple[tuple[OpKind, int], tuple[OpKind, int]]
    moe_ns: int  # one MoE layer's expert block on the gathered tokens (its slowest EP rank)


def dp_step(insts, tokens: list[int], step_no: int) -> DPStep:
    """The step's MoE layer when rank r runs tokens[r] tokens; step_no names the step, so a random
    routing policy draws once per step (the same draw on every backend). The collectives follow the
    group's all2all backend (EngineArgs.all2all_backend):

    - allgather_reducescatter (vLLM's default, AgRsAll2AllManager): an all-gather of every rank's
      hidden states and router logits, a reduce-scatter of the experts' output back to each rank's
      own tokens. With uneven sizes vLLM runs them as one NCCL broadcast / reduce per rank in a
      group (all_gatherv, reduce_scatterv), so each is as slow as its largest rank's part: both are
      sized by the largest rank's tokens (the gather: x (hidden + experts); the scatter: ranks x
      largest x hidden, ASTRA-Sim's REDUCE_SCATTER splitting it evenly);
    - naive (NaiveAll2AllManager): the same gather (each rank's broadcast), an all-reduce of the
      whole gathered output (each rank then keeps its own rows);
    - pplx, deepep_*: an all-to-all of each token to the ranks holding its experts and back: one
      rank sends every peer the tokens of its (largest) batch that route there, by the routing
      policy's load of that peer, x hidden; both ways the same bytes. The kernels' own formats and
      buffers are not modelled (docs/moe.md)."""
    first = insts[0]
    m, b, n = first.model, first.layout.act_bytes, len(insts)
    gathered, top = sum(tokens), max(tokens)
    moe_ns = first.timer.moe_tokens_ns(gathered, ("dp", step_no), own=top)  # the gate on a rank's own tokens
    backend = first.args.all2all_backend
    if backend in ALLTOALL_BACKENDS:
        per_peer = max(load.tokens for load in first.timer.router.route(top)) * m.hidden_size * b
        a2a = (OpKind.DP_ALLTOALL, n * per_peer)
        return DPStep((a2a, a2a), moe_ns)
    gather = (OpKind.DP_ALLGATHER, top * (m.hidden_size + m.moe.num_experts) * b)
    if backend == "naive":
        combine = (OpKind.DP_ALLREDUCE, gathered * m.hidden_size * b)  # the whole gathered buffer
    else:
        combine = (OpKind.DP_REDUCESCATTER, n * top * m.hidden_size * b)
    return DPStep((gather, combine), moe_ns)


def rank_graph(inst, batch, tokens: int, step: DPStep, step_no: int) -> IterationGraph:
    """A rank's part of the step on `tokens` tokens (its batch's, or padded). batch None: vLLM's
    dummy batch (execute_dummy_batch: no attention, lm_head or sampler, no host I/O; id -1)."""
    timer = inst.timer
    if batch is None:
        d = timer.base_durations(tokens, 1)
        for layer in timer.per_sequence_layers:
            d.pop(layer, None)
    else:
        d = timer.base_durations(tokens, batch.num_reqs)
        t = timer.attention_ns(batch)
        if t > 0:
            for layer in timer.attention_layers:
                d[layer] = t
    for layer in timer.moe_layers:
        d[layer] = step.moe_ns
    shape = BatchShape(-1 if batch is None else batch.id, tokens)
    return build_graph(inst.layout, shape, d, step, host_io=batch is not None, dp_step=step_no)
