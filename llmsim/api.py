"""The public Python API: configs, a workload and engine arguments in; pandas DataFrames out.

    import llmsim
    res = llmsim.run("configs/cluster/single_node_pp_instance.json", "workloads/example_trace.jsonl",
                     engine={"dtype": "float16"})
    res.requests   # one row per finished request (the per-request CSV's figures)
    res.iterations # one row per batch and pipeline stage
    res.summary    # one row: throughputs, TTFT / TPOT / ITL statistics, preemptions, prefix hits
    res.stages     # per pipeline stage: busy compute / communication, idle by cause, bubble fraction

Nothing is written to disk. The CLI's main command is this plus file output.
"""
from dataclasses import dataclass, fields
from functools import cached_property

from .config.cluster import ClusterConfig, cluster_from_dict, load_cluster_config
from .config.engine import EngineArgs
from .errors import InputError
from .metrics import ITERATION_HEADER, finished_requests, request_metrics, summary_stats
from .request import Request
from .results import SimResult
from .router import DEFAULT_SEED
from .simulate import Simulation, make_backend, prepare
from .simulate import run as run_simulation
from .workload import load_workload, requests_from_records

__all__ = ["EngineArgs", "InputError", "Results", "cluster_from_dict", "load_cluster_config", "load_workload",
           "requests_from_records", "run"]

REQUEST_COLUMNS = ["instance", "request_id", "model", "input_tokens", "output_tokens", "arrival_ns", "end_ns",
                   "latency_ns", "queuing_delay_ns", "ttft_ns", "tpot_ns", "itl_ns"]


@dataclass
class Results:
    """One run's results; the tables are built (with pandas) when first read."""
    sim: Simulation
    raw: SimResult
    backend: str = "embedded"

    @cached_property
    def requests(self):
        import pandas as pd

        rows = []
        for inst, done in zip(self.sim.instances, self.raw.finished):
            for r in done:
                m = request_metrics(r)
                rows.append((r.instance, r.id, inst.model.name, r.prompt_len, r.output_len, r.arrival_ns, r.end_ns,
                             m.latency_ns, m.queuing_ns, m.ttft_ns, m.tpot_ns, list(r.itl_ns)))
        df = pd.DataFrame(rows, columns=REQUEST_COLUMNS)
        if self.raw.disagg is not None:  # disaggregated: "instance" is the decode instance
            df.insert(1, "prefill_instance", [r.prefill_instance for done in self.raw.finished for r in done])
        return df

    @cached_property
    def unfinished(self):
        import pandas as pd

        return pd.DataFrame([(r.id, r.instance, r.prompt_len, r.output_len, r.arrival_ns,
                              max(0, r.num_tokens - r.prompt_len), why) for r, why in self.raw.unfinished],
                            columns=["request_id", "instance", "input_tokens", "output_tokens", "arrival_ns",
                                     "generated_tokens", "reason"])

    @cached_property
    def iterations(self):
        """Empty unless run(..., iterations=True)."""
        import pandas as pd

        return pd.DataFrame([[getattr(r, f.name) for f in fields(r)] for r in self.raw.iteration_log],
                            columns=ITERATION_HEADER)

    @cached_property
    def heartbeats(self):
        import pandas as pd

        return pd.DataFrame([{k: v for k, v in vars(h).items() if k != "instances"} for h in self.raw.heartbeats],
                            columns=["t_ns", "batch_reqs", "prompt_tokens", "gen_tokens", "npu_mem_bytes", "running",
                                     "waiting"])

    @cached_property
    def stages(self):
        """Per-stage accounting (docs/pipeline.md): busy compute/communication and idle by cause, one row
        per stage for the whole run (window "run"), then per log interval. Empty on the fork backend."""
        import pandas as pd

        from .stage_report import STAGE_COLUMNS

        return pd.DataFrame(self.raw.stages or [], columns=STAGE_COLUMNS)

    @cached_property
    def summary(self):
        import pandas as pd

        stats = summary_stats(self.raw, [i.scheduler.stats for i in self.sim.instances])
        return pd.DataFrame([{"backend": self.backend, **stats}])

    def finished_requests(self) -> list[Request]:
        return finished_requests(self.raw)


def _cluster(cluster) -> ClusterConfig:
    if isinstance(cluster, ClusterConfig):
        return cluster
    if isinstance(cluster, dict):
        return cluster_from_dict(cluster)
    return load_cluster_config(cluster)


def _engine(engine) -> EngineArgs:
    if engine is None:
        return EngineArgs()
    if isinstance(engine, EngineArgs):
        return engine
    known = {f.name for f in fields(EngineArgs)}
    unknown = sorted(set(engine) - known)
    if unknown:
        raise InputError(f"engine: unknown argument(s) {', '.join(unknown)} (known: {', '.join(sorted(known))})")
    return EngineArgs(**engine)


def run(cluster, workload=None, engine=None, *, backend: str = "embedded", backend_options: dict | None = None,
        routing_policy: str = "LOAD", num_reqs: int = 0, iterations: bool = False, log_interval_s: float = 0.0,
        fast_path: bool = True, seed: int = DEFAULT_SEED) -> Results:
    """Simulate and return Results.

    cluster: a cluster-config path, a dict in the same schema, or a ClusterConfig.
    workload: a JSONL path, a list of dicts in the JSONL schema (input_toks, output_toks,
      arrival_time_ns[, input_tok_ids, output_tok_ids, sub_requests]), a list of Requests, or None
      (the reference's default: 16 requests per instance, 64 in / 64 out).
    engine: EngineArgs or a dict of its fields (dtype, max_num_seqs, max_num_batched_tokens, ...).
    iterations: keep the per-batch, per-stage log (Results.iterations).
    seed: the RAND routing policy's random seed (42 by default).
    Bad input raises InputError with the one-line message the CLI prints.
    """
    args = _engine(engine)
    if isinstance(workload, list) and workload and isinstance(workload[0], dict):
        records = workload[:num_reqs] if num_reqs else workload
        workload = requests_from_records(records, with_token_ids=args.enable_prefix_caching)
    sim = prepare(_cluster(cluster), args, workload, num_reqs, fast_path=fast_path)
    be = make_backend(sim, backend, backend_options)
    raw = run_simulation(sim, be, routing_policy=routing_policy, record_iterations=iterations,
                         log_interval_ns=int(round(log_interval_s * 1e9)), seed=seed)
    return Results(sim, raw, backend)
