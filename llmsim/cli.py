"""`llmsim` / `python -m llmsim`: flags compatible with the reference's `python -m serving`;
`llmsim validate` compares a simulation with a recorded vLLM run."""
import functools
import gc
import logging
import signal
import sys
import warnings
from pathlib import Path

import click

from . import metrics
from .config.engine import DTYPE_BYTES, EngineArgs
from .errors import InputError
from .simulate import prepare, run
from .units import NS_PER_S


def _nonneg(ctx, param, value):
    if value is not None and value < 0:
        raise click.BadParameter(f"must be >= 0, got {value}")
    return value


ENGINE_OPTIONS = [
    click.option("--cluster-config", default="configs/cluster/single_node_single_instance.json", show_default=True,
                 help="Cluster config JSON (the reference's schema)."),
    click.option("--dataset", default=None, help="Workload JSONL (input_toks, output_toks, arrival_time_ns[, token ids])."),
    click.option("--dtype", type=click.Choice(sorted(DTYPE_BYTES)), default=None, help="Weight dtype (instance key wins)."),
    click.option("--kv-cache-dtype", type=click.Choice(["auto", "fp8"]), default="auto", show_default=True),
    click.option("--block-size", type=click.IntRange(min=1), default=16, show_default=True, help="Tokens per KV block."),
    click.option("--max-num-seqs", type=int, default=128, show_default=True, callback=_nonneg, help="0 = unlimited."),
    click.option("--max-num-batched-tokens", type=int, default=2048, show_default=True, callback=_nonneg,
                 help="Token budget per step; 0 = the maximum model length."),
    click.option("--max-model-len", type=int, default=0, callback=_nonneg,
                 help="Longest request (prompt + output) and cap of the token budget; 0 = max_position_embeddings."),
    click.option("--long-prefill-token-threshold", type=int, default=0, show_default=True, callback=_nonneg),
    click.option("--enable-prefix-caching/--no-enable-prefix-caching", default=True, show_default=True),
    click.option("--enable-chunked-prefill/--no-enable-chunked-prefill", default=True, show_default=True),
    click.option("--reserve-full-isl/--no-reserve-full-isl", default=True, show_default=True,
                 help="Admit a request only if its whole current sequence fits in free blocks."),
    click.option("--npu-memory-utilization", type=click.FloatRange(0, 1, min_open=True), default=0.9, show_default=True),
    click.option("--kv-capacity", type=click.Choice(["reference", "vllm"]), default="reference", show_default=True,
                 help="KV blocks from mem x util - weights (the reference), or vLLM's profile: also minus the "
                      "activation peak and non-torch memory."),
    click.option("--num-gpu-blocks", type=int, default=0, callback=_nonneg,
                 help="Pin the KV block count (e.g. vLLM's logged num_gpu_blocks); 0 = computed."),
    click.option("--timing", type=click.Choice(["auto", "profile", "roofline"]), default="auto", show_default=True,
                 help="Layer times from a measured profile bundle, the roofline model, or the bundle when one exists."),
    click.option("--request-routing-policy", type=click.Choice(["LOAD", "RR", "RAND"]), default="LOAD", show_default=True),
    click.option("--num-reqs", type=int, default=0, callback=_nonneg, help="Use the first N dataset lines (0 = all)."),
]

ENGINE_KEYS = ("dtype", "kv_cache_dtype", "block_size", "max_num_seqs", "max_num_batched_tokens", "max_model_len",
               "long_prefill_token_threshold", "enable_prefix_caching", "enable_chunked_prefill", "reserve_full_isl",
               "npu_memory_utilization", "kv_capacity", "num_gpu_blocks", "timing")


def engine_options(f):
    for opt in reversed(ENGINE_OPTIONS):
        f = opt(f)
    return f


def engine_args(opts: dict) -> EngineArgs:
    return EngineArgs(**{k: opts[k] for k in ENGINE_KEYS})


def user_errors(f):
    """Bad input ends the command with one `error:` line and exit code 2."""
    @functools.wraps(f)
    def wrapper(*a, **k):
        logging.basicConfig(format="[%(levelname)s] %(message)s", level=logging.WARNING)
        warnings.simplefilter("default")
        warnings.formatwarning = lambda msg, cat, *args, **kw: f"[WARNING] {msg}\n"
        # SIGTERM (timeout, docker stop) unwinds like Ctrl-C, so temp folders and ASTRA-Sim go too.
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
        try:
            return f(*a, **k)
        except InputError as e:
            click.echo(f"error: {e}", err=True)
            sys.exit(e.exit_code)
    return wrapper


def announce(sim, quiet: bool) -> None:
    for w in sim.cluster.warnings:
        click.echo(f"[WARNING] {w}", err=True)
    for inst in sim.instances:
        if inst.profile_note:
            click.echo(f"[WARNING] {inst.profile_note}", err=True)
        if not quiet:
            m = inst.memory
            click.echo(f"[INFO] instance {inst.index}: {inst.model.name} on {inst.config.num_npus} x "
                       f"{inst.config.hardware} (tp={inst.config.tp_size}, pp={inst.config.pp_size}), {inst.dtype}, "
                       f"timing: {inst.timer.describe()}; KV cache {m.num_blocks} blocks x {m.block_size} tokens "
                       f"({inst.args.kv_capacity if not inst.args.num_gpu_blocks else 'pinned'}); layers per stage "
                       f"{[s.layers for s in m.stages]}")


@click.group(invoke_without_command=True, context_settings={"help_option_names": ["-h", "--help"],
                                                           "max_content_width": 100})
@engine_options
@click.option("--output", default=None, help="Per-request CSV to write.")
@click.option("--log-interval", type=click.FloatRange(min=0), default=1.0, show_default=True,
              help="Seconds of simulated time between [INFO] lines; 0 = none.")
@click.option("--iteration-log", default=None, help="CSV with one row per batch and pipeline stage.")
@click.option("--backend", type=click.Choice(["embedded", "astra-sim"]), default="embedded", show_default=True,
              help="embedded: in process (ASTRA-Sim's analytical semantics); astra-sim: your ASTRA-Sim build.")
@click.option("--astra-sim-bin", default=None, help="ASTRA-Sim binary (else $LLMSIM_ASTRA_SIM, else third_party/).")
@click.option("--astra-sim-flavor", type=click.Choice(["llmservingsim", "upstream"]), default="llmservingsim",
              show_default=True, help="The LLMServingSim fork (persistent process) or upstream ASTRA-Sim.")
@click.option("--astra-sim-workdir", default=None, help="Run folder for ASTRA-Sim inputs, traces and logs "
              "(default: a temporary folder, removed unless --keep-traces).")
@click.option("--keep-traces", is_flag=True, help="Keep the ASTRA-Sim run folder (a temporary one is printed).")
@click.option("--astra-sim-timeout", type=click.FloatRange(min=0, min_open=True), default=120.0, show_default=True,
              help="Seconds ASTRA-Sim may take to report the next event before the run is abandoned.")
@click.option("--dump-traces", default=None, help="Write every iteration's per-NPU Chakra .et files here.")
@click.option("--trace-flavor", type=click.Choice(["llmservingsim", "upstream"]), default="llmservingsim",
              show_default=True, help="Node numbering and duration unit of --dump-traces.")
@click.option("--fast-path/--no-fast-path", default=True, show_default=True,
              help="Decode lanes (same results, faster); --no-fast-path runs the plain scheduler for checks.")
@click.option("--quiet", is_flag=True, help="No [INFO] lines and no summary.")
@click.pass_context
@user_errors
def main(ctx, **opts):
    """Simulate vLLM-style LLM serving on the cluster described by --cluster-config."""
    if ctx.invoked_subcommand is None:
        _simulate(opts)


def _simulate(o: dict) -> None:
    output, iteration_log, quiet = o["output"], o["iteration_log"], o["quiet"]
    for path, what in ((output, "output"), (iteration_log, "iteration log")):
        if path:
            metrics.check_writable(path, what)
    sim = prepare(o["cluster_config"], engine_args(o), o["dataset"], o["num_reqs"], fast_path=o["fast_path"])
    announce(sim, quiet)
    interval_ns = 0 if quiet else int(round(o["log_interval"] * NS_PER_S))
    on_hb = (lambda hb, iv: click.echo(metrics.heartbeat_line(hb, iv))) if interval_ns else None
    on_graph = factory = None
    if o["dump_traces"]:
        from astra_bridge.runner import trace_dumper  # the bridge is an optional edge: imported on use

        on_graph = trace_dumper(sim.cluster, o["dump_traces"], o["trace_flavor"])
    if o["backend"] == "astra-sim":
        factory = _astra_factory(o)
    # One run per process, and the run's structures break their own reference cycles (a lane
    # and its batch, a lane and its members): the cycle collector only costs time here.
    gc.freeze()
    gc.disable()
    result = run(sim, routing_policy=o["request_routing_policy"], log_interval_ns=interval_ns, on_heartbeat=on_hb,
                 record_iterations=iteration_log is not None, on_graph=on_graph, engine_factory=factory)
    instances = sim.instances
    if not quiet:
        click.echo(metrics.summary(result, instances, [i.scheduler.stats for i in instances]))
    files = {}  # everything is rendered before anything is written
    if output:
        files[output] = metrics.requests_csv_lines(result, instances)  # streamed: it can be GBs
        files[f"{output}.meta.json"] = metrics.run_metadata(sim, result, o)
        if result.unfinished:
            files[f"{output}.unfinished.csv"] = metrics.unfinished_csv(result)
    if iteration_log:
        files[iteration_log] = metrics.iteration_csv(result.iteration_log)
    write_files(files)
    if output and not result.unfinished and Path(f"{output}.unfinished.csv").exists():
        Path(f"{output}.unfinished.csv").unlink()  # stale, from an earlier run
    if result.unfinished:
        click.echo(f"[WARNING] {len(result.unfinished)} request(s) did not finish; first: request "
                   f"{result.unfinished[0][0].id}: {result.unfinished[0][1]}", err=True)


def _astra_factory(o: dict):
    from astra_bridge.runner import astra_engine

    workdir = o["astra_sim_workdir"]
    if o["keep_traces"] and not workdir:
        import tempfile

        workdir = tempfile.mkdtemp(prefix="llmsim-astra-")
        click.echo(f"[INFO] ASTRA-Sim run folder kept at {workdir}", err=True)
    return lambda sim, **kw: astra_engine(sim, flavor=o["astra_sim_flavor"], binary=o["astra_sim_bin"],
                                          workdir=workdir, timeout_s=o["astra_sim_timeout"], **kw)


def write_files(files: dict) -> None:
    try:
        metrics.write_all_atomic(files)
    except OSError as e:
        raise InputError(f"{e.filename}: cannot write output ({e.strerror})") from None


from .validate import validate  # noqa: E402  (registers the subcommand; imports cli's helpers)

main.add_command(validate)


def _bridge_command(name):
    @click.command(name, context_settings={"ignore_unknown_options": True, "allow_extra_args": True,
                                          "help_option_names": []}, add_help_option=False)
    @click.pass_context
    def cmd(ctx):
        from astra_bridge import commands

        target = getattr(commands, name)
        target.main(args=ctx.args, prog_name=f"llmsim {name}", standalone_mode=True)
    cmd.help = {"doctor": "Report which ASTRA-Sim builds llmsim finds and their flavour.",
                "trace": "Chakra execution traces: `llmsim trace dump FILE.et`."}[name]
    return cmd


for _name in ("doctor", "trace"):
    main.add_command(_bridge_command(_name))
