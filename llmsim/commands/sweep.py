"""`llmsim sweep run` / `llmsim sweep plot`: batch sweeps over configurations (llmsim/sweep/)."""
import click

from ..errors import InputError
from .options import user_errors

CTX = {"help_option_names": ["-h", "--help"], "max_content_width": 100}
MAX_EXIT = 100  # the exit status counts failed points, capped so it stays a valid status


class _SpecFirst(click.Group):
    """`llmsim sweep SPEC.yaml --out DIR` is `llmsim sweep run SPEC.yaml --out DIR`."""

    def parse_args(self, ctx, args):
        if args and not args[0].startswith("-") and args[0] not in self.commands:
            args = ["run", *args]
        return super().parse_args(ctx, args)


@click.group(cls=_SpecFirst, context_settings=CTX)
def sweep():
    """Sweeps over cluster, engine and workload settings (docs/sweeps.md). `llmsim sweep SPEC.yaml
    --out DIR` runs a spec (as `sweep run`); `llmsim sweep plot DIR` draws its Pareto front."""


@sweep.command("run", context_settings=CTX)
@click.argument("spec_path", metavar="SPEC.yaml")
@click.option("--out", "out_dir", required=True, help="Folder for results.csv, results.parquet and points/<id>/.")
@click.option("--engine", type=click.Choice(["local", "dask"]), default="local", show_default=True,
              help="local: a process pool on this machine; dask: Dask distributed (--address, or a LocalCluster).")
@click.option("--address", default=None, help="With --engine dask: an existing scheduler, e.g. tcp://host:8786.")
@click.option("--workers", type=click.IntRange(min=0), default=0, show_default=True,
              help="Worker processes (local pool, or the Dask LocalCluster); 0 = all cores.")
@click.option("--quiet", is_flag=True, help="No progress bar and no summary line.")
@click.option("--check-only", is_flag=True, help="Build and check every point, run nothing.")
@user_errors
def run_cmd(spec_path, out_dir, engine, address, workers, quiet, check_only):
    """Run every point of SPEC.yaml not already finished in --out (re-running resumes).

    Exit status: 0 when every point ran, else the number of failed points (at most 100); 2 for a
    bad spec or point (then nothing runs)."""
    from ..sweep.execute import run_sweep
    from ..sweep.points import build_points, instance_check
    from ..sweep.spec import load_spec

    if address and engine != "dask":
        raise InputError("--address applies to --engine dask")
    spec = load_spec(spec_path)
    points = build_points(spec, instance_check())
    if check_only:
        click.echo(f"[INFO] {spec_path}: {len(points)} points, all valid", err=True)
        return
    df, ran, skipped = run_sweep(spec, points, out_dir, engine=engine, workers=workers, address=address, quiet=quiet)
    failed = int((df["status"] != "ok").sum())
    if not quiet:
        click.echo(f"[INFO] {len(points)} points: {ran} run, {skipped} already done, {failed} failed; wrote "
                   f"{out_dir}/results.csv and results.parquet", err=True)
        for _, row in df[df["status"] != "ok"].head(5).iterrows():
            click.echo(f"[WARNING] point {row['point_id']}: {row['error']}", err=True)
    if failed:
        click.get_current_context().exit(min(failed, MAX_EXIT))


@sweep.command("plot", context_settings=CTX)
@click.argument("out_dir", metavar="DIR")
@click.option("--output", default=None, help="PNG to write (default: DIR/pareto.png).")
@click.option("--throughput", "y", default="output_tok_per_s", show_default=True,
              help="Throughput column (y): output_tok_per_s, total_tok_per_s, request_throughput_per_s, "
                   "goodput_req_per_s.")
@click.option("--latency", "x", default="latency_p99_ms", show_default=True,
              help="Latency column (x), e.g. ttft_p99_ms, ttft_mean_ms, latency_mean_ms, tpot_p90_ms.")
@user_errors
def plot_cmd(out_dir, output, y, x):
    """Plot throughput against latency, draw the Pareto front, print the Pareto-optimal points."""
    from ..outputs import reserve
    from ..sweep.plot import pareto, plot
    from ..sweep.results import read_table

    df = read_table(out_dir)
    front = pareto(df, x, y)
    png = plot(df, x, y)
    output = output or f"{out_dir}/pareto.png"
    with reserve([(output, "plot")], {}) as out:
        out.write({output: png})
    params = [c for c in df.columns if "." in str(c)]
    cols = ["point_id", *params, "layout", x, y]
    cols = [c for c in dict.fromkeys(cols) if c in front.columns]
    click.echo(f"Pareto-optimal points ({len(front)} of {int((df['status'] == 'ok').sum())} ok), by {x}:")
    click.echo(front[cols].to_string(index=False) if len(front) else "(none)")
    click.echo(f"[INFO] wrote {output}", err=True)
