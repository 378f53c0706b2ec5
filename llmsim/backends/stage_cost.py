"""Per-stage costs of a batch on the embedded backend without building its graph.

A stage's busy time is a sum of op durations, and each op depends on one thing: dense ops,
all-reduces, sends and host transfers on the batch's tokens, per-sequence ops (lm_head, sampler)
on its request count, attention ops on the attention time t, MoE expert blocks on the batch's
routing (one draw per batch: a random routing policy cannot be cached by shape). So busy = tokens
part + requests part + (attention ops) * t + (MoE ops) * moe_t, the first two cached on their own
keys, t and moe_t computed per batch. Op counts and the communication
template come from a probe graph built with the real builder, and communication is timed by the
real backend, so this path and the graph path (traces, ASTRA-Sim) cannot drift apart unless the
builder stops scaling message sizes with tokens; tests/test_fast_path.py checks them equal.
"""
from collections import Counter

from ..graph.builder import BatchShape, InstanceLayout, build_graph
from ..graph.iteration import IterationGraph, Op, OpKind, StageProgram

_CACHE_CAP = 1 << 16


class StageCosts:
    def __init__(self, layout: InstanceLayout, timer, backend):
        self.layout = layout
        self.timer = timer
        self.backend = backend
        self._per_seq = list(timer.per_sequence_layers)
        self._by_tokens: dict[int, list[tuple[int, int, int]]] = {}
        self._by_reqs: dict[int, list[int]] = {}
        self._shapes: dict[tuple[int, int], list[tuple[int, int, int, int]]] = {}
        # Per stage: attention ops, MoE expert-block ops, and how many times each per-sequence and
        # each other timed layer runs; plus a one-token template of the stage's communication and host ops,
        # whose sizes all scale with the batch's tokens.
        self._attn_ops: list[int] = []
        self._moe_ops: list[int] = []
        self._seq_ops: list[Counter] = []
        self._tok_ops: list[Counter] = []
        base = timer.base_durations(1, 1)
        moe = set(timer.moe_layers)
        probe = build_graph(layout, BatchShape(0, 1), {**base, **{l: 1 for l in timer.attention_layers},
                                                   **{l: 1 for l in moe}})
        attn = set(timer.attention_layers)
        seq = set(self._per_seq)
        self._comm = []
        self._probe_stages = probe.stages
        self._moe = bool(moe)
        for prog in probe.stages:
            names = Counter(op.name for op in prog.ops() if op.kind is OpKind.COMPUTE)
            self._attn_ops.append(sum(names[l] for l in attn))
            self._moe_ops.append(sum(names[l] for l in moe))
            self._seq_ops.append(Counter({l: n for l, n in names.items() if l in seq}))
            self._tok_ops.append(Counter({l: n for l, n in names.items() if l not in seq and l not in attn
                                          and l not in moe}))
            self._comm.append(tuple(tuple(op for op in ops if op.kind is not OpKind.COMPUTE)
                                    for ops in (prog.head_ops, prog.block_ops, prog.tail_ops)))

    def _tokens_part(self, total_len: int) -> list[tuple[int, int, int]]:
        d = self.timer.base_durations(total_len, 1)
        scaled = lambda ops: tuple(Op(op.kind, op.name, op.duration_ns, op.size_bytes * total_len, op.peer_stage)
                                   for op in ops)
        comm = IterationGraph(0, self.layout.instance, self.layout.first_npu, self.layout.tp_size, tuple(
            StageProgram(p.stage, p.first_layer, scaled(head), scaled(block), p.n_blocks, scaled(tail))
            for p, (head, block, tail) in zip(self._probe_stages, self._comm)))
        sends = [self.backend.send_ns(p, self.layout.instance) for p in comm.stages]
        # (busy, load, store, of busy the communication, of that the SEND at the end)
        return [(busy + sum(n * d[l] for l, n in ops.items()), load, store, busy, send)
                for (busy, load, store), ops, send in zip(self.backend.stage_times(comm), self._tok_ops, sends)]

    def _reqs_part(self, num_reqs: int) -> list[int]:
        d = self.timer.base_durations(1, num_reqs)
        return [sum(n * d[l] for l, n in ops.items()) for ops in self._seq_ops]

    def times(self, batch) -> list[tuple[int, int, int]]:
        """(busy, host load, host store) per stage, as EmbeddedBackend.stage_times of the batch's graph."""
        shape = self._shape_of(batch)
        t = self.timer.attention_ns(batch)
        if self._moe:
            mt = self.timer.moe_batch_ns(batch)
            return [(b + k * t + m * mt, load, store) for (b, k, load, store, _, _), m in zip(shape, self._moe_ops)]
        return [(b + k * t, load, store) for b, k, load, store, _, _ in shape]

    def dp_times(self, batch, total_len: int, moe_ns: int) -> list[tuple[int, int, int]]:
        """(busy, host load, host store) per stage of one DP rank's step (llmsim/dp.py): its layers
        on total_len tokens (the batch's, or padded to the DP group's largest), attention from the
        batch, each MoE layer moe_ns (the gathered tokens' expert block and its collectives). batch
        None: vLLM's dummy batch (execute_dummy_batch: a forward without attention or sampling)."""
        if batch is None:
            tok = self._tokens_of(total_len)
            return [(b + m * moe_ns, 0, 0) for (b, _, _, _, _), m in zip(tok, self._moe_ops)]  # no host I/O
        shape = self._shape_of(batch, total_len)
        t = self.timer.attention_ns(batch)
        return [(b + k * t + m * moe_ns, load, store) for (b, k, load, store, _, _), m in zip(shape, self._moe_ops)]

    def dp_split(self, batch, total_len: int, moe_compute_ns: int) -> list[tuple[int, int]]:
        """(compute ns, SEND ns) per stage of a DP rank's real batch, as dp_times times it: the
        expert block (moe_compute_ns) is compute, its collectives communication."""
        shape = self._shape_of(batch, total_len)
        t = self.timer.attention_ns(batch)
        return [(b - comm + k * t + m * moe_compute_ns, send)
                for (b, k, _, _, comm, send), m in zip(shape, self._moe_ops)]

    def host_ns(self, total_len: int) -> tuple[int, int]:
        """(host load, host store) ns of the first and last stage's rank at total_len tokens."""
        tok = self._tokens_of(total_len)
        return tok[0][1], tok[-1][2]

    def _shape_of(self, batch, total_len: int | None = None):
        """The batch's shape costs, cached; total_len: its tokens padded (a DP rank's step)."""
        key = (batch.total_len if total_len is None else total_len, batch.num_reqs)
        shape = self._shapes.get(key)
        if shape is None:
            if len(self._shapes) >= _CACHE_CAP:
                self._shapes.clear()
            shape = self._shapes[key] = self._shape(*key)
        return shape

    def times_split(self, batch):
        """times(batch), and per stage (compute ns, SEND ns), as the backend's stage_split of its graph."""
        shape = self._shape_of(batch)
        t = self.timer.attention_ns(batch)
        mt = self.timer.moe_batch_ns(batch) if self._moe else 0
        busy = [b + k * t + m * mt for (b, k, _, _, _, _), m in zip(shape, self._moe_ops)]
        return ([(x, load, store) for x, (_, _, load, store, _, _) in zip(busy, shape)],
                [(x - comm, send) for x, (_, _, _, _, comm, send) in zip(busy, shape)])

    def _shape(self, total_len: int, num_reqs: int) -> list[tuple[int, int, int, int, int, int]]:
        """Per stage: (busy without attention, attention ops, host load, host store, communication, SEND)."""
        tok = self._tokens_of(total_len)
        req = self._by_reqs.get(num_reqs)
        if req is None:
            req = self._by_reqs[num_reqs] = self._reqs_part(num_reqs)
        return [(b + r, k, load, store, comm, send) for (b, load, store, comm, send), r, k in zip(tok, req, self._attn_ops)]

    def _tokens_of(self, total_len: int) -> list[tuple[int, int, int, int, int]]:
        tok = self._by_tokens.get(total_len)
        if tok is None:
            if len(self._by_tokens) >= _CACHE_CAP:
                self._by_tokens.clear()
            tok = self._by_tokens[total_len] = self._tokens_part(total_len)
        return tok
