"""`llmsim` / `python -m llmsim`: wiring only. The main command runs a simulation (flags
compatible with the reference's `python -m serving`); subcommands are llmsim's own (validate) and
those installed in the llmsim.commands entry-point group (the ASTRA-Sim bridge's doctor, trace)."""
import click

from .commands.options import user_errors
from .commands.run import run_options, simulate
from .commands.validate import validate
from .plugins import COMMANDS, load, names


class _Main(click.Group):
    """Subcommands from entry points are looked up only when named (no cost for a plain run)."""

    def list_commands(self, ctx):
        return sorted(set(super().list_commands(ctx)) | set(names(COMMANDS)))

    def get_command(self, ctx, name):
        cmd = super().get_command(ctx, name)
        if cmd is None and name in names(COMMANDS):
            cmd = load(COMMANDS, name)
        return cmd


@click.group(cls=_Main, invoke_without_command=True, context_settings={"help_option_names": ["-h", "--help"],
                                                                      "max_content_width": 100})
@run_options
@click.pass_context
@user_errors
def main(ctx, **opts):
    """Simulate vLLM-style LLM serving on the cluster described by --cluster-config."""
    if ctx.invoked_subcommand is None:
        simulate(opts)


main.add_command(validate)
