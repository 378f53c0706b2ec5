"""One simulation from configs to results: the library entry point the CLI and the API share."""
from dataclasses import dataclass

from .accounting import Accountant
from .backends.base import Backend, Capability
from .config.cluster import ClusterConfig, load_cluster_config
from .config.engine import EngineArgs
from .disagg import DisaggSession, is_disaggregated
from .dp_disagg import DisaggDPSession
from .graph.dp_step import ALLTOALL_BACKENDS
from .dp_reference import ReferenceDPEngine
from .dp import DPSession, GroupStepper, is_data_parallel, is_lockstep
from .errors import InputError
from .engine import Engine
from .instance import Instance, build_instance
from .paths import resolve_input
from .plugins import BACKENDS, load
from .request import Request
from .results import SimResult
from .router import DEFAULT_SEED
from .session import Session
from .workload import load_workload


@dataclass
class Simulation:
    cluster: ClusterConfig
    instances: list[Instance]
    requests: list[Request]
    arrival_shift_ns: int = 0  # subtracted from every arrival (see shift_late_start)


SYNTHETIC_WORKLOAD = "16 requests per instance, 64 prompt / 64 output tokens, all arriving at t=0"


# A workload whose first request arrives a day or more after t=0 (Unix-epoch timestamps) would
# spend the run idling and report throughput over that idle time.
LATE_START_NS = 86_400 * 10**9


def shift_late_start(requests: list[Request]) -> int:
    """Move a late-starting workload so its first request arrives at t=0; returns the shift."""
    first = min((r.arrival_ns for r in requests if r.arrival_ns >= 0), default=0)
    if first < LATE_START_NS:
        return 0
    for r in requests:
        if r.arrival_ns >= 0:  # -1: a session's follow-up call, timed from its predecessor
            r.arrival_ns -= first
    return first


def synthetic_requests(n_instances: int) -> list[Request]:
    # The reference's default when no dataset is given: 16 requests per instance, 64 in / 64 out.
    return [Request(id=i, arrival_ns=0, prompt_len=64, output_len=64) for i in range(16 * n_instances)]


def prepare(cluster_config: "str | ClusterConfig", args: EngineArgs, dataset: "str | list[Request] | None",
            num_reqs: int = 0, fast_path: bool = True) -> Simulation:
    """fast_path=False runs the plain scheduler (same results, slower: the reference for tests)."""
    if not isinstance(cluster_config, ClusterConfig):
        cluster_config = load_cluster_config(resolve_input(cluster_config))
    cluster = cluster_config
    instances = [build_instance(ic, args, fast_path) for ic in cluster.instances]
    caching = any(i.args.enable_prefix_caching for i in instances)
    if dataset is None:
        requests = synthetic_requests(len(instances))
    elif isinstance(dataset, list):
        requests = sorted(dataset, key=lambda r: (r.arrival_ns, r.id))
    else:
        requests = load_workload(resolve_input(dataset), num_reqs, with_token_ids=caching)
    return Simulation(cluster, instances, requests, shift_late_start(requests))


def make_backend(sim: Simulation, name: str = "embedded", options: dict | None = None) -> Backend:
    """A backend by name (built in, or from the llmsim.backends entry points)."""
    backend = load(BACKENDS, name)(sim, dict(options or {}))
    _check_disaggregation(sim, backend)
    _check_data_parallel(sim, backend)
    return backend


def _check_data_parallel(sim: Simulation, backend: Backend) -> None:
    if not is_data_parallel(sim.instances):
        return
    groups = {i.config.dp_group for i in sim.instances} - {None}
    lockstep = [n for n in groups if is_lockstep([i for i in sim.instances if i.config.dp_group == n])]
    if sim.instances[0].args.dp_sync == "reference" and (len(groups) > 1 or not lockstep or not all(
            i.config.dp_group for i in sim.instances)):
        backend.close()
        raise InputError(f"{sim.cluster.path}: dp_group: --dp-sync reference models the reference's run: one MoE "
                         "group and nothing beside it; use --dp-sync vllm")
    if not lockstep:  # a dense model's independent ranks
        return
    args = sim.instances[0].args
    if args.all2all_backend != "allgather_reducescatter" and args.dp_sync == "reference":
        backend.close()
        raise InputError(f"--all2all-backend {args.all2all_backend}: --dp-sync reference runs the reference's own "
                         "collectives; use --dp-sync vllm")
    if args.all2all_backend in ALLTOALL_BACKENDS and any(
            i.config.tp_size > 1 for i in sim.instances if i.config.dp_group in lockstep):
        backend.close()
        raise InputError(f"{sim.cluster.path}: tp_size: --all2all-backend {args.all2all_backend} is modelled for "
                         "data-parallel groups of tp_size 1 (an all-to-all over the DP ranks)")
    outside = [i.index for i in sim.instances if i.config.dp_group not in lockstep]
    if backend.capability is Capability.OWNS_CLOCK and outside:
        backend.close()
        raise InputError(f"{sim.cluster.path}: dp_group: on {backend.name} data-parallel groups step in llmsim's engine, "
                         f"which cannot time instances {outside} outside them there; put every instance in a group, "
                         "or use --astra-sim-flavor upstream or --backend embedded")
    if not backend.supports_data_parallel:
        backend.close()
        raise InputError(f"{sim.cluster.path}: dp_group: backend {backend.name} does not run data-parallel groups")
    if sim.instances[0].args.dp_sync == "reference" and backend.name != "embedded":
        backend.close()
        raise InputError(f"{sim.cluster.path}: dp_group: --dp-sync reference runs on the embedded backend only "
                         f"(it models the reference's own ASTRA-Sim run), not on {backend.name}")


def _check_disaggregation(sim: Simulation, backend: Backend) -> None:
    if is_disaggregated(sim.instances) and not backend.supports_disaggregation:
        backend.close()
        raise InputError(f"{sim.cluster.path}: pd_type: backend {backend.name} does not run prefill/decode "
                         "disaggregation")


def run(sim: Simulation, backend: Backend | None = None, *, routing_policy: str = "LOAD", log_interval_ns: int = 0,
        on_heartbeat=None, record_iterations: bool = False, on_graph=None, seed: int = DEFAULT_SEED,
        accounting: bool = True, timeline: bool = False, on_progress=None) -> SimResult:
    """Run the simulation on backend (default: a new embedded one), closing it afterwards.
    seed: the RAND routing policy's random seed. accounting: per-stage busy/idle rows in
    SimResult.stages (backends that time stages in process; the fork reports no stage events).
    timeline: keep what a timeline draws (every stage event, idle stretch and a state sample per batch)."""
    backend = backend or make_backend(sim)
    kw = dict(routing_policy=routing_policy, log_interval_ns=log_interval_ns, on_heartbeat=on_heartbeat,
              record_iterations=record_iterations or timeline, on_graph=on_graph, seed=seed)
    if is_disaggregated(sim.instances):
        _check_disaggregation(sim, backend)
        if is_data_parallel(sim.instances):  # DP groups inside the pools
            _check_data_parallel(sim, backend)
            session = DisaggDPSession(sim.instances, sim.requests, sim.cluster, **kw)
        else:
            session = DisaggSession(sim.instances, sim.requests, sim.cluster, **kw)
        session.transfer_ns = backend.kv_transfer_ns
    elif is_data_parallel(sim.instances):
        _check_data_parallel(sim, backend)
        if on_graph is not None and sim.instances[0].args.dp_sync == "reference":
            backend.close()
            raise InputError(f"{sim.cluster.path}: dp_group: --dp-sync reference writes no traces (it times the "
                             "reference's steps in process); use --dp-sync vllm with --dump-traces")
        session = DPSession(sim.instances, sim.requests, balancer=sim.instances[0].args.dp_sync == "vllm", **kw)
    else:
        session = Session(sim.instances, sim.requests, **kw)
    if timeline:
        session.samples = []
    session.on_progress = on_progress
    with backend:
        acct = None
        if accounting:
            acct = Accountant([i.config.pp_size for i in sim.instances], log_interval_ns, timeline)
        # A lockstep DP group steps in llmsim's engine on every backend (the fork's included: it
        # times each step in a run of its own).
        lockstep = [g for g in getattr(session, "groups", ()) if is_lockstep([sim.instances[i] for i in g])]
        if lockstep and sim.instances[0].args.dp_sync == "reference":  # no per-stage accounting (docs/moe.md)
            return ReferenceDPEngine(session, backend, sim.cluster).run()
        if backend.capability is Capability.OWNS_CLOCK and not lockstep:
            return backend.drive(session)
        steppers = [GroupStepper(session, g, backend, acct) for g in lockstep]
        result = Engine(session, backend, acct, steppers).run()
    if acct is not None:
        result.stages = acct.rows(result.end_ns, sim.instances)
        result.idle_segments = acct.segments
    return result
