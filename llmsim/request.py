"""Request state as plain data; the scheduler and engine mutate it."""
from dataclasses import dataclass, field
from enum import Enum

from .itl import Itl


# Disaggregated serving (disagg.py): where a decode instance's request stands with its prompt's KV.
KV_LOCAL, KV_PENDING, KV_LOADING, KV_LOADED = 0, 1, 2, 3


class Status(Enum):
    WAITING = 0
    RUNNING = 1
    PREEMPTED = 2
    FINISHED = 3


@dataclass(eq=False, slots=True)
class Request:
    id: int
    arrival_ns: int
    prompt_len: int
    output_len: int  # tokens to generate
    token_ids: tuple[int, ...] | None = None  # prompt + output ids, used only for prefix hashing
    # scheduling state
    num_computed: int = 0  # tokens whose KV exists or is scheduled
    num_tokens: int = 0  # prompt + tokens generated so far
    is_init: bool = True  # until the first prefill completes
    status: Status = Status.WAITING
    num_preemptions: int = 0
    blocks: list[int] = field(default_factory=list)
    num_hashed_blocks: int = 0
    block_hashes: list[int] = field(default_factory=list)
    prefix_hit_tokens: int = 0
    recomputed_tokens: int = 0
    instance: int = -1
    # disaggregated serving: KV_* above (KV_LOCAL: computed here), and the instance that prefilled it
    kv_remote: int = 0
    prefill_instance: int = -1
    # agentic sessions: the next call is released tool_duration_ns after this one finishes
    next_in_session: "Request | None" = None
    tool_duration_ns: int = 0
    # outputs
    first_sched_ns: int = -1
    first_token_ns: int = -1
    last_token_ns: int = -1
    end_ns: int = -1
    itl_ns: Itl = field(default_factory=Itl)  # gaps between tokens; runs shared with a lane stored once

    def __post_init__(self):
        self.num_tokens = self.prompt_len

    @property
    def target_len(self) -> int:
        return self.prompt_len + self.output_len
