"""Accelerator datasheet figures (configs/hardware/<name>.json) for the roofline timing model.

File names match the `hardware` strings of cluster configs (H100, RTXPRO6000, ...). Every
failure is one InputError line naming the file and the field.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..config._fields import Fields, parse_json
from ..errors import InputError

# dtype names used by the engine (config/engine.py) -> peak_tflops key
DTYPE_PEAK_KEY = {"bfloat16": "bf16", "float16": "fp16", "float32": "fp32", "fp8": "fp8", "int8": "int8"}


@dataclass(frozen=True)
class HardwareSpec:
    name: str
    peak_tflops: dict[str, float]  # dense tensor-core peak per dtype key (bf16, fp16, fp8, fp32, ...)
    mem_bw_gbps: float  # GB/s, 1e9 bytes
    mem_size_gb: float
    link_bw_gbps: float  # GPU-to-GPU, as the vendor quotes it (same convention as cluster link_bw)
    link_latency_ns: float
    source: str
    # What the CUDA driver reports as total memory (torch.cuda.mem_get_info), when measured: a little
    # under the datasheet size. vLLM's KV capacity is a fraction of this.
    usable_memory_bytes: int | None = None
    key: str = ""  # file stem, the cluster config's `hardware` string
    path: str = ""

    def peak_flops(self, dtype: str) -> float:
        """FLOP/s for the matmul dtype; fp16 and bf16 stand in for each other."""
        key = DTYPE_PEAK_KEY.get(dtype, dtype)
        for k in (key, {"bf16": "fp16", "fp16": "bf16"}.get(key)):
            if k in self.peak_tflops:
                return self.peak_tflops[k] * 1e12
        raise InputError(f"{self.path}: peak_tflops: no '{key}' entry for dtype {dtype} "
                         f"(has: {', '.join(self.peak_tflops)})")

    @property
    def mem_bw(self) -> float:
        return self.mem_bw_gbps * 1e9


def hardware_dir(data_root: Path) -> Path:
    return Path(data_root) / "configs" / "hardware"


def available_hardware(hw_dir: Path) -> list[str]:
    return sorted(p.stem for p in Path(hw_dir).glob("*.json") if p.stem != "roofline_fit")


def _positive(f: Fields, key: str, *, allow_zero: bool = False) -> float:
    if key not in f.obj:
        f.fail("required field is missing", key)
    val = f.obj[key]
    if isinstance(val, bool) or not isinstance(val, (int, float)):
        f.fail(f"expected a number, got {val!r}", key)
    if val < 0 or (val == 0 and not allow_zero):
        f.fail(f"expected a {'non-negative' if allow_zero else 'positive'} number, got {val!r}", key)
    return float(val)


def load_hardware(name_or_path: str | Path, hw_dir: Path | None = None) -> HardwareSpec:
    """A hardware file by path, or by name under hw_dir (configs/hardware)."""
    p = Path(name_or_path)
    if p.suffix != ".json":
        if hw_dir is None:
            raise InputError(f"hardware '{name_or_path}': no hardware directory given")
        p = Path(hw_dir) / f"{name_or_path}.json"
        if not p.is_file():
            have = ", ".join(available_hardware(hw_dir)) or "none"
            raise InputError(f"{p}: no hardware file for '{name_or_path}' (available: {have})")
    elif not p.is_file():
        raise InputError(f"{p}: hardware file not found")
    f = Fields(str(p), parse_json(str(p), p.read_bytes()), "")
    peaks = f.child("peak_tflops")
    if not peaks.obj:
        peaks.fail("expected at least one dtype entry (bf16, fp16, fp8, fp32)")
    peak = {k: _positive(peaks, k) for k in peaks.obj}
    source = f.get("source", str)
    if not source.strip():
        f.fail("expected the datasheet the figures come from, got an empty string", "source")
    return HardwareSpec(
        name=f.get("name", str),
        peak_tflops=peak,
        mem_bw_gbps=_positive(f, "mem_bw_gbps"),
        mem_size_gb=_positive(f, "mem_size_gb"),
        link_bw_gbps=_positive(f, "link_bw_gbps"),
        link_latency_ns=_positive(f, "link_latency_ns", allow_zero=True),
        source=source,
        usable_memory_bytes=f.get("usable_memory_bytes", int, None, minimum=1),
        key=p.stem,
        path=str(p),
    )
