"""What a run produces, as plain records: the drivers fill them, metrics and the API read them."""
from dataclasses import dataclass, field

from .request import Request


@dataclass
class InstanceBeat:
    """One instance at the end of a log interval (its tokens: those computed in the interval)."""
    running: int
    waiting: int
    kv_blocks_used: int
    kv_blocks_total: int
    prompt_tokens: int
    generated_tokens: int


@dataclass
class Heartbeat:
    t_ns: int
    batch_reqs: int
    prompt_tokens: int
    gen_tokens: int
    npu_mem_bytes: int
    running: int
    waiting: int
    instances: list[InstanceBeat] = field(default_factory=list)


@dataclass
class IterationRecord:
    batch_id: int
    instance: int
    stage: int
    npu: int
    start_ns: int
    end_ns: int
    requests: int
    prefill_tokens: int
    decode_tokens: int


@dataclass
class SimResult:
    finished: list[list[Request]]  # per instance, in completion order
    unfinished: list[tuple[Request, str]]
    end_ns: int
    prompt_tokens: int
    gen_tokens: int
    iterations: int
    heartbeats: list[Heartbeat] = field(default_factory=list)
    iteration_log: list[IterationRecord] = field(default_factory=list)
    stages: list[dict] | None = None  # per-stage accounting rows (llmsim/accounting.py); None: not available
    idle_segments: list | None = None  # (instance, stage, start, end, cause index), when kept for a timeline
    samples: list | None = None  # (t, instance, running, waiting, KV blocks used) per formation, for a timeline
    disagg: dict | None = None  # prefill/decode pools and KV transfers (disagg.py); None: colocated
    dp: list[dict] | None = None  # per data-parallel group: its ranks, lockstep steps, dummy batches, padding (dp.py)
