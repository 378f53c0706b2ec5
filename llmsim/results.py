"""What a run produces, as plain records: the drivers fill them, metrics and the API read them."""
from dataclasses import dataclass, field

from .request import Request


@dataclass
class Heartbeat:
    t_ns: int
    batch_reqs: int
    prompt_tokens: int
    gen_tokens: int
    npu_mem_bytes: int
    running: int
    waiting: int


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
