"""`llmsim validate`: simulate a recorded vLLM run and compare TTFT, TPOT and latency with it."""
import hashlib
from pathlib import Path

import click
from click.core import ParameterSource

from ..errors import InputError
from ..simulate import prepare, run
from ..validate import comparison, load_vllm_run, plots, settings_from_meta, sim_metrics, table_csv, table_text, vllm_metrics
from .options import announce, engine_args, engine_options, user_errors, write_files


@click.command()
@click.option("--vllm-run", required=True, help="Folder of a recorded vLLM run (meta.json, requests.jsonl).")
@engine_options
@click.option("--kv-blocks", type=click.Choice(["run", "model"]), default="run", show_default=True,
              help="KV blocks: vLLM's logged num_gpu_blocks from meta.json, or llmsim's vLLM capacity model.")
@click.option("--out", "out_dir", default=None, help="Folder for table.csv and the plots (default outputs/validate/<run>).")
@click.pass_context
@user_errors
def validate(ctx, vllm_run, kv_blocks, out_dir, **opts):
    """Simulate a recorded vLLM run and compare TTFT, TPOT and latency with it."""
    vr = load_vllm_run(vllm_run)
    applied = []
    for key, value in settings_from_meta(vr.meta).items():
        if ctx.get_parameter_source(key) is ParameterSource.COMMANDLINE:
            continue
        if key == "num_gpu_blocks" and kv_blocks == "model":
            continue
        opts[key] = value
        applied.append(f"{key}={value}")
    if kv_blocks == "model" and ctx.get_parameter_source("kv_capacity") is not ParameterSource.COMMANDLINE:
        opts["kv_capacity"] = "vllm"
    if ctx.get_parameter_source("cluster_config") is not ParameterSource.COMMANDLINE:
        cfg = vr.root / "cluster.json"
        if not cfg.is_file():
            raise InputError(f"{vr.root}: no cluster.json beside the run; pass --cluster-config")
        opts["cluster_config"] = str(cfg)
    if not opts["dataset"]:
        ds = vr.meta.get("dataset_path")
        if not ds or not Path(ds).is_file():
            raise InputError(f"{vr.root}: meta.json dataset_path {ds!r} not found; pass --dataset")
        opts["dataset"] = ds
    want = vr.meta.get("dataset_hash")
    if want and hashlib.sha256(Path(opts["dataset"]).read_bytes()).hexdigest() != want:
        click.echo(f"[WARNING] {opts['dataset']}: sha256 differs from the run's dataset_hash", err=True)
    click.echo(f"[INFO] settings from {vr.root}: {', '.join(applied) or 'none'}")
    sim = prepare(opts["cluster_config"], engine_args(opts), opts["dataset"], opts["num_reqs"])
    announce(sim, quiet=False)
    interval_s = float(vr.meta.get("tick_seconds", 1.0))
    result = run(sim, routing_policy=opts["request_routing_policy"], log_interval_ns=int(interval_s * 1e9))
    if result.unfinished:
        click.echo(f"[WARNING] {len(result.unfinished)} request(s) did not finish in the simulation", err=True)
    v, s = vllm_metrics(vr), sim_metrics(result)
    rows = comparison(v, s)
    click.echo(table_text(rows))
    out = Path(out_dir or Path("outputs") / "validate" / vr.root.resolve().name)
    files = {out / "table.csv": table_csv(rows)}
    files.update({out / name: data for name, data in plots(v, s, vr.timeseries, result.heartbeats, interval_s).items()})
    write_files(files)
    click.echo(f"[INFO] wrote {', '.join(str(p) for p in files)}")
