"""vLLM's KV capacity: utilisation x device memory - weights - activation peak - non-torch."""
from llmsim.capacity import DEFAULT_NON_TORCH_BYTES, activation_peak_bytes, vllm_capacity
from llmsim.config.model import load_model_spec
from conftest import ROOT

M8B = load_model_spec(ROOT / "configs" / "model", "meta-llama/Llama-3.1-8B")


def test_activation_peak_llama_8b_at_2048_tokens_and_256_seqs():
    # forward: hidden + residual (2 x 2048 x 4096 x 2 B) + gate_up and SiLU outputs (2048 x 3 x 14336 x 2 B)
    forward = 2 * 2048 * 4096 * 2 + 2048 * 3 * 14336 * 2
    # sampler: 256 rows x 128,256 vocab x (2 B logits + 4 B fp32 copy + 4 B probs) + the hidden states
    sampler = 256 * 128256 * 10 + 2048 * 4096 * 2
    assert activation_peak_bytes(M8B, 1, 2, 2048, 256) == max(forward, sampler) == 345_112_576
    assert activation_peak_bytes(M8B, 1, 2, 2048, 256, last_stage=False) == forward


def test_rtx4090_block_count_against_vllm_log():
    # CUDA's total on the RTX 4090 of the recorded run (meta.json) at vLLM's 0.9 utilisation
    cap = vllm_capacity(25_250_627_584, 0.9, 16_060_522_496, activation_peak_bytes(M8B, 1, 2, 2048, 256))
    blocks = cap.kv_bytes // (131_072 * 16)
    assert cap.non_torch_bytes == DEFAULT_NON_TORCH_BYTES == 805_306_368
    assert blocks == 2629
    assert abs(blocks - 2588) / 2588 < 0.02  # vLLM logged 2,588
