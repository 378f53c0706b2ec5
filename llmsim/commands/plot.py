"""`llmsim plot RUN_OUTPUT`: PNG figures redrawn from a finished run's files."""
import click

from .options import user_errors


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("run_output", metavar="RUN_OUTPUT")
@click.option("--out", "out_dir", default=None, metavar="DIR",
              help="Folder for the PNGs (created).  [default: RUN_OUTPUT.plots/]")
@user_errors
def plot(run_output, out_dir):
    """Draw a run's latency CDFs, throughput, queues, KV usage and pipeline stage utilisation.

    RUN_OUTPUT is the per-request CSV a run wrote (--output); RUN_OUTPUT.timeseries.csv and
    RUN_OUTPUT.stages.csv beside it are used when present. Prints the written paths."""
    from ..plots import draw_all, load_run  # matplotlib is imported only when plotting

    data = load_run(run_output)
    for note in data.notes:
        click.echo(f"[INFO] {note}", err=True)
    for path in draw_all(data, out_dir or f"{run_output}.plots"):
        click.echo(str(path))
