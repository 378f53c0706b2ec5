"""`llmsim workload generate`: a synthetic workload in the reference JSONL format."""
import click

from ..errors import InputError
from ..outputs import reserve
from ..workload import load_workload
from .options import _finite, user_errors

LENGTHS_HELP = "fixed:N, uniform:LO:HI, normal:MEAN:STD or lognormal:MEAN:SIGMA (MEAN the mean; SIGMA log-space)"


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def workload():
    """Workloads in the reference JSONL format."""


@workload.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--output", required=True, help="JSONL to write ('-': stdout).")
@click.option("--num-requests", type=click.IntRange(1, 10_000_000), default=300, show_default=True,
              help="Requests (sessions when --turns > 1).")
@click.option("--rate", type=click.FloatRange(min=0, min_open=True), default=10.0, show_default=True,
              callback=_finite, help="Mean arrivals per second.")
@click.option("--arrivals", type=click.Choice(["poisson", "gamma"]), default="poisson", show_default=True,
              help="poisson: exponential gaps; gamma: gaps with coefficient of variation --cv.")
@click.option("--cv", type=click.FloatRange(0, 100), default=1.0, show_default=True, callback=_finite,
              help="Burstiness of gamma arrivals: gap std / gap mean (1 = Poisson, >1 bursty, 0 even).")
@click.option("--input-len", default="lognormal:512:0.8", show_default=True, help=f"Prompt tokens: {LENGTHS_HELP}.")
@click.option("--output-len", default="lognormal:256:0.8", show_default=True, help=f"Output tokens: {LENGTHS_HELP}.")
@click.option("--from-trace", default=None,
              help="Draw (prompt, output) pairs from this reference-format JSONL instead of --input-len/--output-len.")
@click.option("--turns", type=click.IntRange(1, 1000), default=1, show_default=True,
              help="Calls per agentic session (sub_requests); 1 = plain requests.")
@click.option("--tool-ms", type=click.FloatRange(0, 3.6e6), default=0.0, show_default=True, callback=_finite,
              help="Milliseconds between a session's calls (tool_duration_ns).")
@click.option("--shared-prefix", type=click.IntRange(0, 1_000_000), default=0, show_default=True,
              help="Tokens of shared prefix at the start of every prompt (token ids are written, for prefix-caching "
                   "studies); prompts are lengthened to hold it plus one token.")
@click.option("--prefix-groups", type=click.IntRange(1, 1_000_000), default=1, show_default=True,
              help="Distinct shared prefixes, one drawn uniformly per call.")
@click.option("--seed", type=int, default=0, show_default=True, help="Same seed and options, same file byte for byte.")
@user_errors
def generate_cmd(output, num_requests, rate, arrivals, cv, input_len, output_len, from_trace, turns, tool_ms,
                 shared_prefix, prefix_groups, seed):
    """Generate a workload: arrivals, lengths, sessions, shared prefixes."""
    if arrivals == "poisson" and cv != 1.0:
        raise InputError("--cv applies to --arrivals gamma (Poisson arrivals have cv 1)")
    resample = None
    inputs = {}
    if from_trace:
        source = load_workload(from_trace, 0)
        resample = tuple((r.prompt_len, r.output_len) for r in source)
        inputs[from_trace] = "trace"
    from ..workload_gen import Spec, generate, parse_lengths  # numpy: only when generating

    spec = Spec(num=num_requests, rate_per_s=rate, cv=cv, input=parse_lengths(input_len, "--input-len"),
                output=parse_lengths(output_len, "--output-len"), turns=turns, tool_ms=tool_ms,
                prefix_tokens=shared_prefix, prefix_groups=prefix_groups, seed=seed, resample=resample)
    with reserve([(output, "workload")], inputs) as out:
        out.write({output: generate(spec)})
    click.echo(f"[INFO] wrote {output}: {num_requests} {'sessions' if turns > 1 else 'requests'}, seed {seed}",
               err=True)


generate_cmd.name = "generate"
