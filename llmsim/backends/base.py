"""The contract every backend implements, in the spirit of ASTRA-Sim's common/ interfaces.

A backend declares how it runs, instead of the engine checking its type:

- TIMES_STAGES: the engine owns the clock. It forms a batch, calls submit(), and gets back when
  stage 0 frees and when the last stage finishes (the embedded model, upstream ASTRA-Sim).
- OWNS_CLOCK: the backend's own event loop drives the run through the step API of a Session
  (llmsim/session.py) and returns its result (LLMServingSim's ASTRA-Sim fork, which reports
  completions as its simulated time advances).

Backends are found by name through the `llmsim.backends` entry-point group (registry.py), so a
third party can add one (ns-3, htsim) without touching llmsim.
"""
from abc import ABC, abstractmethod
from enum import Enum
from typing import TYPE_CHECKING, ClassVar, NamedTuple

if TYPE_CHECKING:
    from ..batch import Batch
    from ..graph.dp_step import DPStep
    from ..graph.iteration import IterationGraph
    from ..instance import Instance
    from ..results import SimResult
    from ..session import Session


class StageEvent(NamedTuple):  # a tuple: one is made per stage per batch
    instance: int
    stage: int
    npu: int
    batch_id: int
    start_ns: int  # the stage starts (its input has arrived)
    end_ns: int  # its last rank is done
    first_rank_end_ns: int = -1  # rank 0 is done (differs only by a queued host-memory store)
    compute_ns: int = 0  # of end - start, the time spent computing (the rest is communication and memory)
    send_ns: int = 0  # the SEND to the next stage that ends the stage (the next stage waits on it)


class BatchTiming(NamedTuple):
    stage0_free_ns: int  # stage 0 can start the instance's next batch
    end_ns: int  # the last stage is done: the batch completes
    events: "list[StageEvent] | None"  # per stage; only when submit() was asked for detail


class Capability(Enum):
    TIMES_STAGES = "times stages in process; the engine owns the clock"
    OWNS_CLOCK = "owns the clock; drives a Session through the step API"


class Backend(ABC):
    name: ClassVar[str]
    capability: ClassVar[Capability]
    # prefill/decode disaggregation (llmsim/disagg.py): the backend runs KV transfers
    supports_disaggregation: ClassVar[bool] = False
    # data-parallel MoE groups (llmsim/dp.py): the backend runs lockstep steps (submit_dp_step)
    supports_data_parallel: ClassVar[bool] = False
    # False: submit() / submit_dp_step() accept no graphs and time batches from their shapes, so
    # the engine builds none unless something else (a trace dump) wants them.
    needs_graphs: ClassVar[bool] = True

    def kv_transfer_ns(self, src: int, dst: int, shard_bytes: int) -> int | None:
        """A KV transfer from instance src to instance dst, every rank sending shard_bytes to its
        peer at once; None: llmsim's network model times it (disagg.kv_transfer_ns)."""
        return None

    def submit_dp_step(self, insts: "list[Instance]", batches: "list[Batch | None]", tokens: list[int], step: "DPStep",
                       graphs: "list[IterationGraph] | None", t_ns: int, detail: bool = False):
        """One lockstep step of a data-parallel group from t_ns: rank r runs batches[r] (None: a
        dummy batch) on tokens[r] tokens, every MoE layer as `step` says (graph/dp_step.py); graphs
        (one per rank) when the backend needs_graphs or a dump wants them. Returns (the step's end:
        the slowest rank's, per-rank StageEvent lists when detail else None)."""
        raise NotImplementedError(f"backend {self.name} does not run data-parallel groups")

    def close(self) -> None:
        """Release processes and files; safe to call twice."""

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class StageTimingBackend(Backend):
    capability = Capability.TIMES_STAGES
    @abstractmethod
    def submit(self, inst: "Instance", batch: "Batch", graph: "IterationGraph | None", t_ns: int,
               detail: bool = False) -> BatchTiming:
        """Run the batch from t_ns on its instance's NPUs, after the batches submitted before it."""


class ClockOwningBackend(Backend):
    capability = Capability.OWNS_CLOCK

    @abstractmethod
    def drive(self, session: "Session") -> "SimResult":
        """Run the whole simulation, calling the session's steps as events happen."""
