"""`llmsim validate`: simulate a recorded vLLM run and compare TTFT, TPOT and latency with it."""
import hashlib
from pathlib import Path

import click
from click.core import ParameterSource

from ..errors import InputError
from ..outputs import reserve
from ..simulate import prepare, run
from ..paths import resolve_input
from ..validate import (PLOT_NAMES, comparison, find_cluster_config, find_dataset, load_vllm_run, plots, settings_from_meta,
                        sim_metrics, table_csv, table_text, vllm_metrics)
from .options import announce, engine_args, engine_options, user_errors


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--vllm-run", required=True, help="Folder of a recorded vLLM run (meta.json, requests.jsonl; "
              "see configs/validation/README.md).")
@engine_options
@click.option("--kv-blocks", type=click.Choice(["run", "model"]), default="run", show_default=True,
              help="KV blocks: vLLM's logged num_gpu_blocks from meta.json, or llmsim's vLLM capacity model.")
@click.option("--out", "out_dir", default=None,
              help="Folder for table.csv and the plots (default outputs/validate/<run>/<kv-blocks>).")
@click.pass_context
@user_errors
def validate(ctx, vllm_run, kv_blocks, out_dir, **opts):
    """Simulate a recorded vLLM run and compare TTFT, TPOT and latency with it.

    Engine settings that vLLM recorded in meta.json replace the defaults shown below unless given
    on the command line; every setting's source is printed."""
    vr = load_vllm_run(vllm_run)
    meta_json = vr.vdir / "meta.json"
    source = {k: "command line" for k in opts if ctx.get_parameter_source(k) is ParameterSource.COMMANDLINE}
    for key, value in settings_from_meta(vr.meta).items():
        if key in source or (key == "num_gpu_blocks" and kv_blocks == "model"):
            continue
        opts[key] = value
        source[key] = "meta.json"
    if "kv_capacity" not in source and opts.get("compat") != "llmservingsim":
        if kv_blocks == "model":
            opts["kv_capacity"], source["kv_capacity"] = "vllm", "--kv-blocks model"
        elif "num_gpu_blocks" not in source:
            # nothing logged to pin: predict vLLM's count rather than fall back to the reference's rule
            opts["kv_capacity"], source["kv_capacity"] = "vllm", "meta.json logs no num_gpu_blocks"
            click.echo(f"[WARNING] {meta_json}: no num_gpu_blocks logged; KV blocks from llmsim's vLLM capacity "
                       "model (as --kv-blocks model)", err=True)
    if "cluster_config" not in source:
        cfg = find_cluster_config(vr)
        if cfg is None:
            raise InputError(f"{vr.root}: no cluster config beside the run (cluster.json, or a config.json with "
                             "nodes); pass --cluster-config")
        opts["cluster_config"], source["cluster_config"] = str(cfg), "the run folder"
    if not opts["dataset"]:
        ds = find_dataset(vr, resolve_input)
        if ds is None:
            raise InputError(f"{meta_json}: dataset_path {vr.meta.get('dataset_path')!r} not found (looked here, "
                             f"in {vr.root} and in the shipped workloads); pass --dataset")
        opts["dataset"], source["dataset"] = str(ds), "meta.json dataset_path"
    want = vr.meta.get("dataset_hash")
    if want and hashlib.sha256(Path(opts["dataset"]).read_bytes()).hexdigest() != want:
        click.echo(f"[WARNING] {opts['dataset']}: sha256 differs from the run's dataset_hash", err=True)
    click.echo(f"[INFO] settings: {', '.join(f'{k}={opts[k]} ({s})' for k, s in sorted(source.items()))}; "
               "others at their defaults")
    interval_s = _tick_seconds(vr.meta, meta_json)
    out = Path(out_dir or Path("outputs") / "validate" / vr.root.resolve().name / kv_blocks)
    inputs = {p: "input" for p in (opts["cluster_config"], opts["dataset"], meta_json, vr.vdir / "requests.jsonl",
                                   vr.vdir / "timeseries.csv")}
    with reserve([(out / name, "validation output") for name in ("table.csv", *PLOT_NAMES)], inputs) as outputs:
        _simulate(vr, out, opts, source, outputs, interval_s)


def _simulate(vr, out: Path, opts: dict, source: dict, outputs, interval_s: float) -> None:
    sim = prepare(opts["cluster_config"], engine_args(opts), opts["dataset"], opts["num_reqs"])
    _warn_config_overrides(sim, opts, source)
    announce(sim, quiet=False)
    result = run(sim, routing_policy=opts["request_routing_policy"], log_interval_ns=int(interval_s * 1e9),
                 seed=opts["seed"])
    if result.unfinished:
        click.echo(f"[WARNING] {len(result.unfinished)} request(s) did not finish in the simulation", err=True)
    v, s = vllm_metrics(vr), sim_metrics(result)
    rows = comparison(v, s)
    click.echo(table_text(rows))
    files = {out / "table.csv": table_csv(rows)}
    files.update({out / name: data for name, data in plots(v, s, vr.timeseries, result.heartbeats, interval_s).items()})
    outputs.write(files)
    click.echo(f"[INFO] wrote {', '.join(str(p) for p in files)}")


def _tick_seconds(meta: dict, where) -> float:
    """vLLM's logging interval, which the throughput plot bins llmsim's heartbeats by."""
    raw = meta.get("tick_seconds", 1.0)
    try:
        value = float(raw)
    except (TypeError, ValueError):
        value = float("nan")
    if not 1e-3 <= value <= 3600:
        raise InputError(f"{where}: tick_seconds: expected seconds within [0.001, 3600], got {raw!r}")
    return value


def _warn_config_overrides(sim, opts: dict, source: dict) -> None:
    """An instance key in the cluster config wins over the run's own settings (as in the
    reference): say so, for each one that changes a value."""
    for inst in sim.instances:
        c = inst.config
        if c.mem_util is not None and c.mem_util != opts["npu_memory_utilization"]:
            click.echo(f"[WARNING] {c.where}.npu_mem.mem_util {c.mem_util} overrides npu_memory_utilization="
                       f"{opts['npu_memory_utilization']} ({source.get('npu_memory_utilization', 'default')})",
                       err=True)
        for key, value in c.overrides.items():
            if key in opts and opts[key] != value:
                click.echo(f"[WARNING] {c.where}.{key} {value!r} overrides {key}={opts[key]!r} "
                           f"({source.get(key, 'default')})", err=True)
