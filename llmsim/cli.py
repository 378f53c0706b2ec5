"""`llmsim` / `python -m llmsim`: flags compatible with the reference's `python -m serving`."""
import logging
import sys
from pathlib import Path
import warnings

import click

from . import metrics
from .backends.embedded import EmbeddedBackend
from .config.cluster import load_cluster_config
from .config.engine import DTYPE_BYTES, EngineArgs
from .engine import Engine
from .errors import InputError
from .instance import build_instance
from .paths import data_root
from .request import Request
from .units import NS_PER_S
from .workload import load_workload


def _synthetic(n_instances: int) -> list[Request]:
    # The reference's default when no dataset is given: 16 requests per instance, 64 in / 64 out.
    return [Request(id=i, arrival_ns=0, prompt_len=64, output_len=64) for i in range(16 * n_instances)]


def _nonneg(ctx, param, value):
    if value is not None and value < 0:
        raise click.BadParameter(f"must be >= 0, got {value}")
    return value


@click.command(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--cluster-config", default="configs/cluster/single_node_single_instance.json", show_default=True,
              help="Cluster config JSON (the reference's schema).")
@click.option("--dataset", default=None, help="Workload JSONL (input_toks, output_toks, arrival_time_ns[, token ids]).")
@click.option("--output", default=None, help="Per-request CSV to write.")
@click.option("--dtype", type=click.Choice(sorted(DTYPE_BYTES)), default=None, help="Weight dtype (instance key wins).")
@click.option("--kv-cache-dtype", type=click.Choice(["auto", "fp8"]), default="auto", show_default=True)
@click.option("--block-size", type=click.IntRange(min=1), default=16, show_default=True, help="Tokens per KV block.")
@click.option("--max-num-seqs", type=int, default=128, show_default=True, callback=_nonneg, help="0 = unlimited.")
@click.option("--max-num-batched-tokens", type=int, default=2048, show_default=True, callback=_nonneg,
              help="Token budget per step; 0 = max_position_embeddings.")
@click.option("--long-prefill-token-threshold", type=int, default=0, show_default=True, callback=_nonneg)
@click.option("--enable-prefix-caching/--no-enable-prefix-caching", default=True, show_default=True)
@click.option("--enable-chunked-prefill/--no-enable-chunked-prefill", default=True, show_default=True)
@click.option("--reserve-full-isl/--no-reserve-full-isl", default=True, show_default=True,
              help="Admit a request only if its whole current sequence fits in free blocks.")
@click.option("--npu-memory-utilization", type=click.FloatRange(0, 1, min_open=True), default=0.9, show_default=True)
@click.option("--request-routing-policy", type=click.Choice(["LOAD", "RR", "RAND"]), default="LOAD", show_default=True)
@click.option("--num-reqs", type=int, default=0, callback=_nonneg, help="Use the first N dataset lines (0 = all).")
@click.option("--log-interval", type=click.FloatRange(min=0), default=1.0, show_default=True,
              help="Seconds of simulated time between [INFO] lines; 0 = none.")
@click.option("--iteration-log", default=None, help="CSV with one row per batch and pipeline stage.")
@click.option("--backend", type=click.Choice(["embedded"]), default="embedded", show_default=True)
@click.option("--quiet", is_flag=True, help="No [INFO] lines and no summary.")
def main(cluster_config, dataset, output, dtype, kv_cache_dtype, block_size, max_num_seqs, max_num_batched_tokens,
         long_prefill_token_threshold, enable_prefix_caching, enable_chunked_prefill, reserve_full_isl,
         npu_memory_utilization, request_routing_policy, num_reqs, log_interval, iteration_log, backend, quiet):
    """Simulate vLLM-style LLM serving on the cluster described by --cluster-config."""
    logging.basicConfig(format="[%(levelname)s] %(message)s", level=logging.WARNING)
    warnings.simplefilter("default")
    warnings.formatwarning = lambda msg, cat, *a, **k: f"[WARNING] {msg}\n"
    try:
        _run(**locals())
    except InputError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(e.exit_code)


def _run(cluster_config, dataset, output, dtype, kv_cache_dtype, block_size, max_num_seqs, max_num_batched_tokens,
         long_prefill_token_threshold, enable_prefix_caching, enable_chunked_prefill, reserve_full_isl,
         npu_memory_utilization, request_routing_policy, num_reqs, log_interval, iteration_log, backend, quiet):
    for path, what in ((output, "output"), (iteration_log, "iteration log")):
        if path:
            metrics.check_writable(path, what)
    cluster = load_cluster_config(cluster_config)
    for w in cluster.warnings:
        click.echo(f"[WARNING] {w}", err=True)
    args = EngineArgs(max_num_seqs=max_num_seqs, max_num_batched_tokens=max_num_batched_tokens,
                      long_prefill_token_threshold=long_prefill_token_threshold, dtype=dtype,
                      kv_cache_dtype=kv_cache_dtype, enable_prefix_caching=enable_prefix_caching,
                      enable_chunked_prefill=enable_chunked_prefill, reserve_full_isl=reserve_full_isl,
                      block_size=block_size, npu_memory_utilization=npu_memory_utilization)
    root = data_root()
    instances = [build_instance(ic, args, root) for ic in cluster.instances]
    for inst in instances:
        if inst.profile_note:
            click.echo(f"[WARNING] {inst.profile_note}", err=True)
    caching = any(i.args.enable_prefix_caching for i in instances)
    requests = load_workload(dataset, num_reqs, with_token_ids=caching) if dataset else _synthetic(len(instances))
    if not quiet:
        for inst in instances:
            m = inst.memory
            click.echo(f"[INFO] instance {inst.index}: {inst.model.name} on {inst.config.num_npus} x "
                       f"{inst.config.hardware} (tp={inst.config.tp_size}, pp={inst.config.pp_size}), {inst.dtype}, "
                       f"timing: measured profile {inst.timer.bundle.variant}/tp{inst.config.tp_size}; "
                       f"KV cache {m.num_blocks} blocks x {m.block_size} tokens; layers per stage "
                       f"{[s.layers for s in m.stages]}")
    interval_ns = int(round(log_interval * NS_PER_S))
    if quiet:
        interval_ns = 0  # no lines to print, and the summary does not use them
    on_hb = None if interval_ns == 0 else (lambda hb, iv: click.echo(metrics.heartbeat_line(hb, iv)))
    engine = Engine(instances, EmbeddedBackend(cluster), requests, routing_policy=request_routing_policy,
                    log_interval_ns=interval_ns, on_heartbeat=on_hb, record_iterations=iteration_log is not None)
    result = engine.run()
    if not quiet:
        click.echo(metrics.summary(result, instances, [i.scheduler.stats for i in instances]))
    files = {}  # everything is rendered before anything is written
    if output:
        files[output] = metrics.requests_csv(result, instances)
        if result.unfinished:
            files[f"{output}.unfinished.csv"] = metrics.unfinished_csv(result)
    if iteration_log:
        files[iteration_log] = metrics.iteration_csv(result.iteration_log)
    try:
        for path, text in files.items():
            metrics.write_atomic(path, text)
        if output and not result.unfinished and Path(f"{output}.unfinished.csv").exists():
            Path(f"{output}.unfinished.csv").unlink()  # stale, from an earlier run
    except OSError as e:
        raise InputError(f"{e.filename}: cannot write output ({e.strerror})") from None
    if result.unfinished:
        click.echo(f"[WARNING] {len(result.unfinished)} request(s) did not finish; first: request "
                   f"{result.unfinished[0][0].id}: {result.unfinished[0][1]}", err=True)
