"""`llmsim` / `python -m llmsim`: wiring only. The main command runs a simulation (flags
compatible with the reference's `python -m serving`); subcommands are llmsim's own (validate) and
those installed in the llmsim.commands entry-point group (the ASTRA-Sim bridge's doctor, trace)."""
import sys

import click

from .commands.options import user_errors
from .commands.plot import plot
from .commands.run import run_options, simulate
from .commands.sweep import sweep
from .commands.validate import validate
from .commands.workload import workload
from .plugins import COMMANDS, load, names
from .version import __version__

INTERRUPTED = "interrupted: no output file was written (outputs are written only at the end, atomically)"


class _Interrupted(Exception):
    """Ctrl-C, carried past click's own handling (which prints "Aborted!" and exits 1)."""


def _one_line(text: str) -> str:
    return " ".join(text.split())


class _Main(click.Group):
    """Subcommands from entry points are looked up only when named (no cost for a plain run).
    Errors end with one `error:` line: usage errors exit 2, as InputError does; Ctrl-C exits 130."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.UsageError as e:
            where = f" (see '{e.ctx.command_path} --help')" if e.ctx is not None else ""
            click.echo(f"error: {_one_line(e.format_message())}{where}", err=True)
            sys.exit(2)
        except click.ClickException as e:
            click.echo(f"error: {_one_line(e.format_message())}", err=True)
            sys.exit(e.exit_code)
        except (_Interrupted, click.Abort):
            click.echo(INTERRUPTED, err=True)
            sys.exit(130)
        sys.exit(rv if isinstance(rv, int) else 0)  # an int only from ctx.exit(code) (--help, --version: 0)

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            raise _Interrupted() from None

    def list_commands(self, ctx):
        return sorted(set(super().list_commands(ctx)) | set(names(COMMANDS)))

    def get_command(self, ctx, name):
        cmd = super().get_command(ctx, name)
        if cmd is None and name in names(COMMANDS):
            cmd = load(COMMANDS, name)
        return cmd


@click.group(cls=_Main, invoke_without_command=True, context_settings={"help_option_names": ["-h", "--help"],
                                                                      "max_content_width": 100})
@click.version_option(__version__, "--version", prog_name="llmsim", message="%(prog)s %(version)s")
@run_options
@click.pass_context
@user_errors
def main(ctx, **opts):
    """Simulate vLLM-style LLM serving on the cluster described by --cluster-config."""
    if ctx.invoked_subcommand is None:
        simulate(opts)


main.add_command(validate)
main.add_command(workload)
main.add_command(sweep)
main.add_command(plot)
