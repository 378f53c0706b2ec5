"""Per-stage memory against hand calculations for Llama-3.1-8B (bf16)."""
import pytest

from llmsim.config.model import load_model_spec
from llmsim.errors import InputError
from llmsim.stage_split import stage_layer_counts
from llmsim.memory import plan_memory, stage_memory
from conftest import ROOT, run_cli

GIB = 1 << 30
M8B = load_model_spec(ROOT / "configs" / "model", "meta-llama/Llama-3.1-8B")
EMB = 128256 * 4096 * 2  # vocab x hidden x bf16, also the lm_head
BLOCK = (2 * 4096 + 4096 * (4096 + 2 * 1024) + 4096 * 4096 + 4096 * 2 * 14336 + 14336 * 4096) * 2


def test_stage_split_follows_vllm_get_pp_indices():
    assert stage_layer_counts(32, 2) == [16, 16]
    assert stage_layer_counts(32, 3) == [11, 11, 10]  # remainder to the stages before the last
    # vLLM: partitions[-i] += 1 for i in 2 .. remainder + 1 -> 33 layers on 4 stages: 8, 8, 9, 8
    assert stage_layer_counts(33, 4) == [8, 8, 9, 8]


def test_stage_split_remainders():
    # 80 layers on 6 stages: 13 each, remainder 2 to stages 4 and 3 (just before the last)
    assert stage_layer_counts(80, 6) == [13, 13, 13, 14, 14, 13]
    assert stage_layer_counts(5, 5) == [1] * 5
    with pytest.raises(ValueError):
        stage_layer_counts(4, 5)


def test_single_device_weights_match_parameter_count():
    (s,) = stage_memory(M8B, tp=1, pp=1, fp=2, kv_fp=2)
    assert s.weight_bytes == 16_060_522_496 == 2 * 8_030_261_248  # 8.03 B parameters in bf16
    assert s.kv_bytes_per_token == 2 * 8 * 128 * 32 * 2  # K and V, 8 KV heads x 128, 32 layers, bf16


def test_pp2_stages_hold_their_own_layers():
    s0, s1 = stage_memory(M8B, tp=1, pp=2, fp=2, kv_fp=2)
    assert s0.weight_bytes == EMB + 16 * BLOCK
    assert s1.weight_bytes == 16 * BLOCK + 4096 * 2 + EMB
    assert s0.kv_bytes_per_token == s1.kv_bytes_per_token == 65_536


def test_block_count_single_gpu():
    plan = plan_memory(M8B, 1, 1, 2, 2, 96 * GIB, 0.9, 16, "x")
    # (0.9 x 96 GiB - weights) // (131072 B/token x 16 tokens), as in the reference's worked value
    assert plan.num_blocks == (int(96 * GIB * 0.9) - 16_060_522_496) // (131_072 * 16) == 36_578


def test_seventy_b_fits_with_pp2_but_not_alone():
    m70 = load_model_spec(ROOT / "configs" / "model", "meta-llama/Llama-3.1-70B")
    with pytest.raises(InputError, match="does not fit"):
        plan_memory(m70, 1, 1, 2, 2, 96 * GIB, 0.9, 16, "x")
    plan = plan_memory(m70, 1, 2, 2, 2, 96 * GIB, 0.9, 16, "x")
    assert plan.num_blocks > 0


def _peak_npu_mem(cfg):
    res = run_cli("--cluster-config", cfg, "--dataset", "workloads/sharegpt-llama-3.1-8b-300-sps10.jsonl",
                  "--num-reqs", 60, "--log-interval", 0.5)
    assert res.exit_code == 0, res.output
    vals = [float(l.split("npu_mem=")[1].split()[0]) for l in res.output.splitlines() if "npu_mem=" in l]
    return max(vals)


def test_pp2_roughly_halves_device_memory():
    one = _peak_npu_mem("configs/cluster/single_node_single_instance.json")
    two = _peak_npu_mem("configs/cluster/single_node_pp_instance.json")
    assert 0.4 <= two / one <= 0.65, (one, two)
