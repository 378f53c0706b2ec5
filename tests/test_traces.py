"""IterationGraph -> per-NPU Chakra traces: what each NPU's file must hold."""
import pytest

from astra_bridge.chakra.codec import attributes, duration_ns, node_type_name, read_et
from astra_bridge.traces import write_graph
from llmsim.config.engine import EngineArgs
from llmsim.simulate import prepare, run


def _first_graphs(cfg, n=3):
    sim = prepare(cfg, EngineArgs(dtype="bfloat16"), "workloads/example_trace.jsonl", num_reqs=2)
    graphs = []
    run(sim, on_graph=graphs.append)
    return graphs[:n]


def _read(prefix, npu, flavor):
    _, nodes = read_et(f"{prefix}.{npu}.et")
    return [(node_type_name(flavor, n.type), n) for n in nodes]


@pytest.mark.parametrize("flavor", ["llmservingsim", "upstream"])
def test_tp2_pp2_files_per_npu(tmp_path, flavor):
    g = _first_graphs("configs/cluster/single_node_tp_pp_instance.json")[0]
    prefix = write_graph(g, tmp_path / "b0" / "llm", flavor, multi_dim=True)
    act = 10 * 4096 * 2  # 10 prompt tokens x hidden x bf16: the all-reduces' tensor
    part = act // 2  # what each TP rank sends of the hidden states and of the residual
    for npu in range(4):
        nodes = _read(prefix, npu, flavor)
        kinds = [k for k, _ in nodes]
        stage = npu // 2
        # one chain: every node depends on the one before it
        assert all(list(n.data_deps) == [nodes[i - 1][1].id] for i, (_, n) in enumerate(nodes) if i)
        if stage == 0:
            assert kinds[0] == "MEM_LOAD_NODE" and kinds[-2:] == ["COMM_SEND_NODE"] * 2
        else:
            # both receives, then the TP ranks all-gather each tensor, then the layers
            assert kinds[:4] == ["COMM_RECV_NODE"] * 2 + ["COMM_COLL_NODE"] * 2 and kinds[-1] == "MEM_STORE_NODE"
            gathers = [attributes(n) for _, n in nodes[2:4]]
            assert all(c["comm_type"] == 2 and c["comm_size"] == part and c["involved_dim"] == [True, False]
                       for c in gathers)  # comm_type 2: ALL_GATHER; comm_size: one rank's slice
        colls = [attributes(n) for k, n in nodes if k == "COMM_COLL_NODE" and attributes(n)["comm_type"] == 0]
        assert len(colls) == 2 * 16  # o_proj and down_proj of each of the stage's 16 layers
        assert all(c["comm_size"] == act and c["involved_dim"] == [True, False] for c in colls)
        if stage == 0:
            sends = [attributes(n) for _, n in nodes[-2:]]
            assert [(c["comm_src"], c["comm_dst"], c["comm_size"]) for c in sends] == [(npu, npu + 2, part)] * 2
            assert sends[0]["comm_tag"] != sends[1]["comm_tag"]
        else:
            recvs = [attributes(n) for _, n in nodes[:2]]
            assert [(c["comm_src"], c["comm_dst"], c["comm_size"]) for c in recvs] == [(npu - 2, npu, part)] * 2
            peer_sends = [attributes(n)["comm_tag"] for _, n in _read(prefix, npu - 2, flavor)[-2:]]
            assert [c["comm_tag"] for c in recvs] == peer_sends


def test_reference_stage_transfer_is_one_whole_tensor(tmp_path):
    sim = prepare("configs/cluster/single_node_tp_pp_instance.json",
                  EngineArgs(dtype="bfloat16", stage_transfer="reference"), "workloads/example_trace.jsonl", num_reqs=1)
    graphs = []
    run(sim, on_graph=graphs.append)
    g = graphs[0]
    assert [(o.name, o.size_bytes) for o in g.stages[0].tail_ops] == [("send_activation", 10 * 4096 * 2)]
    assert [(o.name, o.size_bytes) for o in g.stages[1].head_ops] == [("recv_activation", 10 * 4096 * 2)]


def test_fork_flavour_keeps_layer_durations_exact(tmp_path):
    g = _first_graphs("configs/cluster/single_node_pp_instance.json")[1]
    prefix = write_graph(g, tmp_path / "b1" / "llm", "llmservingsim", multi_dim=False)
    for stage, prog in enumerate(g.stages):
        comp = [duration_ns("llmservingsim", n) for k, n in _read(prefix, stage, "llmservingsim") if k == "COMP_NODE"]
        want = [op.duration_ns for op in prog.ops() if op.kind == 0]
        assert comp == want  # one node per layer, stage 0 only its 16 layers + embedding, stage 1 the rest


def test_upstream_flavour_fuses_compute_and_rounds_once(tmp_path):
    g = _first_graphs("configs/cluster/single_node_pp_instance.json")[1]
    prefix = write_graph(g, tmp_path / "b1" / "llm", "upstream", multi_dim=False)
    for stage, prog in enumerate(g.stages):
        comp = [n for k, n in _read(prefix, stage, "upstream") if k == "COMP_NODE"]
        assert len(comp) == 1  # no collectives at tp=1: the stage is one fused run
        total = sum(op.duration_ns for op in prog.ops() if op.kind == 0)
        assert comp[0].duration_micros == (total + 500) // 1000


def test_upstream_rounding_does_not_accumulate_over_layers(tmp_path):
    """tp=2: 33 fused runs per stage, the same layer's runs repeating. Each rounded alone, their
    errors add up (+4.4 us on stage 0 of this batch); the stage total must stay within 0.5 us."""
    g = _first_graphs("configs/cluster/single_node_tp_pp_instance.json")[0]
    prefix = write_graph(g, tmp_path / "b0" / "llm", "upstream", multi_dim=True)
    for stage, prog in enumerate(g.stages):
        runs, run_ns = [], 0
        for op in prog.ops():
            if op.kind == 0:  # COMPUTE
                run_ns += op.duration_ns
            elif run_ns:
                runs.append(run_ns)
                run_ns = 0
        runs += [run_ns] if run_ns else []
        comp = [duration_ns("upstream", n) for k, n in _read(prefix, g.npu(stage, 0), "upstream") if k == "COMP_NODE"]
        assert len(comp) == len(runs) > 30
        assert abs(sum(comp) - sum(runs)) <= 500
        assert abs(sum((r + 500) // 1000 * 1000 for r in runs) - sum(runs)) > 4000  # what per-run rounding gave
        for k in range(1, len(runs) + 1):  # and every prefix of the stage too
            assert abs(sum(comp[:k]) - sum(runs[:k])) <= 500
