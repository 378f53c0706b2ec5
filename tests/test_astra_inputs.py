"""ASTRA-Sim inputs are byte-identical to the ones LLMServingSim wrote for the same configs."""
import json

import pytest

from astra_bridge.inputs import memory_json, network_yml, system_json, topology_dims
from llmsim.config.cluster import load_cluster_config
from conftest import REF, ROOT

CAPTURED = ROOT / "tests" / "data" / "astra-inputs"


@pytest.mark.parametrize("name", ["single_node_single_instance", "single_node_pp2_instance",
                                  "single_node_pp_instance", "single_node_tp_pp_instance"])
def test_inputs_match_captured_files(name):
    cluster = load_cluster_config(REF / "configs" / f"{name}.json")
    got = CAPTURED / name
    assert network_yml(cluster) == (got / "network" / "network.yml").read_text()
    assert system_json(cluster) == (got / "system" / "system.json").read_text()
    assert memory_json(cluster, "llmservingsim") == (got / "memory" / "memory_expansion.json").read_text()


def test_topology_dims_follow_the_reference_rules():
    dims = {n: topology_dims(load_cluster_config(REF / "configs" / f"{n}.json"))
            for n in ("single_node_single_instance", "rtx4090_tp2_instance", "single_node_pp_instance",
                      "single_node_tp_pp_instance", "single_node_multi_instance")}
    assert dims == {"single_node_single_instance": [1], "rtx4090_tp2_instance": [2], "single_node_pp_instance": [4],
                    "single_node_tp_pp_instance": [2, 2], "single_node_multi_instance": [1, 2]}


def test_upstream_memory_file_uses_its_key_names():
    cluster = load_cluster_config(REF / "configs" / "single_node_tp_pp_instance.json")
    doc = json.loads(memory_json(cluster, "upstream"))
    assert doc == {"memory-type": "PER_NODE_MEMORY_EXPANSION", "num-nodes": 1, "num-npus-per-node": 4,
                   "remote-mem-latency": 0, "remote-mem-bw": 256}
