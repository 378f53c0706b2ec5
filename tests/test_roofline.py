"""Roofline timing: hand-computed FLOP/byte counts, hardware-file errors, fit sanity checks."""
import json
from pathlib import Path

import pytest

from llmsim.batch import Batch, Entry
from llmsim.config.model import ModelSpec, load_model_spec
from llmsim.errors import InputError
from llmsim.perf.architecture import load_architecture
from llmsim.perf.hardware import load_hardware
from llmsim.perf.roofline import Q_TILE, AttnShape, RooflineTimer, attention_exec, op_cost

ROOT = Path(__file__).resolve().parents[1]
HW = ROOT / "configs" / "hardware"

# hidden 8, 2 query heads, 1 KV head, head_dim 4, intermediate 16, vocab 32
TINY = ModelSpec(name="tiny", model_type="llama", hidden_size=8, num_layers=2, num_heads=2, num_kv_heads=1,
                 head_dim=4, intermediate_size=16, vocab_size=32, max_position_embeddings=64,
                 torch_dtype="bfloat16", tie_word_embeddings=False)


def batch(prefills=(), decodes=()):
    """prefills: (chunk, history); decodes: history before the step."""
    entries = [Entry(None, c, k, 0) for c, k in prefills] + [Entry(None, 1, h, 0) for h in decodes]
    return Batch.build(0, 0, 0, entries)


@pytest.mark.parametrize("layer, flops, nbytes", [
    # 2 * tokens * in * out; bytes = 2 * (weights + input + output), bf16
    ("qkv_proj", 2 * 3 * 8 * 16, 2 * (8 * 16 + 3 * 8 + 3 * 16)),  # out = q 8 + k 4 + v 4
    ("o_proj", 2 * 3 * 8 * 8, 2 * (8 * 8 + 3 * 8 + 3 * 8)),
    ("gate_up_proj", 2 * 3 * 8 * 32, 2 * (8 * 32 + 3 * 8 + 3 * 32)),
    ("down_proj", 2 * 3 * 16 * 8, 2 * (16 * 8 + 3 * 16 + 3 * 8)),
    ("layernorm", 4 * 3 * 8, 2 * (4 * 3 * 8 + 8)),  # fused add+norm: x, residual in and out; weight
    ("act_fn", 5 * 3 * 16, 2 * 3 * 3 * 16),  # reads gate and up, writes one
    ("embedding", 0, 2 * 2 * 3 * 8 + 4 * 3),
])
def test_dense_op_counts_tp1(layer, flops, nbytes):
    assert op_cost(TINY, layer, 3, 2, None, tp=1, fp=2) == (flops, nbytes)


def test_gemm_counts_are_per_tp_rank():
    # tp=2: 1 query head and the single KV head (replicated) per rank -> out = 4 + 4 + 4
    assert op_cost(TINY, "qkv_proj", 3, 0, None, tp=2, fp=2)[0] == 2 * 3 * 8 * 12
    assert op_cost(TINY, "o_proj", 3, 0, None, tp=2, fp=2)[0] == 2 * 3 * 4 * 8
    assert op_cost(TINY, "gate_up_proj", 3, 0, None, tp=2, fp=2)[0] == 2 * 3 * 8 * 16
    assert op_cost(TINY, "down_proj", 3, 0, None, tp=2, fp=2)[0] == 2 * 3 * 8 * 8


def test_lm_head_sees_one_token_per_request():
    # 2 requests, whatever the step's token count; fp32 logits written
    fl, by = op_cost(TINY, "lm_head", 50, 2, None, tp=1, fp=2)
    assert (fl, by) == (2 * 2 * 8 * 32, 2 * (8 * 32 + 2 * 8 + 2 * 32) + 4 * 2 * 32)


def test_attention_prefill_chunk():
    # chunk 3 after 2 cached tokens: queries see 3, 4, 5 keys -> 12; FLOPs 4 * heads * head_dim * 12
    a = AttnShape.of([(3, 2)], [])
    assert (a.prefill_ctx, a.prefill_kv, a.max_ctx) == (12, 5, 5)
    kv_io = 2 * 1 * 4 * 2 * (5 + 3)  # K and V: 5 cached tokens read, 3 new written
    qo_io = 2 * 2 * 4 * 2 * 3  # Q read, O written
    assert op_cost(TINY, "attention", 3, 1, a, tp=1, fp=2) == (4 * 2 * 4 * 12, kv_io + qo_io)
    # executed: the 3 queries pay for a whole tile over the 5 keys
    assert attention_exec(TINY, a, 1, 2, 2)[0] == 4 * 2 * 4 * Q_TILE * 5


def test_attention_decode():
    # one decode after 5 tokens: 1 query over 6 keys; reads 6 K/V rows... plus writes its own
    a = AttnShape.of([], [5])
    assert (a.decode_ctx, a.n_decode, a.max_ctx) == (6, 1, 6)
    kv_io, qo_io = 2 * 1 * 4 * 2 * (6 + 1), 2 * 2 * 4 * 2 * 1
    assert op_cost(TINY, "attention", 1, 1, a, tp=1, fp=2) == (4 * 2 * 4 * 6, kv_io + qo_io)
    assert attention_exec(TINY, a, 1, 2, 2) == (4 * 2 * 4 * 6, kv_io + qo_io)  # no tile padding


def test_mixed_batch_attention_sums_requests():
    a = AttnShape.of([(3, 2), (2, 0)], [5, 1])
    assert a.prefill_ctx == 12 + 3 and a.decode_ctx == 6 + 2 and a.query_tokens == 7


def _write(tmp_path, **change):
    doc = json.loads((HW / "H100.json").read_text())
    for k, v in change.items():
        if v is None:
            del doc[k]
        else:
            doc[k] = v
    p = tmp_path / "H100.json"
    p.write_text(json.dumps(doc))
    return p


@pytest.mark.parametrize("change, message", [
    (dict(mem_bw_gbps=None), "H100.json: mem_bw_gbps: required field is missing"),
    (dict(mem_bw_gbps=-1), "H100.json: mem_bw_gbps: expected a positive number, got -1"),
    (dict(link_latency_ns=-5), "H100.json: link_latency_ns: expected a non-negative number, got -5"),
    (dict(peak_tflops={"bf16": 0}), "H100.json: peak_tflops.bf16: expected a positive number, got 0"),
    (dict(mem_size_gb="80"), "H100.json: mem_size_gb: expected a number, got '80'"),
])
def test_hardware_errors_are_one_line(tmp_path, change, message):
    with pytest.raises(InputError) as e:
        load_hardware(_write(tmp_path, **change))
    assert str(e.value).endswith(message) and "\n" not in str(e.value)


def test_every_shipped_hardware_file_loads():
    names = {"H100", "H200", "A100-80GB", "B200", "RTXPRO6000", "RTX4090", "MI300X"}
    for n in names:
        hw = load_hardware(n, HW)
        assert hw.key == n and hw.peak_flops("bfloat16") > 1e14 and hw.source
    with pytest.raises(InputError, match="no hardware file for 'TPU'"):
        load_hardware("TPU", HW)


def _timer(hw, model, tp):
    m = load_model_spec(ROOT / "configs" / "model", model)
    return RooflineTimer(m, load_architecture(ROOT / "profiles", m.model_type), load_hardware(hw, HW), 2, tp)


# (layer, batch, measured us) from profiles/RTXPRO6000/meta-llama/Llama-3.1-8B/bf16/tp1 and
# profiles/RTX4090/meta-llama/Llama-3.1-8B/bf16/tp1; within 20 % with each hardware's own fit.
@pytest.mark.parametrize("hw, layer, b, measured_us", [
    ("RTXPRO6000", "gate_up_proj", batch([(2048, 0)]), 1152.8),  # dense.csv tokens=2048
    ("RTXPRO6000", "gate_up_proj", batch(decodes=[100]), 159.5),  # tokens=1
    ("RTXPRO6000", "lm_head", batch(decodes=[100] * 64), 715.575),  # per_sequence.csv sequences=64
    ("RTXPRO6000", "attention", batch(decodes=[1024] * 256), 754.755),  # attention.csv 0,0,256,1024
    ("RTX4090", "qkv_proj", batch([(2048, 0)]), 631.1),
    ("RTX4090", "attention", batch(decodes=[1024] * 16), 99.2593),  # attention.csv 0,0,16,1024
])
def test_fit_tracks_measured_points(hw, layer, b, measured_us):
    got = _timer(hw, "meta-llama/Llama-3.1-8B", 1).durations(b)[layer] / 1e3
    assert got == pytest.approx(measured_us, rel=0.2)


def test_llama70b_on_h100_tp2():
    t = _timer("H100", "meta-llama/Llama-3.1-70B", 2)
    assert t.source == "roofline" and not t.skipped
    d = t.durations(batch([(512, 0)], [1000] * 8))
    assert set(d) == {"embedding", "layernorm", "qkv_proj", "rotary_emb", "attention", "o_proj",
                      "gate_up_proj", "act_fn", "down_proj", "final_layernorm", "lm_head", "sampler"}
    # a decode step of 8 requests is weight-bound: per rank gate_up reads 8192 x 2 x 28672/2 bf16
    w = 8192 * 28672 * 2
    dec = t.durations(batch(decodes=[1000] * 8))["gate_up_proj"]
    assert w / 3350e9 * 1e9 < dec < 1.3 * w / 3350e9 * 1e9
    assert t.durations(batch(decodes=[1000] * 8)) == t.durations(batch(decodes=[1000] * 8))


def test_seventy_b_on_eight_h100_as_tp2_pp4_runs_on_the_roofline(tmp_path):
    import json

    from conftest import read_rows, run_cli

    out = tmp_path / "o.csv"
    res = run_cli("--cluster-config", "configs/cluster/h100_llama70b_tp2_pp4.json",
                  "--dataset", "workloads/example_trace.jsonl", "--output", out, "--quiet")
    assert res.exit_code == 0, res.output
    assert "timing from the roofline model" in res.output
    assert len(read_rows(out)) == 10
    with open(f"{out}.meta.json") as f:
        meta = json.load(f)
    (inst,) = meta["instances"]
    assert inst["timing_source"] == "roofline" and inst["layers_per_stage"] == [20, 20, 20, 20]
