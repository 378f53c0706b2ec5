"""`llmsim doctor` and `llmsim trace dump`: the bridge's command-line tools."""
import os
import subprocess

import click

from llmsim.commands.options import user_errors
from llmsim.errors import InputError

from .binary import ENV, discover
from .chakra.codec import FLAVORS, dump_text, read_et


def doctor_report(flag: str | None) -> str:
    lines = ["ASTRA-Sim search order: --astra-sim-bin, $" + ENV + ", third_party/"]
    found = discover(flag)
    if not found:
        lines.append("  nothing found: the embedded backend works without ASTRA-Sim; to use a build, see "
                     "third_party/README.md")
    for b in found:
        ok = b.path.is_file() and os.access(b.path, os.X_OK)
        state = "ok" if ok else ("missing" if not b.path.exists() else "not executable")
        flavor = b.flavor or "unknown (name it or pass --astra-sim-flavor)"
        lines.append(f"  {b.found_by:<16} {b.path}  [{state}; flavour: {flavor}]")
        if ok and b.flavor == "upstream":
            try:
                out = subprocess.run([str(b.path), "--help"], capture_output=True, text=True, timeout=10)
                lines.append(f"    --help exit code {out.returncode}")
            except (OSError, subprocess.TimeoutExpired) as e:
                lines.append(f"    could not run: {e}")
    lines.append("The first one listed is used.")
    return "\n".join(lines)


@click.command()
@click.option("--astra-sim-bin", default=None, metavar="PATH",
              help="An ASTRA-Sim binary to check first (as the main command's --astra-sim-bin); then $"
                   + ENV + ", then the builds under third_party/.")
@user_errors
def doctor(astra_sim_bin):
    """Report which ASTRA-Sim builds llmsim finds and which flavour each is."""
    click.echo(doctor_report(astra_sim_bin))


@click.group()
def trace():
    """Chakra execution traces."""


@trace.command("dump")
@click.argument("path", type=click.Path(exists=True, dir_okay=False))
@click.option("--flavor", type=click.Choice(FLAVORS), default="llmservingsim", show_default=True,
              help="Node-type numbering and duration unit the file was written with.")
@user_errors
def dump(path, flavor):
    """Print one .et file as text: node id, type, name, duration, dependencies, attributes."""
    try:
        meta, nodes = read_et(path)
    except Exception as e:  # a corrupt file is user input: one line, exit 2
        raise InputError(f"{path}: not a readable Chakra trace ({' '.join(str(e).split())})") from None
    click.echo(f"# {path}: {len(nodes)} nodes; metadata {dict((a.name, a.string_val) for a in meta.attr)}")
    click.echo(dump_text(nodes, flavor), nl=False)
