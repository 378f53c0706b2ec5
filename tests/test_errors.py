"""Bad input: one line naming file and field/line, exit code 2, no output written."""
import json

import pytest

from conftest import ROOT, read_rows, run_cli

BASE = json.loads((ROOT / "configs/cluster/single_node_pp_instance.json").read_text())


def _cfg(tmp_path, mutate):
    cfg = json.loads(json.dumps(BASE))
    mutate(cfg)
    p = tmp_path / "bad.json"
    p.write_text(json.dumps(cfg))
    return p


def _inst(cfg):
    return cfg["nodes"][0]["instances"][0]


def _fails(tmp_path, *args, expect):
    out = tmp_path / "out.csv"
    res = run_cli(*args, "--output", out, "--quiet")
    assert res.exit_code == 2, res.output
    lines = [l for l in res.output.splitlines() if l.startswith("error:")]
    assert len(lines) == 1, res.output
    for piece in expect:
        assert piece in lines[0], lines[0]
    assert not out.exists()
    assert not list(tmp_path.glob(".*.tmp"))
    return lines[0]


def _cluster_fails(tmp_path, mutate, expect):
    p = _cfg(tmp_path, mutate)
    return _fails(tmp_path, "--cluster-config", p, "--dataset", "workloads/example_trace.jsonl",
                  expect=[str(p)] + expect)


def test_missing_field(tmp_path):
    _cluster_fails(tmp_path, lambda c: _inst(c).pop("hardware"),
                   ["nodes[0].instances[0].hardware", "required field is missing"])


def test_wrong_type(tmp_path):
    _cluster_fails(tmp_path, lambda c: _inst(c).update(tp_size="2"),
                   ["nodes[0].instances[0].tp_size", "expected int", "'2'"])


def test_num_npus_not_tp_times_pp(tmp_path):
    _cluster_fails(tmp_path, lambda c: _inst(c).update(num_npus=3),
                   ["nodes[0].instances[0].num_npus", "3 != tp_size * pp_size = 1 * 2 = 2"])


def test_pp_larger_than_layers(tmp_path):
    _cluster_fails(tmp_path, lambda c: _inst(c).update(num_npus=64, pp_size=64),
                   ["pp_size", "64 exceeds the 32 decoder layers"])


def test_model_too_large(tmp_path):
    def seventy_b_on_one_gpu(c):
        _inst(c).update(model_name="meta-llama/Llama-3.1-70B", num_npus=1, pp_size=1)
    line = _cluster_fails(tmp_path, seventy_b_on_one_gpu, ["does not fit", "86.4 GB is available"])
    # 70.55e9 parameters x 2 bytes = 131.4 GiB of weights; vLLM's profile adds the activation peak
    # (0.35 GiB at 2,048 tokens / 128 sequences) and 0.75 GiB of non-torch memory
    assert "needs 132.6 GB for weights, activations and runtime (1.1 GB)" in line


def test_missing_profile_names_what_exists(tmp_path):
    p = _cfg(tmp_path, lambda c: _inst(c).update(hardware="H100"))
    _fails(tmp_path, "--cluster-config", p, "--dataset", "workloads/example_trace.jsonl", "--timing", "profile",
           expect=[str(p), "no profiles for hardware 'H100'", "RTX4090", "RTXPRO6000"])


def test_unknown_hardware_names_profiles_and_hardware_files(tmp_path):
    _cluster_fails(tmp_path, lambda c: _inst(c).update(hardware="TPUv9"),
                   ["hardware: no measured profile and no hardware file for 'TPUv9'", "RTXPRO6000", "H100"])


def test_missing_config_file(tmp_path):
    _fails(tmp_path, "--cluster-config", tmp_path / "nope.json", expect=["nope.json", "not found"])


def test_bad_jsonl_line(tmp_path):
    ds = tmp_path / "w.jsonl"
    ds.write_text('{"input_toks": 4, "output_toks": 2, "arrival_time_ns": 0}\n'
                  '{"input_toks": 4, "output_toks": "two", "arrival_time_ns": 5}\n')
    _fails(tmp_path, "--cluster-config", "configs/cluster/single_node_pp_instance.json", "--dataset", ds,
           expect=[str(ds), "line 2", "output_toks", "integer"])


def test_token_ids_must_be_integers(tmp_path):
    ds = tmp_path / "w.jsonl"
    for bad in ('[1, 2, true]', '[1, 2.5]', '"1 2 3"'):
        ds.write_text('{"input_toks": 3, "output_toks": 2, "arrival_time_ns": 0, "input_tok_ids": [1, 2, 3]}\n'
                      '{"input_toks": 3, "output_toks": 2, "arrival_time_ns": 5, "input_tok_ids": %s}\n' % bad)
        _fails(tmp_path, "--cluster-config", "configs/cluster/single_node_pp_instance.json", "--dataset", ds,
               expect=[str(ds), "line 2", "input_tok_ids", "list of integers"])


def test_truncated_jsonl_line(tmp_path):
    ds = tmp_path / "w.jsonl"
    ds.write_text('{"input_toks": 4, "output_toks": 2, "arrival_time_ns": 0}\n{"input_toks": 4,\n')
    _fails(tmp_path, "--cluster-config", "configs/cluster/single_node_pp_instance.json", "--dataset", ds,
           expect=[str(ds), "line 2", "invalid JSON"])


def test_missing_dataset_file(tmp_path):
    _fails(tmp_path, "--cluster-config", "configs/cluster/single_node_pp_instance.json",
           "--dataset", tmp_path / "missing.jsonl", expect=["missing.jsonl", "dataset file not found"])


def test_bad_cli_value(tmp_path):
    res = run_cli("--block-size", 0, "--quiet")
    assert res.exit_code == 2
    assert "--block-size" in res.output


def test_unknown_key_is_warned_not_fatal(tmp_path):
    p = _cfg(tmp_path, lambda c: _inst(c).update(tp_sizee=2))
    res = run_cli("--cluster-config", p, "--dataset", "workloads/example_trace.jsonl", "--num-reqs", 2, "--quiet")
    assert res.exit_code == 0
    assert f"[WARNING] {p}: nodes[0].instances[0].tp_sizee: unknown key ignored" in res.output


def test_float16_uses_the_bf16_bundle_and_says_so_once_as_info(tmp_path):
    args = ("--cluster-config", "configs/cluster/single_node_pp_instance.json", "--dtype", "float16",
            "--dataset", "workloads/example_trace.jsonl")
    res = run_cli(*args, "--log-interval", 0)
    assert res.exit_code == 0
    (line,) = [l for l in res.output.splitlines() if "using the bf16 bundle (same element width" in l]
    assert line.startswith("[INFO] instance 0: no fp16 profile") and "[WARNING]" not in res.output
    assert "bf16" not in run_cli(*args, "--quiet").output  # --quiet: no [INFO] lines


def _first_unfinished(tmp_path, big_prompt, *flags):
    """Run a too-large request followed by a small one; the small one must finish, the big one be reported."""
    ds = tmp_path / "w.jsonl"
    ds.write_text(f'{{"input_toks": {big_prompt}, "output_toks": 2, "arrival_time_ns": 0}}\n'
                  '{"input_toks": 8, "output_toks": 3, "arrival_time_ns": 10}\n')
    out = tmp_path / "out.csv"
    res = run_cli("--cluster-config", "configs/cluster/single_node_single_instance.json", "--dataset", ds,
                  "--output", out, "--quiet", *flags)
    assert res.exit_code == 0
    assert [r["request id"] for r in read_rows(out)] == ["1"]
    assert "1 request(s) did not finish" in res.output
    (left,) = read_rows(f"{out}.unfinished.csv")
    assert left["request id"] == "0"
    return left["reason"]


def test_request_that_can_never_run_is_reported_not_lost(tmp_path):
    assert "exceeds the maximum model length 131072" in _first_unfinished(tmp_path, 200000)


def test_unchunkable_prompt_is_reported_and_does_not_block_the_queue(tmp_path):
    assert "token budget is 2048" in _first_unfinished(tmp_path, 3000, "--no-enable-chunked-prefill")


def test_non_numeric_constant_in_config(tmp_path):
    p = tmp_path / "nan.json"
    p.write_text(json.dumps(BASE).replace('"link_bw": 16', '"link_bw": NaN'))
    _fails(tmp_path, "--cluster-config", p, "--dataset", "workloads/example_trace.jsonl",
           expect=[str(p), "NaN is not a number"])


def test_instance_override_out_of_range(tmp_path):
    _cluster_fails(tmp_path, lambda c: _inst(c).update(block_size=0),
                   ["nodes[0].instances[0].block_size", "expected a value >= 1, got 0"])


@pytest.mark.parametrize("args, message", [
    (["--backend", "ns3"], "no backend named 'ns3' is installed (entry-point group llmsim.backends; available: "),
    (["--backend", "astra-sim", "--backend-option", "nokey"], "--backend-option 'nokey': expected KEY=VALUE"),
])
def test_unknown_backend_or_malformed_backend_option(tmp_path, args, message):
    out = tmp_path / "o.csv"
    res = run_cli("--dataset", "workloads/example_trace.jsonl", "--output", out, "--quiet", *args)
    assert res.exit_code == 2
    (line,) = [l for l in res.output.splitlines() if l.startswith("error:")]
    assert message in line and not out.exists()
