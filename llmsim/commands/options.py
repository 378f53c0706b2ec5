"""What every command shares: the engine options, one-line error handling, the start-up banner."""
import functools
import logging
import math
import os
import signal
import sys
import warnings

import click

from ..config.engine import COMPAT_MODES, DEFAULT_RULES, DTYPE_BYTES, REFERENCE_RULES, EngineArgs
from ..errors import InputError
from ..graph.dp_step import ALL2ALL_BACKENDS
from ..perf.routing import POLICIES as MOE_POLICIES
from ..router import DEFAULT_SEED


def _nonneg(ctx, param, value):
    if value is not None and value < 0:
        raise click.BadParameter(f"must be >= 0, got {value}")
    return value


def _finite(ctx, param, value):
    """FloatRange lets nan and inf through (every comparison with nan is false)."""
    if value is not None and not math.isfinite(value):
        raise click.BadParameter(f"must be a finite number, got {value}")
    return value


MAX_GPU_BLOCKS = 10 ** 9


ENGINE_OPTIONS = [
    click.option("--cluster-config", default="configs/cluster/single_node_single_instance.json", show_default=True,
                 help="Cluster config JSON (the reference's schema)."),
    click.option("--dataset", default=None, help="Workload JSONL (input_toks, output_toks, arrival_time_ns[, token ids]). "
                 "Without it: a synthetic workload, 16 requests per instance, 64 prompt / 64 output tokens, all "
                 "arriving at t=0 (the reference's default)."),
    click.option("--dtype", type=click.Choice(sorted(DTYPE_BYTES)), default=None, help="Weight dtype (instance key wins)."),
    click.option("--kv-cache-dtype", type=click.Choice(["auto", "fp8"]), default="auto", show_default=True,
                 help="KV cache element type: auto = the weight dtype; fp8 = 1 byte per element (more KV blocks; "
                      "the fp8-KV profile bundle when one exists)."),
    click.option("--block-size", type=click.IntRange(min=1), default=16, show_default=True, help="Tokens per KV block."),
    click.option("--max-num-seqs", type=int, default=128, show_default=True, callback=_nonneg, help="0 = unlimited."),
    click.option("--max-num-batched-tokens", type=int, default=2048, show_default=True, callback=_nonneg,
                 help="Token budget per step; 0 = the maximum model length."),
    click.option("--max-model-len", type=int, default=0, callback=_nonneg,
                 help="Longest request (prompt + output) and cap of the token budget; 0 = max_position_embeddings."),
    click.option("--long-prefill-token-threshold", type=int, default=0, show_default=True, callback=_nonneg,
                 help="Most prompt tokens one request may compute in a step (long prompts are chunked over "
                      "steps, as vLLM's option); 0 = no cap beyond the token budget."),
    click.option("--enable-prefix-caching/--no-enable-prefix-caching", default=True, show_default=True),
    click.option("--enable-chunked-prefill/--no-enable-chunked-prefill", default=True, show_default=True),
    click.option("--reserve-full-isl/--no-reserve-full-isl", default=True, show_default=True,
                 help="Admit a request only if its whole current sequence fits in free blocks."),
    click.option("--npu-memory-utilization", type=click.FloatRange(0, 1, min_open=True), default=0.9, show_default=True,
                 callback=_finite),
    click.option("--kv-capacity", type=click.Choice(["vllm", "reference"]), default=None,
                 help="KV blocks as vLLM's memory profiling leaves them (mem x util - weights - activation peak - "
                      "non-torch memory; llmsim/capacity.py), or the reference's rule (mem x util - weights: too many "
                      "blocks, which the reference's recorded runs need). Default: vllm (reference under --compat "
                      "llmservingsim)."),
    click.option("--batch-formation", type=click.Choice(["vllm", "reference"]), default=None,
                 help="With pp > 1, when the next batch is formed: vllm = when a batch completes and frees a slot of "
                      "vLLM's batch queue (or a request reaches an idle engine), then it waits for stage 0; "
                      "reference = when stage 0 is free (LLMServingSim). Default: vllm (reference under --compat)."),
    click.option("--stage-transfer", type=click.Choice(["vllm", "reference"]), default=None,
                 help="What crosses a pipeline-stage boundary: vllm = hidden states and residual, each TP rank "
                      "sending its 1/tp slice, all-gathered on the next stage; reference = one activation tensor per "
                      "rank (LLMServingSim). Default: vllm (reference under --compat)."),
    click.option("--compat", type=click.Choice(COMPAT_MODES), default="vllm", show_default=True,
                 help="llmservingsim: every rule in which llmsim departs from LLMServingSim 2.0 on purpose "
                      "(--kv-capacity, --batch-formation, --stage-transfer, --moe-routing, --dp-sync) takes the "
                      "reference's value, unless "
                      "given explicitly; docs/differences.md."),
    click.option("--num-gpu-blocks", type=click.IntRange(0, MAX_GPU_BLOCKS), default=0,
                 help="Pin the KV block count (e.g. vLLM's logged num_gpu_blocks); 0 = computed."),
    click.option("--timing", type=click.Choice(["auto", "profile", "roofline"]), default="auto", show_default=True,
                 help="Layer times from a measured profile bundle, the roofline model, or the bundle when one exists."),
    click.option("--moe-routing", type=click.Choice(MOE_POLICIES), default=None,
                 help="Mixture-of-experts models: how a batch's tokens land on the experts, which sets the activated "
                      "experts each MoE layer reads: expected = uniform top-k routing's expectation; balanced = no "
                      "collisions (an upper bound); uniform / skewed = a seeded random draw per batch (--moe-seed); "
                      "reference = LLMServingSim's BALANCED (docs/moe.md). Default: expected (reference under "
                      "--compat llmservingsim)."),
    click.option("--dp-sync", type=click.Choice(["vllm", "reference"]), default=None,
                 help="Data-parallel MoE groups (dp_group): vllm = vLLM's DP engine cores (its load balancer, "
                      "lockstep waves, dummy batches, CUDA-graph padding); reference = LLMServingSim 2.0's barrier, "
                      "padding and collectives (tp_size 1). Default: vllm (reference under --compat llmservingsim)."),
    click.option("--all2all-backend", type=click.Choice(ALL2ALL_BACKENDS), default="allgather_reducescatter",
                 show_default=True,
                 help="Data-parallel MoE groups: how each MoE layer moves tokens between the ranks, as vLLM's "
                      "--all2all-backend: an all-gather then a reduce-scatter (its default), naive (all-gather, "
                      "then an all-reduce), or an all-to-all of each token to its experts' ranks and back (pplx, "
                      "deepep_*: the collective only, not the kernels' formats; tp_size 1). docs/moe.md."),
    click.option("--moe-seed", type=int, default=0, show_default=True,
                 help="Seed of --moe-routing uniform / skewed (same seed, same outputs)."),
    click.option("--request-routing-policy", type=click.Choice(["LOAD", "RR", "RAND"]), default="LOAD", show_default=True,
                 help="Which instance takes each arriving request: LOAD = fewest waiting (weighted 4x) + running "
                      "requests relative to max_num_seqs, ties round-robin; RR = round-robin; RAND = uniformly at "
                      "random (reproducible: see --seed)."),
    click.option("--seed", type=int, default=DEFAULT_SEED, show_default=True,
                 help="Random seed of --request-routing-policy RAND (recorded in <output>.meta.json)."),
    click.option("--num-reqs", type=int, default=0, callback=_nonneg, help="Use the first N dataset lines (0 = all)."),
]

ENGINE_KEYS = ("dtype", "kv_cache_dtype", "block_size", "max_num_seqs", "max_num_batched_tokens", "max_model_len",
               "long_prefill_token_threshold", "enable_prefix_caching", "enable_chunked_prefill", "reserve_full_isl",
               "npu_memory_utilization", "kv_capacity", "num_gpu_blocks", "timing", "batch_formation",
               "stage_transfer", "moe_routing", "moe_seed", "dp_sync", "all2all_backend")


def engine_options(f):
    for opt in reversed(ENGINE_OPTIONS):
        f = opt(f)
    return f


def engine_args(opts: dict) -> EngineArgs:
    """A rule flag given explicitly wins; else --compat decides (llmservingsim: the reference's rules)."""
    args = {k: opts[k] for k in ENGINE_KEYS}
    compat = opts.get("compat") or "vllm"
    for k, ref in REFERENCE_RULES.items():
        if args[k] is None:
            args[k] = ref if compat == "llmservingsim" else DEFAULT_RULES[k]
    return EngineArgs(**args)


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
        except BrokenPipeError:
            # the reader of stdout went away (`| head`): stop quietly, as Unix tools do
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            sys.exit(141)
    return wrapper


def announce(sim, quiet: bool) -> None:
    for w in sim.cluster.warnings:
        click.echo(f"[WARNING] {w}", err=True)
    for inst in sim.instances:
        if inst.profile_note:
            click.echo(f"[WARNING] {inst.profile_note}", err=True)
        if inst.timing_info and not quiet:
            click.echo(f"[INFO] {inst.timing_info}")
        if not quiet:
            m = inst.memory
            routing = "" if inst.routing is None else f", expert routing: {inst.routing.describe()}"
            click.echo(f"[INFO] instance {inst.index}: {inst.model.name} on {inst.config.num_npus} x "
                       f"{inst.config.hardware} (tp={inst.config.tp_size}, pp={inst.config.pp_size}), {inst.dtype}, "
                       f"timing: {inst.timer.describe()}{routing}; "
                       f"KV cache {m.num_blocks} blocks x {m.block_size} tokens "
                       f"({inst.args.kv_capacity if not inst.args.num_gpu_blocks else 'pinned'}); layers per stage "
                       f"{[s.layers for s in m.stages]}")
