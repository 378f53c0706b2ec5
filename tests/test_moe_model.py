"""Mixture-of-experts model configs: the expert layout parsed from HF config.json, MLA refused."""
import json

import pytest

from llmsim.config.model import load_model_spec
from llmsim.errors import InputError
from conftest import ROOT, run_cli

MODELS = ROOT / "configs" / "model"


def _spec(tmp_path, **fields):
    base = {"model_type": "qwen3_moe", "hidden_size": 8, "num_hidden_layers": 6, "num_attention_heads": 2,
            "num_key_value_heads": 1, "head_dim": 4, "intermediate_size": 16, "vocab_size": 32,
            "max_position_embeddings": 64, "num_experts": 4, "num_experts_per_tok": 2,
            "moe_intermediate_size": 6}
    base.update(fields)
    base = {k: v for k, v in base.items() if v is not None}
    (tmp_path / "org").mkdir(exist_ok=True)
    (tmp_path / "org" / "m.json").write_text(json.dumps(base))
    return load_model_spec(tmp_path, "org/m")


def test_qwen3_moe():
    m = load_model_spec(MODELS, "Qwen/Qwen3-30B-A3B-Instruct-2507")
    e = m.moe
    assert (e.num_experts, e.top_k, e.expert_intermediate_size) == (128, 8, 768)
    assert e.moe_layers == tuple(range(48)) and e.num_moe_layers == 48  # decoder_sparse_step 1, no mlp_only_layers
    assert e.shared_intermediate_size == 0 and not e.shared_expert_gate and e.norm_topk_prob
    assert m.intermediate_size == 6144  # the dense MLP width an mlp_only layer would have


def test_mixtral_expert_size_is_intermediate_size():
    e = load_model_spec(MODELS, "mistralai/Mixtral-8x7B-v0.1").moe
    assert (e.num_experts, e.top_k, e.expert_intermediate_size, e.num_moe_layers) == (8, 2, 14336, 32)


def test_dense_models_have_no_expert_spec():
    for name in ("meta-llama/Llama-3.1-8B", "Qwen/Qwen3-32B"):
        assert load_model_spec(MODELS, name).moe is None


def test_sparse_step_and_mlp_only_layers(tmp_path):
    # vLLM qwen3_moe: layer i is MoE iff i not in mlp_only_layers and (i + 1) % decoder_sparse_step == 0
    assert _spec(tmp_path, decoder_sparse_step=2, mlp_only_layers=[3]).moe.moe_layers == (1, 5)
    assert _spec(tmp_path, mlp_only_layers=[0, 5]).moe.moe_layers == (1, 2, 3, 4)
    assert _spec(tmp_path).moe.is_moe_layer(0)


def test_shared_experts(tmp_path):
    e = _spec(tmp_path, model_type="qwen2_moe", num_experts=60, num_experts_per_tok=4,
              shared_expert_intermediate_size=20).moe
    assert e.shared_intermediate_size == 20 and e.shared_expert_gate
    # DeepSeek-MoE (v1): dense first layer, n shared experts of the routed size, no gate
    e = _spec(tmp_path, model_type="deepseek", num_experts=None, n_routed_experts=8, n_shared_experts=2,
              first_k_dense_replace=1, moe_layer_freq=1).moe
    assert e.moe_layers == (1, 2, 3, 4, 5) and e.shared_intermediate_size == 12 and not e.shared_expert_gate


@pytest.mark.parametrize("field, value", [("kv_lora_rank", 512), ("q_lora_rank", 1536)])
def test_latent_attention_refused(tmp_path, field, value):
    with pytest.raises(InputError) as e:
        _spec(tmp_path, model_type="deepseek_v3", **{field: value})
    msg = str(e.value)
    assert "\n" not in msg and f"m.json: {field}:" in msg and "multi-head latent attention" in msg


@pytest.mark.parametrize("fields, key", [
    ({"num_experts_per_tok": 5}, "num_experts_per_tok"),  # more than the 4 experts
    ({"num_experts_per_tok": None}, "num_experts_per_tok"),
    ({"moe_intermediate_size": 0}, "moe_intermediate_size"),
    ({"mlp_only_layers": "3"}, "mlp_only_layers"),
])
def test_bad_expert_fields_name_the_field(tmp_path, fields, key):
    with pytest.raises(InputError, match=f"m.json: {key}:"):
        _spec(tmp_path, **fields)


def test_moe_data_parallel_group_of_one_is_refused(tmp_path):
    # DP groups run (tests/test_dp_groups.py); a group of one instance is refused in one line.
    cfg = json.loads((ROOT / "configs" / "cluster" / "single_node_single_instance.json").read_text())
    cfg["nodes"][0]["instances"][0].update(model_name="Qwen/Qwen3-30B-A3B-Instruct-2507", dp_group="A")
    path = tmp_path / "c.json"
    path.write_text(json.dumps(cfg))
    res = run_cli("--cluster-config", path, "--dataset", "workloads/example_trace.jsonl")
    assert res.exit_code == 2
    assert "dp_group 'A' has one instance; a data-parallel group needs two or more" in res.output


def test_ep_size_other_than_tp_size_is_refused_in_one_line():
    import json

    from llmsim.config.cluster import cluster_from_dict
    from llmsim.errors import InputError

    raw = json.loads(open("configs/cluster/rtxpro6000_qwen3_30b_a3b_instance.json").read())
    raw["nodes"][0]["instances"][0]["ep_size"] = 2  # tp 1 without dp_group
    with pytest.raises(InputError) as e:
        cluster_from_dict(raw, "c.json")
    msg = str(e.value)
    assert msg.startswith("c.json: nodes[0].instances[0].ep_size: ep_size must equal tp_size without data "
                          "parallelism (with dp_group: tp_size x the group's size)") and "\n" not in msg
    raw["nodes"][0]["instances"][0]["ep_size"] = 1
    assert cluster_from_dict(raw, "c.json").instances[0].ep_size == 1
