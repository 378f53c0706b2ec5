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

from .builder import build_graph
from .iteration import IterationGraph


@dataclass(frozen=True)
class DPStep:
    ranks: int
    gather_bytes: int  # the dispatch: one rank's tokens x (hidden + experts) (the largest rank's: the gather waits for it)
    scatter_bytes: int  # the combine: the experts' output for the gathered tokens, gathered x hidden
    moe_ns: int  # one MoE layer's expert block on the gathered tokens (its slowest EP rank)


@dataclass(frozen=True)
class _Shape:  # what build_graph reads of a batch
    id: int
    total_len: int


def dp_step(insts, tokens: list[int], step_no: int) -> DPStep:
    """The step's MoE layer when rank r runs tokens[r] tokens; step_no names the step, so a random
    routing policy draws once per step (the same draw on every backend)."""
    first = insts[0]
    m, b = first.model, first.layout.act_bytes
    gathered = sum(tokens)
    return DPStep(len(insts), max(tokens) * (m.hidden_size + m.moe.num_experts) * b, gathered * m.hidden_size * b,
                  first.timer.moe_tokens_ns(gathered, ("dp", step_no)))


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
    shape = _Shape(-1 if batch is None else batch.id, tokens)
    return build_graph(inst.layout, shape, d, step, host_io=batch is not None, dp_step=step_no)
