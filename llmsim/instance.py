"""Everything one serving instance needs, assembled from the configs (side effects: file reads)."""
import logging
from dataclasses import dataclass, replace
from pathlib import Path

from .config.cluster import InstanceConfig
from .config.engine import DTYPE_BYTES, DTYPE_SHORT, EngineArgs
from .config.model import ModelSpec, load_model_spec
from .errors import InputError
from .graph.builder import InstanceLayout
from .kv_cache import BlockPool
from .capacity import DEFAULT_NON_TORCH_BYTES, activation_peak_bytes
from .memory import MemoryPlan, plan_memory
from .perf.architecture import load_architecture
from .perf.profile import ProfileBundle, ProfileError
from .paths import locate_dir, searched
from .perf.hardware import available_hardware, load_hardware
from .perf.roofline import RooflineTimer
from .perf.routing import POLICIES, ExpertRouter, Routing
from .perf.timer import ProfileTimer
from .decode_lanes import LaneScheduler
from .scheduler import Scheduler

log = logging.getLogger("llmsim")

_PROFILE_CACHE: dict = {}


@dataclass
class Instance:
    config: InstanceConfig
    args: EngineArgs
    model: ModelSpec
    layout: InstanceLayout
    memory: MemoryPlan
    pool: BlockPool
    scheduler: Scheduler
    timer: ProfileTimer | RooflineTimer
    dtype: str
    profile_note: str  # a warning about the timing source (roofline, unmeasured layers)
    timing_info: str = ""  # an [INFO] about it (a same-width bundle standing in)
    routing: Routing | None = None  # the expert routing model of an MoE model (None: dense)

    @property
    def index(self) -> int:
        return self.config.index


def resolve_dtype(inst: InstanceConfig, args: EngineArgs, model: ModelSpec) -> str:
    """Instance key > CLI > the model's torch_dtype > bfloat16 (the reference's order)."""
    if args.dtype:
        return args.dtype
    if model.torch_dtype in DTYPE_BYTES:
        return model.torch_dtype
    return "bfloat16"


def _variant(dtype: str, kv_dtype: str) -> str:
    return DTYPE_SHORT[dtype] + ("-kvfp8" if kv_dtype == "fp8" else "")


def _profile_variant(root: Path, inst: InstanceConfig, dtype: str, kv_dtype: str, model: ModelSpec):
    """(wanted variant, the one to load): a same-width variant stands in for a missing one."""
    variant = _variant(dtype, kv_dtype)
    candidates = [variant]
    twin = {"fp16": "bf16", "bf16": "fp16"}.get(DTYPE_SHORT[dtype])
    if twin:
        candidates.append(twin + variant[len(DTYPE_SHORT[dtype]):])
    model_dir = root / inst.hardware / model.name
    return variant, next((v for v in candidates if (model_dir / v).is_dir()), variant)


def has_profile(root: Path, inst: InstanceConfig, dtype: str, kv_dtype: str, model: ModelSpec) -> bool:
    _, chosen = _profile_variant(root, inst, dtype, kv_dtype, model)
    return (root / inst.hardware / model.name / chosen / f"tp{inst.tp_size}").is_dir()


def load_profile(root: Path, inst: InstanceConfig, dtype: str, kv_dtype: str, model: ModelSpec):
    """The measured bundle for (hardware, model, dtype, tp); a same-width variant stands in for a
    missing one (fp16 <-> bf16) and says so."""
    variant, chosen = _profile_variant(root, inst, dtype, kv_dtype, model)
    key = (str(root), inst.hardware, model.name, chosen, inst.tp_size)
    if key not in _PROFILE_CACHE:
        arch = load_architecture(_arch_root(model), model.model_type)
        try:
            _PROFILE_CACHE[key] = ProfileBundle.load(root, inst.hardware, model.name, chosen, inst.tp_size, arch)
        except ProfileError as e:
            raise InputError(f"{inst.where}: {e}") from None
    note = ""
    if chosen != variant:
        note = (f"instance {inst.index}: no {variant} profile for {model.name} on {inst.hardware}; using the "
                f"{chosen} bundle (same element width: vLLM's kernels take the same time for fp16 and bf16)")
    return _PROFILE_CACHE[key], note


def _arch_root(model: ModelSpec) -> Path:
    """The profiles folder holding the model type's layer order (a user's bundle may rely on the shipped one)."""
    return locate_dir("profiles", f"architectures/{model.model_type}.yaml")


def _timer(inst, args, model, dtype, fp, kv_fp):
    """A measured bundle when one exists for (hardware, model, dtype, tp), else the roofline model
    (announced); `args.timing` can insist on either."""
    profiles = locate_dir("profiles", f"{inst.hardware}/{model.name}")
    if args.timing == "profile" or (args.timing == "auto" and has_profile(profiles, inst, dtype, args.kv_cache_dtype, model)):
        bundle, note = load_profile(profiles, inst, dtype, args.kv_cache_dtype, model)
        if model.moe is not None:
            timer, warn = _moe_profile_timer(inst, model, bundle, dtype, fp, kv_fp)
            return timer, bundle.architecture, warn, note
        return ProfileTimer(bundle, bundle.architecture), bundle.architecture, "", note
    try:
        arch = load_architecture(_arch_root(model), model.model_type)
    except ProfileError as e:
        raise InputError(f"{inst.where}: {e}") from None
    hw_dir = locate_dir("configs/hardware", f"{inst.hardware}.json")
    if not (hw_dir / f"{inst.hardware}.json").is_file() and args.timing == "auto":
        have = sorted(p.name for p in profiles.iterdir() if p.is_dir() and p.name != "architectures")
        raise InputError(f"{inst.where}.hardware: no measured profile and no hardware file for '{inst.hardware}' "
                         f"(profiles: {', '.join(have)}; hardware files: {', '.join(available_hardware(hw_dir))})")
    hw = load_hardware(inst.hardware, hw_dir)
    ep = inst.ep_size
    timer = RooflineTimer(model, arch, hw, fp, inst.tp_size, dtype=dtype, kv_dtype_bytes=kv_fp,
                          ep=ep, expert_tp=_expert_tp(inst))
    note = (f"instance {inst.index}: no measured profile for {model.name} {dtype} tp={inst.tp_size} on "
            f"{inst.hardware}; timing from the roofline model (approximate: docs/roofline.md)")
    return timer, arch, note, ""


def _expert_tp(inst: InstanceConfig) -> int:
    """Over how many ranks each expert is sliced: 1 with expert parallelism (whole experts per EP
    rank), else tp, flattened across a DP group as vLLM does (FusedMoEParallelConfig.make: without
    enable_expert_parallel the experts' TP group is tp x dp)."""
    return 1 if inst.ep_size > 1 else inst.tp_size * inst.dp_size


def _moe_profile_timer(inst, model, bundle, dtype, fp, kv_fp):
    """(ProfileTimer, warning) for an MoE model on a measured bundle. moe.csv times the whole
    expert block on one GPU holding its experts whole: it fits tp = 1, and each EP rank with
    expert parallelism (ep = tp: every rank looked up at its own load, the slowest rank's time).
    With tp > 1 and no expert parallelism each GPU holds a 1/tp slice of every expert, which the
    table does not capture, so the roofline model times the expert block there (the other layers
    stay measured)."""
    arch, tp, k = bundle.architecture, inst.tp_size, model.moe.top_k
    has_table = "moe" in bundle.layers
    sliced = _expert_tp(inst)
    if tp == 1 and sliced == 1 and has_table:
        return ProfileTimer(bundle, arch, top_k=k), ""
    if inst.ep_size > 1 and has_table:  # each EP rank holds its experts whole: what moe.csv measures
        return ProfileTimer(bundle, arch, top_k=k, moe_note=f"expert block per EP rank from tp1/moe.csv "
                            f"(ep={inst.ep_size}, the slowest rank)"), ""
    over = f"tp={tp}" if inst.dp_size == 1 else f"tp x dp = {tp} x {inst.dp_size} without expert parallelism"
    why = (f"{bundle.hardware}/{bundle.variant} moe.csv times whole experts on one GPU, but with {over} each GPU "
           f"holds a 1/{sliced} slice of every expert" if has_table else f"{bundle.root} has no moe.csv")
    hw_file = locate_dir("configs/hardware", f"{inst.hardware}.json") / f"{inst.hardware}.json"
    if not hw_file.is_file():  # nothing to time the sliced block with: the table (an over-estimate) or nothing
        what = "timed from that table (whole experts: an over-estimate)" if has_table else "not timed"
        return (ProfileTimer(bundle, arch, top_k=k),
                f"instance {inst.index}: {why}; no hardware file for the roofline, so the expert block is {what}")
    ep = inst.ep_size  # here only without a table when ep > 1: the roofline's EP rank holds its experts whole
    roof = RooflineTimer(model, arch, load_hardware(hw_file), fp, tp, dtype=dtype, kv_dtype_bytes=kv_fp,
                         ep=ep, expert_tp=sliced)
    return (ProfileTimer(bundle, arch, top_k=k, moe_timer=roof),
            f"instance {inst.index}: {why}; the expert block is timed by the roofline model "
            f"(approximate: docs/moe.md), the other layers from the measured profile")


def _ep_info(inst: InstanceConfig, model: ModelSpec, timer) -> str:
    """The [INFO] line of an instance with expert parallelism: what runs where, which source times what."""
    if inst.dp_group is not None and model.moe is None:
        return (f"instance {inst.index}: data-parallel rank {inst.dp_rank} of {inst.dp_size} in dp_group "
                f"'{inst.dp_group}': a dense model's DP ranks are independent engines (no lockstep), requests routed "
                "by vLLM's DP load balancer")
    if inst.dp_group is not None and inst.ep_size == 1:
        return (f"instance {inst.index}: data-parallel rank {inst.dp_rank} of {inst.dp_size} in dp_group "
                f"'{inst.dp_group}' without expert parallelism: every expert sliced over tp x dp = "
                f"{_expert_tp(inst)} ranks, each MoE layer all-gathers every rank's tokens and reduce-scatters the "
                "output, the ranks in lockstep (idle ranks run dummy batches)")
    if model.moe is None or inst.ep_size == 1:
        return ""
    per_rank = -(-model.moe.num_experts // inst.ep_size)
    if isinstance(timer, RooflineTimer):
        src = "every layer from the roofline model, each EP rank's expert block with its experts whole"
    elif timer.moe_timer is not None:
        src = (f"attention and dense layers from the measured tp{timer.bundle.tp} profile, each EP rank's expert "
               f"block from the roofline model (no moe.csv)")
    else:
        src = (f"attention and dense layers from the measured tp{timer.bundle.tp} profile, each EP rank's expert "
               f"block from tp1/moe.csv (one rank's whole experts)")
    if inst.dp_group is not None:
        return (f"instance {inst.index}: data-parallel rank {inst.dp_rank} of {inst.dp_size} in dp_group "
                f"'{inst.dp_group}', expert parallelism ep={inst.ep_size} over tp x dp: {per_rank} of "
                f"{model.moe.num_experts} experts whole per rank, each MoE layer all-gathers every rank's tokens and "
                f"reduce-scatters the output, the ranks in lockstep (idle ranks run dummy batches); timing: {src}")
    return (f"instance {inst.index}: expert parallelism ep={inst.ep_size} inside the tp={inst.tp_size} group: "
            f"{per_rank} of {model.moe.num_experts} experts whole per rank, every rank routes the whole batch (no "
            f"token dispatch without data parallelism), the MoE output all-reduced over the group; timing: {src}, "
            f"the MoE layer the slowest rank's")


def _check_moe(inst: InstanceConfig, model: ModelSpec) -> None:
    """What single-instance MoE serving cannot take (data parallelism, and expert parallelism other
    than ep = tp, are refused by the cluster config): a model mixing dense and MoE decoder layers (the iteration graph repeats one
    decoder block), and more TP ranks than experts (vLLM refuses it)."""
    e = model.moe
    if e.num_moe_layers != model.num_layers:
        raise InputError(f"{inst.where}.model_name: {model.name} mixes dense and mixture-of-experts decoder layers "
                         f"({e.num_moe_layers} of {model.num_layers} have experts); serving such a model is not wired "
                         f"yet (docs/moe.md)")
    if inst.tp_size > e.num_experts:
        raise InputError(f"{inst.where}.tp_size: tensor parallel size {inst.tp_size} is greater than the number of "
                         f"experts ({e.num_experts}) of {model.name}")


def _mem_bw_ignored(inst: InstanceConfig) -> str:
    """On a profile-timed run npu_mem.mem_bw does not change layer times (measured); a value that
    differs from the hardware's datasheet figure was likely meant to, so say it is ignored."""
    hw_file = locate_dir("configs/hardware", f"{inst.hardware}.json") / f"{inst.hardware}.json"
    if not hw_file.is_file():
        return ""
    spec = load_hardware(hw_file).mem_bw_gbps
    if abs(inst.npu_mem.bw_gbps - spec) <= 1e-6 * spec:
        return ""
    use = "ignored" if inst.tp_size == 1 else "used only for the tensor-parallel all-reduce's reductions"
    return (f"{inst.where}.npu_mem.mem_bw: {inst.npu_mem.bw_gbps:g} GB/s is {use} on a profile-timed run "
            f"(layer times come from the measured profile, {inst.hardware}: {spec:g} GB/s)")


def build_instance(inst: InstanceConfig, base_args: EngineArgs, fast_path: bool = True) -> Instance:
    args = base_args.with_overrides(inst.overrides)
    if inst.mem_util is not None:
        args = replace(args, npu_memory_utilization=inst.mem_util)
    model_dir = locate_dir("configs/model", f"{inst.model_name}.json")
    if not (model_dir / f"{inst.model_name}.json").is_file():
        raise InputError(f"{inst.where}.model_name: no model config '{inst.model_name}.json'; searched "
                         f"{searched('configs/model')}")
    model = load_model_spec(model_dir, inst.model_name)
    if args.moe_routing not in POLICIES:
        raise InputError(f"{inst.where}: moe_routing '{args.moe_routing}' (choose from {', '.join(POLICIES)})")
    if model.moe is not None:  # experts whole per EP rank, or sliced over tp (x dp) ranks (docs/moe.md)
        _check_moe(inst, model)
    elif inst.ep_size > 1:
        raise InputError(f"{inst.where}.ep_size: {model.name} has no experts; expert parallelism needs a "
                         f"mixture-of-experts model (set ep_size to 1)")
    ep = inst.ep_size  # 1, tp_size, or tp x dp (config/cluster.py): each rank holds E/ep experts whole
    expert_tp = _expert_tp(inst)
    if inst.pp_size > model.num_layers:
        raise InputError(f"{inst.where}.pp_size: {inst.pp_size} exceeds the {model.num_layers} decoder layers of {model.name}")
    if model.num_heads % inst.tp_size:  # vLLM refuses it too
        raise InputError(f"{inst.where}.tp_size: total number of attention heads ({model.num_heads}) of {model.name} "
                         f"must be divisible by tensor parallel size ({inst.tp_size})")
    dtype = resolve_dtype(inst, args, model)
    fp = DTYPE_BYTES[dtype]
    kv_fp = 1 if args.kv_cache_dtype == "fp8" else fp
    max_model_len = min(args.max_model_len or model.max_position_embeddings, model.max_position_embeddings)
    reserved = None
    if args.kv_capacity == "vllm":
        reserved = lambda s: (activation_peak_bytes(model, inst.tp_size, fp, args.max_num_batched_tokens or max_model_len,
                                                    args.max_num_seqs or 1024, s == inst.pp_size - 1, expert_tp)
                              + DEFAULT_NON_TORCH_BYTES)
    device_bytes = inst.npu_mem.size_bytes
    if args.kv_capacity == "vllm":
        hw_file = locate_dir("configs/hardware", f"{inst.hardware}.json") / f"{inst.hardware}.json"
        usable = load_hardware(hw_file).usable_memory_bytes if hw_file.is_file() else None
        device_bytes = min(device_bytes, usable or device_bytes)
    memory = plan_memory(model, inst.tp_size, inst.pp_size, fp, kv_fp, device_bytes,
                         args.npu_memory_utilization, args.block_size, inst.where, reserved, args.num_gpu_blocks,
                         ep=ep, expert_tp=expert_tp)
    timer, arch, note, info = _timer(inst, args, model, dtype, fp, kv_fp)
    routing = None
    if model.moe is not None:  # the batch's tokens are on every rank (no DP): each EP rank's experts see them all
        routing = Routing(args.moe_routing, args.moe_seed)
        timer.bind_router(ExpertRouter.for_model(model, ep, routing))
    ep_info = _ep_info(inst, model, timer)
    info = f"{info}; {ep_info}" if info and ep_info else info or ep_info
    layout = InstanceLayout(inst.index, inst.first_npu, model, arch, inst.tp_size, inst.pp_size, fp,
                            args.stage_transfer)
    pool = BlockPool(memory.num_blocks, args.block_size, args.enable_prefix_caching)
    sched = (LaneScheduler if fast_path else Scheduler)(inst.index, args, pool, inst.pp_size, max_model_len,
                                                        model.name)
    ignored = _mem_bw_ignored(inst) if isinstance(timer, ProfileTimer) else ""
    if ignored:
        note = f"{note}; {ignored}" if note else ignored
    if timer.skipped:  # as the reference does: a layer the bundle never measured costs nothing
        missing = f"layers {', '.join(timer.skipped)} are not timed by {timer.describe()}"
        note = f"{note}; {missing}" if note else f"instance {inst.index}: {missing}"
    return Instance(inst, args, model, layout, memory, pool, sched, timer, dtype, note, info, routing)
