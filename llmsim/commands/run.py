"""`llmsim [OPTIONS]`: simulate a workload on a cluster and write the outputs."""
import contextlib
import gc
import sys
import tempfile

import click

from .. import metrics, stage_report
from ..errors import InputError
from ..outputs import is_stdout, is_stream, reserve
from ..paths import resolve_input
from ..plugins import TRACE_WRITERS, load
from ..progress import Progress
from ..simulate import SYNTHETIC_WORKLOAD, make_backend, prepare, run
from ..timeline import parse_window, timeline_json
from ..units import NS_PER_S
from .options import _finite, announce, engine_args, engine_options

MIN_LOG_INTERVAL_S = 1e-6


def _log_interval(ctx, param, value):
    value = _finite(ctx, param, value)
    if 0 < value < MIN_LOG_INTERVAL_S:
        raise click.BadParameter(f"must be 0 (none) or >= {MIN_LOG_INTERVAL_S:g} s, got {value}")
    return value

RUN_OPTIONS = [
    click.option("--output", default=None, help="Per-request CSV to write; beside it <output>.meta.json (the run's "
                 "settings, seed included) and <output>.summary.json (the summary's statistics). Without --output "
                 "and --iteration-log nothing is written."),
    click.option("--log-interval", type=click.FloatRange(min=0), default=1.0, show_default=True, callback=_log_interval,
                 help="Seconds of simulated time between [INFO] lines; 0 = none."),
    click.option("--iteration-log", default=None, help="CSV with one row per batch and pipeline stage."),
    click.option("--stage-report", default=None,
                 help="CSV of the per-stage accounting: busy (compute, communication) and idle by cause, for the "
                      "run and each log interval (also written beside --output as <output>.stages.csv)."),
    click.option("--timeline", default=None,
                 help="Chrome trace-event JSON of the run (ui.perfetto.dev, chrome://tracing): a track per NPU, "
                      "batch and idle slices, transfers as arrows, request and KV counters."),
    click.option("--timeline-window", default=None, metavar="START:END",
                 help="Keep only this span of simulated seconds in --timeline (small files for long runs)."),
    click.option("--stage-accounting/--no-stage-accounting", default=True, show_default=True,
                 help="Account every stage's busy and idle time by cause (the pipeline table, --stage-report); "
                      "off: up to ~1.5x faster pipeline runs, no table."),
    click.option("--plots", "plots_dir", default=None,
                 help="Folder for PNG plots: latency CDFs, throughput, queues, KV usage, stage utilisation."),
    click.option("--backend", default="embedded", show_default=True,
                 help="embedded: in process (ASTRA-Sim's analytical semantics); astra-sim: your ASTRA-Sim build; "
                      "or any backend installed in the llmsim.backends entry-point group."),
    click.option("--backend-option", "backend_options", multiple=True, metavar="KEY=VALUE",
                 help="An option for a third-party backend (repeatable)."),
    click.option("--astra-sim-bin", default=None, help="ASTRA-Sim binary (else $LLMSIM_ASTRA_SIM, else third_party/)."),
    click.option("--astra-sim-flavor", type=click.Choice(["llmservingsim", "upstream"]), default="llmservingsim",
                 show_default=True, help="The LLMServingSim fork (persistent process) or upstream ASTRA-Sim."),
    click.option("--astra-sim-workdir", default=None, help="Run folder for ASTRA-Sim inputs, traces and logs "
                 "(default: a temporary folder, removed unless --keep-traces)."),
    click.option("--keep-traces", is_flag=True, help="Keep the ASTRA-Sim run folder (a temporary one is printed)."),
    click.option("--astra-sim-timeout", type=click.FloatRange(min=0, min_open=True), default=120.0, show_default=True,
                 callback=_finite,
                 help="Seconds ASTRA-Sim may take to report the next event before the run is abandoned."),
    click.option("--dump-traces", default=None, help="Write every iteration's per-NPU Chakra .et files here."),
    click.option("--trace-flavor", type=click.Choice(["llmservingsim", "upstream"]), default=None,
                 help="Node numbering and duration unit of --dump-traces (default: the ASTRA-Sim backend's "
                      "--astra-sim-flavor, else llmservingsim)."),
    click.option("--fast-path/--no-fast-path", default=True, show_default=True,
                 help="Decode lanes (same results, faster); --no-fast-path runs the plain scheduler for checks."),
    click.option("--quiet", is_flag=True, help="No [INFO] lines and no summary."),
]


def run_options(f):
    for opt in reversed(RUN_OPTIONS):
        f = opt(f)
    return engine_options(f)


def backend_options(o: dict) -> dict:
    """The options handed to the backend's factory: the ASTRA-Sim flags, then KEY=VALUE pairs."""
    opts = {k: o[k] for k in ("astra_sim_bin", "astra_sim_flavor", "astra_sim_workdir", "keep_traces",
                              "astra_sim_timeout")}
    if o["keep_traces"] and not o["astra_sim_workdir"]:
        opts["astra_sim_workdir"] = tempfile.mkdtemp(prefix="llmsim-astra-")
        click.echo(f"[INFO] ASTRA-Sim run folder kept at {opts['astra_sim_workdir']}", err=True)
    for pair in o["backend_options"]:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise InputError(f"--backend-option {pair!r}: expected KEY=VALUE")
        opts[key.replace("-", "_")] = value
    return opts


def _outputs(o: dict) -> list:
    """Every file this run may write, as (path, what): derived files only beside a regular output."""
    out = []
    if o["output"]:
        out.append((o["output"], "output"))
        if not is_stream(o["output"]):
            out += [(o["output"] + suffix, f"{what} (beside --output)") for suffix, what in
                    ((".meta.json", "metadata"), (".summary.json", "summary"), (".unfinished.csv", "unfinished list"),
                     (".stages.csv", "stage report"), (".timeseries.csv", "time series"))]
    for key, what in (("iteration_log", "iteration log"), ("stage_report", "stage report"), ("timeline", "timeline")):
        if o[key]:
            out.append((o[key], what))
    return out


def simulate(o: dict) -> None:
    if o["timeline_window"] is not None:
        if not o["timeline"]:
            raise InputError("--timeline-window: needs --timeline")
        try:
            o["timeline_window"] = parse_window(o["timeline_window"])
        except ValueError as e:
            raise InputError(f"--timeline-window: {e}") from None
    inputs = {resolve_input(p): what for p, what in ((o["cluster_config"], "cluster config"),
                                                     (o["dataset"], "dataset")) if p}
    # the CSV owns stdout when it goes there; everything human-readable moves to stderr
    planned = _outputs(o)
    to_stdout = any(is_stdout(p) for p, _ in planned)
    with reserve(planned, inputs) as outputs, \
            contextlib.redirect_stdout(sys.stderr) if to_stdout else contextlib.nullcontext():
        files, result, sim = _simulate(o)
        outputs.write(files)
        if not o["quiet"]:
            click.echo(metrics.written_line(files))  # the summary's last line
    if o["plots_dir"]:
        _plots(o, sim, result)
    if result.unfinished:
        click.echo(f"[WARNING] {len(result.unfinished)} request(s) did not finish; first: request "
                   f"{result.unfinished[0][0].id}: {result.unfinished[0][1]}", err=True)
    if o["output"] and is_stream(o["output"]) and not o["quiet"]:
        click.echo(f"[INFO] --output {o['output']} is not a regular file: no .meta.json, .summary.json or "
                   ".unfinished.csv beside it", err=True)


def _simulate(o: dict) -> tuple:
    output, iteration_log, quiet = o["output"], o["iteration_log"], o["quiet"]
    sim = prepare(o["cluster_config"], engine_args(o), o["dataset"], o["num_reqs"], fast_path=o["fast_path"])
    announce(sim, quiet)
    if o["dataset"] is None and not quiet:
        click.echo(f"[INFO] no --dataset: synthetic workload, {SYNTHETIC_WORKLOAD} ({len(sim.requests)} requests)")
    if sim.arrival_shift_ns and not quiet:
        click.echo(f"[INFO] the first request arrives at {sim.arrival_shift_ns} ns (over a day in): every arrival "
                   "is moved that much earlier, so the run starts at t=0; outputs use the moved times "
                   "(arrival_shift_ns in the metadata)")
    interval_ns = int(round(o["log_interval"] * NS_PER_S))
    progress = Progress(len(sim.requests), not quiet)
    on_hb = (lambda hb, iv: progress.echo(metrics.heartbeat_line(hb, iv))) if interval_ns and not quiet else None
    on_graph = None
    if o["dump_traces"]:
        flavor = o["trace_flavor"] or (o["astra_sim_flavor"] if o["backend"] == "astra-sim" else "llmservingsim")
        o["trace_flavor"] = flavor  # meta.json records the flavour the dump used
        on_graph = load(TRACE_WRITERS, "chakra")(sim.cluster, o["dump_traces"], flavor)
    backend = make_backend(sim, o["backend"], backend_options(o) if o["backend"] != "embedded" else None)
    # One run per process, and the run's structures break their own reference cycles (a lane
    # and its batch, a lane and its members): the cycle collector only costs time here.
    gc.freeze()
    gc.disable()
    try:
        result = run(sim, backend, routing_policy=o["request_routing_policy"], log_interval_ns=interval_ns,
                     on_heartbeat=on_hb, record_iterations=iteration_log is not None, on_graph=on_graph,
                     seed=o["seed"], timeline=o["timeline"] is not None, accounting=o["stage_accounting"],
                     on_progress=progress if progress.bar is not None else None)
    finally:
        progress.close()
    instances = sim.instances
    stats = None
    if not quiet or output:
        stats = metrics.summary_stats(result, [i.scheduler.stats for i in instances])
    if not quiet:
        click.echo(metrics.summary(result, instances, [i.scheduler.stats for i in instances], stats))
        for d in result.dp or ():
            if not d["lockstep"]:
                click.echo(f"  data-parallel group '{d['group']}': {d['ranks']} independent ranks (a dense model), "
                           "requests routed by vLLM's DP load balancer")
            else:
                click.echo(f"  data-parallel group '{d['group']}': {d['ranks']} ranks, {d['steps']} lockstep steps, "
                           f"{d['dummy_batches']} dummy batches, {d['padded_tokens']} padding tokens"
                           + ("" if result.stages else " (no per-stage accounting with --dp-sync reference)"))
        if result.stages:
            click.echo(stage_report.pipeline_table(result.stages))
        elif result.stages is None and not result.dp:
            click.echo("  (no per-stage accounting: this backend reports only whole batches)")
    files = {}  # everything is rendered before anything is written
    if output:
        files[output] = metrics.requests_csv_lines(result, instances)  # streamed: it can be GBs
        if not is_stream(output):
            files[f"{output}.meta.json"] = metrics.run_metadata(sim, result, o)
            files[f"{output}.summary.json"] = metrics.summary_json(stats, result.stages)
            if result.unfinished:
                files[f"{output}.unfinished.csv"] = metrics.unfinished_csv(result)
            files.update(_plotted_files(output, result))
    if iteration_log:
        files[iteration_log] = metrics.iteration_csv(result.iteration_log)
    if o["stage_report"]:
        if not result.stages:
            raise InputError(f"--stage-report: the {o['backend']} backend reports no per-stage events to account")
        files[o["stage_report"]] = stage_report.stages_csv(result.stages)
    if o["timeline"]:
        files[o["timeline"]] = timeline_json(instances, result.iteration_log, result.idle_segments, result.samples,
                                             o["timeline_window"])
    return files, result, sim


def _plotted_files(output: str, result) -> dict:
    """The files beside a per-request CSV that `llmsim plot` reads besides it."""
    files = {}
    if result.stages:
        files[f"{output}.stages.csv"] = stage_report.stages_csv(result.stages)
    if result.heartbeats:
        files[f"{output}.timeseries.csv"] = stage_report.timeseries_csv(result.heartbeats)
    return files


def _plots(o: dict, sim, result) -> None:
    """Draw from the files just written (the same code `llmsim plot` runs), or from a temporary copy."""
    from ..plots import draw_all, load_run

    output = o["output"]
    with tempfile.TemporaryDirectory(prefix="llmsim-plots-") as tmp:
        if not output or is_stream(output):
            output = f"{tmp}/run.csv"
            files = {output: metrics.requests_csv_lines(result, sim.instances), **_plotted_files(output, result)}
            for path, text in files.items():
                with open(path, "w") as f:
                    f.writelines(text) if not isinstance(text, str) else f.write(text)
        written = draw_all(load_run(output), o["plots_dir"])
    if not o["quiet"]:
        click.echo(f"[INFO] plots: {', '.join(str(p) for p in written)}")
