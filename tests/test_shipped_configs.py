"""Every cluster config shipped in configs/cluster/ loads: its model, hardware, memory plan (a user
starts from these)."""
import pytest

from llmsim import simulate
from llmsim.config.engine import EngineArgs
from conftest import ROOT

CONFIGS = sorted((ROOT / "configs" / "cluster").glob("*.json"))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_shipped_cluster_config_prepares(path):
    sim = simulate.prepare(str(path), EngineArgs(), [])
    assert sim.instances and all(i.memory.num_blocks > 0 for i in sim.instances)


def test_qwen3_235b_example_layouts_serve_every_request():
    # docs/moe.md's 8 x H100 example, 12 requests: the lockstep DP layouts and the TP ones all finish them
    for name in ("tp8", "tp8_ep8", "dp2_tp4_ep8", "dp8_ep8"):
        sim = simulate.prepare(str(ROOT / "configs" / "cluster" / f"h100x8_qwen3_235b_{name}.json"), EngineArgs(),
                               str(ROOT / "workloads" / "sharegpt-qwen3-32b-300-sps10.jsonl"), 12)
        res = simulate.run(sim)
        assert sum(map(len, res.finished)) == 12 and not res.unfinished, name
        assert (res.dp is not None) == name.startswith("dp")
