"""Expert weights per device, against hand calculations on a tiny MoE and Qwen3-30B-A3B."""
from dataclasses import replace

from llmsim.config.model import ModelSpec, load_model_spec
from llmsim.config.moe import MoeSpec
from llmsim.memory import (block_weight_bytes, layer_weight_bytes, local_experts, moe_mlp_weight_bytes,
                           plan_memory, stage_memory)
from conftest import ROOT

# hidden 8, 2 query heads, 1 KV head of 4, dense MLP 16, vocab 32; 4 experts of width 6, top 2,
# experts in layers 1 and 3 (0 and 2 keep the dense MLP)
TINY = ModelSpec(name="tiny", model_type="qwen3_moe", hidden_size=8, num_layers=4, num_heads=2, num_kv_heads=1,
                 head_dim=4, intermediate_size=16, vocab_size=32, max_position_embeddings=64,
                 torch_dtype="bfloat16", tie_word_embeddings=False,
                 moe=MoeSpec(num_experts=4, top_k=2, expert_intermediate_size=6, moe_layers=(1, 3)))
ATTN = 2 * 8 * 2 + 8 * (8 + 2 * 4) * 2 + 8 * 8 * 2  # norms 32 + qkv 256 + o 128 = 416 (bf16)
DENSE = ATTN + 8 * 2 * 16 * 2 + 16 * 8 * 2  # + gate_up 512 + down 256 = 1184
GATE = 8 * 4 * 2  # router hidden -> 4 experts, replicated: 64
EXPERT = 3 * 8 * 6 * 2  # gate, up, down of one expert: 288


def test_expert_block_without_expert_parallelism():
    assert moe_mlp_weight_bytes(TINY, 1, 2) == GATE + 4 * EXPERT == 1216
    assert layer_weight_bytes(TINY, 1, 1, 2) == ATTN + 1216 == 1632
    assert layer_weight_bytes(TINY, 0, 1, 2) == block_weight_bytes(TINY, 1, 2) == DENSE


def test_expert_parallel_ranks_hold_whole_experts():
    assert moe_mlp_weight_bytes(TINY, 1, 2, ep=2) == GATE + 2 * EXPERT == 640
    assert moe_mlp_weight_bytes(TINY, 1, 2, ep=4) == GATE + EXPERT
    # 4 experts on 3 ranks: vLLM gives the first rank 2 and the others 1; memory plans for the fullest
    assert local_experts(4, 3) == 2 and moe_mlp_weight_bytes(TINY, 1, 2, ep=3) == GATE + 2 * EXPERT


def test_without_ep_experts_are_sliced_along_the_intermediate_dim():
    # tp2: every expert's width 6 -> 3 per rank: 8*2*3*2 + 3*8*2 = 144 each; the gate stays whole
    assert moe_mlp_weight_bytes(TINY, 2, 2) == GATE + 4 * 144 == 640
    # vLLM flattens TP across DP for the experts (tp2 x dp2 -> slices of 6 // 4 = 1)
    assert moe_mlp_weight_bytes(TINY, 2, 2, expert_tp=4) == GATE + 4 * (8 * 2 * 1 * 2 + 1 * 8 * 2) == 256


def test_shared_expert_is_tp_sharded_and_its_gate_replicated():
    m = replace(TINY, moe=replace(TINY.moe, shared_intermediate_size=10, shared_expert_gate=True))
    shared = 8 * 2 * 10 * 2 + 10 * 8 * 2  # 480
    assert moe_mlp_weight_bytes(m, 1, 2, ep=2) == GATE + 2 * EXPERT + shared + 8 * 2
    assert moe_mlp_weight_bytes(m, 2, 2, ep=2) == GATE + 2 * EXPERT + (8 * 2 * 5 * 2 + 5 * 8 * 2) + 8 * 2


def test_stages_sum_their_own_layers():
    s0, s1 = stage_memory(TINY, 1, 2, 2, 2)
    vocab = 32 * 8 * 2
    assert s0.weight_bytes == DENSE + (ATTN + 1216) + vocab  # layers 0 (dense), 1 (MoE), embedding
    assert s1.weight_bytes == DENSE + (ATTN + 1216) + 8 * 2 + vocab  # layers 2, 3, final norm, lm_head
    (one,) = stage_memory(TINY, 1, 1, 2, 2, ep=2)
    assert one.weight_bytes == 2 * DENSE + 2 * (ATTN + 640) + 2 * vocab + 16
    assert one.kv_bytes_per_token == 2 * 1 * 4 * 4 * 2  # KV is per attention layer, experts or not


def test_qwen3_30b_a3b_parameter_count():
    m = load_model_spec(ROOT / "configs" / "model", "Qwen/Qwen3-30B-A3B-Instruct-2507")
    per_layer = (2 * 2048 + 2048 * (4096 + 2 * 512) + 4096 * 2048  # norms, qkv, o
                 + 2048 * 128 + 128 * 3 * 2048 * 768)  # router, 128 experts of 768
    total = 48 * per_layer + 2 * 151936 * 2048 + 2048  # + embedding, lm_head, final norm
    assert total == 30_532_110_336  # the model card's 30.5 B
    assert stage_memory(m, 1, 1, 2, 2)[0].weight_bytes == 2 * total
    ep2 = stage_memory(m, 1, 1, 2, 2, ep=2)[0].weight_bytes
    assert ep2 == 2 * (total - 48 * 64 * 3 * 2048 * 768)  # half the experts on each of 2 ranks
    plan = plan_memory(m, 1, 1, 2, 2, 96 << 30, 0.9, 16, "x", ep=2)
    assert plan.num_blocks == (int((96 << 30) * 0.9) - ep2) // (2 * 4 * 128 * 48 * 2 * 16)


def test_qwen3_235b_a22b_parameter_count():
    # the example model of docs/moe.md (8 x H100): the same shape at hidden 4096, 64 heads, 94 layers,
    # experts of 1,536
    m = load_model_spec(ROOT / "configs" / "model", "Qwen/Qwen3-235B-A22B-Instruct-2507")
    per_layer = (2 * 4096 + 4096 * (8192 + 2 * 512) + 8192 * 4096  # norms, qkv, o
                 + 4096 * 128 + 128 * 3 * 4096 * 1536)  # router, 128 experts of 1,536
    total = 94 * per_layer + 2 * 151936 * 4096 + 4096  # + embedding, lm_head, final norm
    assert total == 235_093_610_496  # the model card's 235 B
    assert stage_memory(m, 1, 1, 2, 2)[0].weight_bytes == 2 * total
    active = 94 * (per_layer - 120 * 3 * 4096 * 1536) + 2 * 151936 * 4096 + 4096  # 8 of 128 experts per token
    assert round(active / 1e9) == 22  # "A22B"


def test_dense_models_ignore_the_expert_split():
    m = load_model_spec(ROOT / "configs" / "model", "meta-llama/Llama-3.1-8B")
    assert stage_memory(m, 2, 2, 2, 2, ep=4, expert_tp=8) == stage_memory(m, 2, 2, 2, 2)
