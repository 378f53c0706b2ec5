"""Unit conversions, used only at the edges (config reading, output writing)."""

GIB = 1 << 30
NS_PER_S = 1_000_000_000


def gb_to_bytes(gb: float) -> int:
    # The reference (and ASTRA-Sim) reads "GB" in configs as GiB.
    return int(round(gb * GIB))


def bytes_per_ns(gb_per_s: float) -> float:
    # ASTRA-Sim's analytical network reads GB/s as 2^30 bytes per second.
    return gb_per_s * GIB / NS_PER_S
