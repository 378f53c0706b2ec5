"""Profile lookups checked against values worked out by hand from the bundled CSV rows."""
import csv
from pathlib import Path

import pytest

from llmsim.perf import ProfileBundle, ProfileError, load_architecture

ROOT = Path(__file__).resolve().parents[1]
PROFILES = ROOT / "profiles"
LLAMA = "meta-llama/Llama-3.1-8B"
PRO_DIR = PROFILES / "RTXPRO6000" / LLAMA / "bf16"


def ns(us: str) -> int:
    return max(1, round(float(us) * 1000))


def dense_row(tp_dir: Path, layer: str, key: int, name: str = "dense", key_col: str = "tokens") -> int:
    with open(tp_dir / f"{name}.csv") as f:
        for r in csv.DictReader(f):
            if r["layer"] == layer and int(r[key_col]) == key:
                return ns(r["time_us"])
    raise LookupError((layer, key))


def attn_row(tp_dir: Path, pc: int, kp: int, nd: int, kd: int) -> int:
    with open(tp_dir / "attention.csv") as f:
        for r in csv.DictReader(f):
            if (int(r["prefill_chunk"]), int(r["kv_prefill"]), int(r["n_decode"]), int(r["kv_decode"])) == (pc, kp, nd, kd):
                return ns(r["time_us"])
    raise LookupError((pc, kp, nd, kd))


def lerp(x0, y0, x1, y1, x):
    return y0 + (x - x0) / (x1 - x0) * (y1 - y0)


@pytest.fixture(scope="module")
def pro1():
    return ProfileBundle.load(PROFILES, "RTXPRO6000", LLAMA, "bf16", 1)


@pytest.fixture(scope="module")
def rtx4090():
    return ProfileBundle.load(PROFILES, "RTX4090", LLAMA, "bf16", 1)


# ------------------------------------------------------------------ 1-D tables

def test_dense_exact_grid_hit(pro1):
    assert dense_row(PRO_DIR / "tp1", "act_fn", 4) == 2922  # act_fn,4,2.92233
    assert pro1.dense_ns("act_fn", 4) == 2922


def test_dense_interpolates_between_rows(pro1):
    lo, hi = dense_row(PRO_DIR / "tp1", "qkv_proj", 64), dense_row(PRO_DIR / "tp1", "qkv_proj", 80)
    assert (lo, hi) == (35840, 42710)
    expected = int(lerp(64, lo, 80, hi, 70))  # 35840 + 6/16 * 6870 = 38416.25
    assert expected == 38416
    assert pro1.dense_ns("qkv_proj", 70) == expected


def test_dense_clamps_below_first_key(pro1):
    first = dense_row(PRO_DIR / "tp1", "layernorm", 1)
    assert pro1.dense_ns("layernorm", 0) == first == 2416


def test_dense_extrapolates_above_last_key(pro1, caplog):
    lo, hi = dense_row(PRO_DIR / "tp1", "qkv_proj", 2032), dense_row(PRO_DIR / "tp1", "qkv_proj", 2048)
    expected = int(lerp(2032, lo, 2048, hi, 3000))  # 302742 + 60.5 * 223 = 316233.5
    assert expected == 316233
    with caplog.at_level("WARNING", logger="llmsim.perf.profile"):
        assert pro1.dense_ns("qkv_proj", 3000) == expected
        pro1.dense_ns("qkv_proj", 3001)
    assert sum("above profiled max" in r.getMessage() for r in caplog.records) == 1


def test_per_sequence(pro1):
    tp1 = PRO_DIR / "tp1"
    lo = dense_row(tp1, "lm_head", 64, "per_sequence", "sequences")
    hi = dense_row(tp1, "lm_head", 80, "per_sequence", "sequences")
    assert (lo, hi) == (715575, 719533)
    assert pro1.per_sequence_ns("lm_head", 64) == lo
    assert pro1.per_sequence_ns("lm_head", 70) == int(lerp(64, lo, 80, hi, 70)) == 717059


def test_unknown_layer_is_profile_error(pro1):
    with pytest.raises(ProfileError, match="no dense profile for layer 'nope'.*qkv_proj"):
        pro1.dense_ns("nope", 8)


# ------------------------------------------------------------------ attention

def test_attention_exact_grid_point(pro1):
    assert pro1.attention_ns(0, 0, [128]) == attn_row(PRO_DIR / "tp1", 0, 0, 1, 128) == 11936
    # A mixed row (prefill + 4 equal decodes, so no skew correction).
    assert pro1.attention_ns(64, 1024, [2048] * 4) == attn_row(PRO_DIR / "tp1", 64, 1024, 4, 2048) == 52459


def test_attention_interpolates_along_kv_decode(pro1):
    lo, hi = attn_row(PRO_DIR / "tp1", 0, 0, 1, 64), attn_row(PRO_DIR / "tp1", 0, 0, 1, 128)
    assert (lo, hi) == (8437, 11936)
    assert pro1.attention_ns(0, 0, [100]) == int(lerp(64, lo, 128, hi, 100)) == 10405


def test_attention_missing_slice_uses_nearest_pair(pro1):
    # (pc=16, nd=256) was not profiled; the nearest pair by squared distance is (0, 256).
    assert pro1.attention_ns(16, 0, [1024] * 256) == attn_row(PRO_DIR / "tp1", 0, 0, 256, 1024) == 754755


def test_attention_empty_batch_is_zero(pro1):
    assert pro1.attention_ns(0, 0, []) == 0


def test_skew_alpha_from_bucket_table(pro1):
    # Decodes at 128 and 512: kd = 320, skew_rate = (320-128)/(512-128) = 0.5, kv_big = 512
    # -> key pc=0|n<=2|sr<=70%|kvB<=1k|kp=0, alpha 0.1554 in tp1/skew_fit.csv.
    with open(PRO_DIR / "tp1" / "skew_fit.csv") as f:
        alpha = next(float(r["alpha"]) for r in csv.DictReader(f)
                     if (r["pc"], r["n_label"], r["skew_rate_label"], r["kv_big_label"], r["kp_label"])
                     == ("0", "n<=2", "sr<=70%", "kvB<=1k", "kp=0"))
    assert alpha == 0.1554
    tp1 = PRO_DIR / "tp1"
    t_mean = int(lerp(256, attn_row(tp1, 0, 0, 2, 256), 512, attn_row(tp1, 0, 0, 2, 512), 320))
    t_max = attn_row(tp1, 0, 0, 2, 512)
    assert (t_mean, t_max) == (16077, 16758)
    expected = round(t_mean + alpha * (t_max - t_mean))
    assert expected == 16183
    assert pro1.attention_ns(0, 0, [128, 512]) == expected


def test_skew_alpha_default_when_key_missing(pro1):
    # pc=24 is an attention grid value but not a skew grid value: no pc=24 bucket exists,
    # so the per-tp alpha_default (0.0543) applies. kd = 832, kv_big = 1152.
    assert pro1.meta["skew_fit"]["per_tp"][1]["alpha_default"] == 0.0543
    tp1 = PRO_DIR / "tp1"
    t_mean = int(lerp(768, attn_row(tp1, 24, 0, 2, 768), 1152, attn_row(tp1, 24, 0, 2, 1152), 832))
    t_max = attn_row(tp1, 24, 0, 2, 1152)
    assert (t_mean, t_max) == (24262, 30912)
    expected = round(t_mean + 0.0543 * (t_max - t_mean))
    assert expected == 24623
    assert pro1.attention_ns(24, 0, [512, 1152]) == expected


def test_skew_disabled_gives_mean_lookup(rtx4090):
    assert rtx4090.meta["skew_fit"]["enabled"] is False
    tp1 = PROFILES / "RTX4090" / LLAMA / "bf16" / "tp1"
    t_mean = int(lerp(256, attn_row(tp1, 0, 0, 2, 256), 512, attn_row(tp1, 0, 0, 2, 512), 320))
    assert rtx4090.attention_ns(0, 0, [128, 512]) == t_mean


def test_tp2_bundle_and_stats_entry_point():
    b = ProfileBundle.load(PROFILES, "RTXPRO6000", LLAMA, "bf16", 2)
    assert b.available_tps == [1, 2]
    assert b.dense_ns("qkv_proj", 64) == dense_row(PRO_DIR / "tp2", "qkv_proj", 64)
    assert b.attention_ns(0, 0, [128]) == attn_row(PRO_DIR / "tp2", 0, 0, 1, 128)
    assert b.attention_ns(0, 0, [128, 512]) == b.attention_ns_from_stats(0, 0, 2, 640, 512, 128)
    assert b.layers == {"embedding", "layernorm", "qkv_proj", "rotary_emb", "o_proj", "gate_up_proj",
                        "act_fn", "down_proj", "final_layernorm", "lm_head", "sampler", "attention"}


# ------------------------------------------------------------------ errors

def test_missing_hardware_lists_existing():
    with pytest.raises(ProfileError) as e:
        ProfileBundle.load(PROFILES, "H100", LLAMA, "bf16", 1)
    msg = str(e.value)
    assert "H100" in msg and "RTX4090" in msg and "RTXPRO6000" in msg and "architectures" not in msg
    assert "\n" not in msg


def test_missing_model_lists_models_for_hardware():
    with pytest.raises(ProfileError) as e:
        ProfileBundle.load(PROFILES, "RTX4090", "Qwen/Qwen3-32B", "bf16", 1)
    assert "Qwen/Qwen3-32B" in str(e.value) and "available: meta-llama/Llama-3.1-8B)" in str(e.value)


def test_missing_variant_and_tp_list_existing():
    with pytest.raises(ProfileError, match=r"'fp8'.*available: bf16"):
        ProfileBundle.load(PROFILES, "RTXPRO6000", LLAMA, "fp8", 1)
    with pytest.raises(ProfileError, match=r"no tp4 profile.*available: tp1, tp2\)"):
        ProfileBundle.load(PROFILES, "RTXPRO6000", LLAMA, "bf16", 4)


def test_architecture_walk_and_missing_architecture():
    arch = load_architecture(PROFILES, "qwen3")
    assert arch.block_layers == ("layernorm", "qkv_proj", "qk_norm", "rotary_emb", "attention",
                                 "o_proj", "layernorm", "gate_up_proj", "act_fn", "down_proj")
    assert arch.category["lm_head"] == "per_sequence" and arch.category["attention"] == "attention"
    assert arch.tp_stable == {"layernorm", "qk_norm", "final_layernorm", "sampler"}
    with pytest.raises(ProfileError, match=r"nope\.yaml.*available: .*llama.*qwen3"):
        load_architecture(PROFILES, "nope")


# ------------------------------------------------------------------ synthetic bundle

@pytest.fixture
def tiny(tmp_path):
    """A bundle whose tp2 copy of a tp_stable layer differs from tp1, with an moe table."""
    (tmp_path / "architectures").mkdir()
    (tmp_path / "architectures" / "llama.yaml").write_text((PROFILES / "architectures" / "llama.yaml").read_text())
    vdir = tmp_path / "HW" / "org" / "m" / "bf16"
    for tp, scale in ((1, 1.0), (2, 3.0)):
        d = vdir / f"tp{tp}"
        d.mkdir(parents=True)
        (d / "dense.csv").write_text("layer,tokens,time_us\n"
                                     f"layernorm,4,{2 * scale}\nlayernorm,8,{4 * scale}\n"
                                     f"qkv_proj,4,{10 * scale}\nqkv_proj,8,{20 * scale}\n")
        (d / "per_sequence.csv").write_text("layer,sequences,time_us\nsampler,1,5\nsampler,2,6\n")
        (d / "attention.csv").write_text("prefill_chunk,kv_prefill,n_decode,kv_decode,time_us\n0,0,1,16,7\n")
    (vdir / "tp1" / "moe.csv").write_text("tokens,activated_experts,time_us\n"
                                          "1,1,10\n16,1,40\n1,2,20\n16,2,80\n")
    (vdir / "meta.yaml").write_text("architecture: llama\nskew_fit:\n  enabled: false\n")
    return tmp_path


def test_tp_stable_layers_come_from_tp1(tiny):
    b = ProfileBundle.load(tiny, "HW", "org/m", "bf16", 2)
    assert b.dense_ns("layernorm", 8) == 4000       # tp1 row, not tp2's 12000
    assert b.dense_ns("qkv_proj", 8) == 60000       # not tp_stable: tp2 row
    assert b.dense_ns("qkv_proj", 1) == 30000       # below first key (4): clamp
    assert b.dense_ns("qkv_proj", 6) == 45000       # 30000 + 2/4 * 30000


def test_moe_two_axis_linear(tiny):
    b = ProfileBundle.load(tiny, "HW", "org/m", "bf16", 2)
    # tokens 6: experts=1 -> 10000 + 5/15*30000 = 20000; experts=2 -> 20000 + 5/15*60000 = 40000
    assert b.moe_ns(6, 1) == 20000
    assert b.moe_ns(6, 2) == 40000
    assert b.moe_ns(6, 3) == 60000                  # extrapolated on experts


def test_missing_meta(tiny):
    (tiny / "HW" / "org" / "m" / "bf16" / "meta.yaml").unlink()
    with pytest.raises(ProfileError, match="meta.yaml missing"):
        ProfileBundle.load(tiny, "HW", "org/m", "bf16", 1)


@pytest.mark.parametrize("bundle", ["pro1", "rtx4090"])
def test_decode_only_fast_path_equals_the_general_rule(bundle, request):
    # Decode-only batches take a flattened path (one per lane step); it must give the general
    # 4-D rule and skew blend's answer for every shape, on and off the grid, skewed or uniform.
    import random

    b = request.getfixturevalue(bundle)
    rng = random.Random(5)
    for _ in range(4000):
        nd = rng.randrange(1, 300)
        lo = rng.randrange(0, 9000)
        hi = lo if nd == 1 or rng.random() < 0.2 else lo + rng.randrange(1, 9000)
        total = lo if nd == 1 else nd * lo + rng.randrange(0, (hi - lo) * (nd - 1) + 1)
        total = max(total, lo + (hi - lo)) if nd > 1 else total
        fast = b.attention_ns_from_stats(0, 0, nd, total, hi, lo)
        assert fast == b._attention.general(0, 0, nd, total, hi, lo), (nd, total, hi, lo)
