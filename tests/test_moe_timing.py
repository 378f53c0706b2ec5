"""Timing an expert block: the measured moe.csv per EP rank, and the roofline's FLOPs and bytes."""
import pytest

from llmsim.config.model import ModelSpec, load_model_spec
from llmsim.config.moe import MoeSpec
from llmsim.perf.architecture import load_architecture
from llmsim.perf.hardware import load_hardware
from llmsim.perf.moe import profile_tokens, slowest_rank_ns
from llmsim.perf.profile import ProfileBundle
from llmsim.perf.roofline import RooflineTimer, moe_expert_ops, moe_router_ops
from llmsim.perf.routing import RankLoad, balanced_loads
from llmsim.perf.timer import ProfileTimer
from conftest import ROOT

PROFILES = ROOT / "profiles"
QWEN_MOE = "Qwen/Qwen3-30B-A3B-Instruct-2507"
TINY = ModelSpec(name="tiny", model_type="qwen3_moe", hidden_size=8, num_layers=2, num_heads=2, num_kv_heads=1,
                 head_dim=4, intermediate_size=16, vocab_size=32, max_position_embeddings=64,
                 torch_dtype="bfloat16", tie_word_embeddings=False,
                 moe=MoeSpec(num_experts=4, top_k=2, expert_intermediate_size=6, moe_layers=(0, 1)))


@pytest.fixture(scope="module")
def qwen_timer():
    bundle = ProfileBundle.load(PROFILES, "RTXPRO6000", QWEN_MOE, "bf16", 1)
    return ProfileTimer(bundle, bundle.architecture, top_k=8)


def test_measured_expert_block(qwen_timer):
    assert qwen_timer.moe_layers == ["moe"] and "moe" not in qwen_timer.base_durations(16, 4)
    # a grid point: 2048 rows = 256 tokens x 8 over 64 experts -> moe.csv (256, 64) = 472.085 us
    assert qwen_timer.moe_ns(512, [RankLoad(256, 2048, 64)]) == 472_085
    # 800 rows = 100 token-equivalents, between tokens 64 (432.672 us) and 128 (456.737 us) at 64 experts:
    # 432672 + 36/64 * 24065 = 446208.6 -> 446208 ns
    assert qwen_timer.moe_ns(300, [RankLoad(300, 800, 64)]) == 446_208
    # the slowest rank sets the layer; a rank without rows costs nothing
    assert qwen_timer.moe_ns(1, [RankLoad(1, 8, 8), RankLoad(0, 0, 0)]) == 50_230  # (1, 8) = 50.2297 us
    assert qwen_timer.moe_ns(0, [RankLoad(0, 0, 0)] * 2) == 0


def test_reference_token_key(qwen_timer):
    bundle = qwen_timer.bundle
    ref = ProfileTimer(bundle, bundle.architecture, top_k=8, moe_token_key="tokens")
    load = RankLoad(300, 800, 64)
    assert profile_tokens(load, 8, "tokens") == 300 and profile_tokens(load, 8) == 100
    # tokens 300 between 256 (472.085 us) and 512 (499.914 us): 472085 + 44/256 * 27829 = 476868.0
    assert ref.moe_ns(300, [load]) == 476_868
    with pytest.raises(ValueError):
        ProfileTimer(bundle, bundle.architecture, top_k=8, moe_token_key="rows")
    with pytest.raises(ValueError, match="top_k"):
        ProfileTimer(bundle, bundle.architecture).moe_ns(1, [load])


def test_dense_bundles_have_no_expert_layers():
    bundle = ProfileBundle.load(PROFILES, "RTXPRO6000", "meta-llama/Llama-3.1-8B", "bf16", 1)
    assert ProfileTimer(bundle, bundle.architecture).moe_layers == []


def test_slowest_rank():
    assert slowest_rank_ns(lambda l: l.experts * 10, balanced_loads(3, 8, 2, 4)) == 20


def test_expert_flops_and_bytes_by_hand():
    # 3 tokens, 4 (token, expert) rows over 2 experts of width 6, hidden 8, bf16
    ops = moe_expert_ops(TINY, tokens=3, pairs=4, experts=2, inter=6, fp=2)
    assert ops == [
        ("gemm", 2 * 4 * 8 * 12, 2 * (2 * 8 * 12 + 4 * 8 + 4 * 12)),  # w13: 768 FLOPs; 2 experts' weights, rows in/out
        ("elementwise", 5 * 4 * 6, 2 * 3 * 4 * 6),  # SiLU(gate) * up: 120, 144
        ("gemm", 2 * 4 * 6 * 8, 2 * (2 * 6 * 8 + 4 * 6 + 4 * 8)),  # w2: 384, 304
        ("elementwise", 2 * 4 * 8, 2 * (4 * 8 + 3 * 8)),  # top-k weighted sum to 3 rows: 64, 112
    ]
    assert sum(o[1] for o in ops) == 4 * (6 * 8 * 6 + 5 * 6 + 2 * 8)  # rows x (6 h I + 5 I + 2 h) = 1336
    # weights read scale with the activated experts, not the rows
    more = moe_expert_ops(TINY, tokens=3, pairs=4, experts=4, inter=6, fp=2)
    assert sum(o[2] for o in more) - sum(o[2] for o in ops) == 2 * 2 * 3 * 8 * 6


def test_router_flops_and_bytes_by_hand():
    assert moe_router_ops(TINY, 3, 1, 2) == [
        ("gemm", 2 * 3 * 8 * 4, 2 * (8 * 4 + 3 * 8 + 3 * 4)),  # gate GEMM hidden -> 4 experts: 192, 136
        ("elementwise", 5 * 3 * 4, 2 * 3 * 4 + 8 * 3 * 2),  # top-2 softmax: logits in, fp32 weight + int32 id out
    ]
    shared = ModelSpec(**{**TINY.__dict__, "moe": MoeSpec(4, 2, 6, (0, 1), shared_intermediate_size=10,
                                                          shared_expert_gate=True)})
    ops = moe_router_ops(shared, 3, 2, 2)  # tp2: the shared expert's width 10 -> 5
    assert ops[2:] == [("gemm", 2 * 3 * 8 * 10, 2 * (8 * 10 + 3 * 8 + 3 * 10)),
                       ("elementwise", 5 * 3 * 5, 2 * 3 * 3 * 5),
                       ("gemm", 2 * 3 * 5 * 8, 2 * (5 * 8 + 3 * 5 + 3 * 8)),
                       ("gemm", 2 * 3 * 8 * 1, 2 * (8 + 3 * 8 + 3))]


def test_roofline_times_experts_on_unprofiled_hardware():
    m = load_model_spec(ROOT / "configs" / "model", QWEN_MOE)
    arch = load_architecture(PROFILES, "qwen3_moe")
    hw = load_hardware("H100", ROOT / "configs" / "hardware")
    t = RooflineTimer(m, arch, hw, 2, 1, ep=2)
    assert t.moe_layers == ["moe"] and "moe" not in t.skipped and t.expert_inter == 768
    one, many = (t.moe_ns(n, balanced_loads(n, 128, 8, 2)) for n in (1, 16))
    # decode-sized batches are weight-bound: 64 experts' weights (64 x 9.4 MB) dominate 16 tokens
    w64 = 64 * 3 * 2048 * 768 * 2 / hw.mem_bw * 1e9
    assert one < many and w64 < many < 3 * w64
    assert RooflineTimer(m, arch, hw, 2, 2).expert_inter == 384  # no EP: each rank a slice of every expert
    assert t.moe_ns(0, [RankLoad(0, 0, 0)] * 2) == 0


def test_roofline_against_the_measured_expert_block():
    """Not fitted to it: the dense GEMM/element-wise factors, checked on moe.csv (one GPU, all experts)."""
    import csv
    import statistics
    m = load_model_spec(ROOT / "configs" / "model", QWEN_MOE)
    hw = load_hardware("RTXPRO6000", ROOT / "configs" / "hardware")
    t = RooflineTimer(m, load_architecture(PROFILES, "qwen3_moe"), hw, 2, 1)
    path = PROFILES / "RTXPRO6000" / QWEN_MOE / "bf16" / "tp1" / "moe.csv"
    errs = [abs(t.moe_ns(n, [RankLoad(n, 8 * n, a)]) / (float(r["time_us"]) * 1e3) - 1)
            for r in csv.DictReader(open(path)) for n, a in [(int(r["tokens"]), int(r["activated_experts"]))]]
    assert len(errs) == 50 and statistics.median(errs) < 0.10  # 6.5 % (docs/moe.md)


def test_reference_compatible_lookup(qwen_timer):
    from llmsim.perf.routing import reference_loads
    bundle = qwen_timer.bundle
    ref = ProfileTimer(bundle, bundle.architecture, top_k=8, moe_token_key="tokens")
    # 100 tokens on EP 2: every rank is looked up at (100 tokens, 64 experts) = 446208 ns (as above)
    assert ref.moe_ns(100, reference_loads(100, 128, 8, 2)) == 446_208
    # a rank whose lookup tokens round to 0 emits nothing (Mixtral-like k=2 on 8 ranks, one token)
    assert ref.moe_ns(1, reference_loads(1, 8, 2, 8)) == 0
