"""One simulation from configs to results: the library entry point the CLI commands share."""
from dataclasses import dataclass

from .backends.embedded import EmbeddedBackend
from .config.cluster import ClusterConfig, load_cluster_config
from .config.engine import EngineArgs
from .engine import Engine, SimResult
from .instance import Instance, build_instance
from .paths import data_root
from .request import Request
from .workload import load_workload


@dataclass
class Simulation:
    cluster: ClusterConfig
    instances: list[Instance]
    requests: list[Request]


def synthetic_requests(n_instances: int) -> list[Request]:
    # The reference's default when no dataset is given: 16 requests per instance, 64 in / 64 out.
    return [Request(id=i, arrival_ns=0, prompt_len=64, output_len=64) for i in range(16 * n_instances)]


def prepare(cluster_config: str, args: EngineArgs, dataset: str | None, num_reqs: int = 0,
            fast_path: bool = True) -> Simulation:
    """fast_path=False runs the plain scheduler (same results, slower: the reference for tests)."""
    cluster = load_cluster_config(cluster_config)
    root = data_root()
    instances = [build_instance(ic, args, root, fast_path) for ic in cluster.instances]
    caching = any(i.args.enable_prefix_caching for i in instances)
    requests = load_workload(dataset, num_reqs, with_token_ids=caching) if dataset else synthetic_requests(len(instances))
    return Simulation(cluster, instances, requests)


def run(sim: Simulation, *, routing_policy: str = "LOAD", log_interval_ns: int = 0, on_heartbeat=None,
        record_iterations: bool = False, on_graph=None, engine_factory=None) -> SimResult:
    """engine_factory(sim, **engine_kw) -> (engine, cleanup) swaps in another backend (the ASTRA-Sim bridge)."""
    kw = dict(routing_policy=routing_policy, log_interval_ns=log_interval_ns, on_heartbeat=on_heartbeat,
              record_iterations=record_iterations, on_graph=on_graph)
    if engine_factory is None:
        return Engine(sim.instances, EmbeddedBackend(sim.cluster), sim.requests, **kw).run()
    engine, cleanup = engine_factory(sim, **kw)
    try:
        return engine.run()
    finally:
        cleanup()
