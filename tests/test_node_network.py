"""The node-aware network (config/network.py, backends/fabric.py): each transfer on the fabric it
crosses, against hand calculations; bad configs are one-line errors."""
import json

import pytest

from llmsim.backends.embedded import EmbeddedBackend
from llmsim.backends.network import Link, p2p_ns
from llmsim.config.cluster import cluster_from_dict, load_cluster_config
from llmsim.config.engine import EngineArgs
from llmsim.errors import InputError
from llmsim.graph.iteration import OpKind
from llmsim.request import Request
from llmsim.simulate import prepare, run

TP8_PP2 = "configs/cluster/h100x16_llama70b_tp8_pp2.json"
TP4_PP4 = "configs/cluster/h100x16_llama70b_tp4_pp4.json"
GBPS = 2**30 / 1e9  # bytes per ns per GB/s (ASTRA-Sim reads GB/s as 2^30 B/s)


def _graph(cfg):
    sim = prepare(cfg, EngineArgs(dtype="bfloat16"), [Request(0, 0, prompt_len=10, output_len=1)])
    graphs = []
    run(sim, on_graph=graphs.append)
    return sim, graphs[0]


def test_tp8_pp2_boundary_on_infiniband_allreduce_on_nvswitch():
    sim, g = _graph(TP8_PP2)
    be = EmbeddedBackend(sim.cluster)
    links = be._links[0]
    # 10 tokens x 8192 hidden x 2 B = 163,840 B per tensor; each of 8 ranks sends 1/8 of the hidden
    # states and of the residual: 20,480 B over the NIC, 50 GB/s, a switch = 2 hops of 1,000 ns.
    send = int(2 * 1000 + 20_480 / (50 * GBPS))
    assert send == 2381
    assert be.send_ns(g.stages[0], 0) == 2 * send
    # a TP all-reduce on NVSwitch (450 GB/s, 2 x 200 ns): ring of 8, hand-offs of 163,840 / 8 B,
    # 10 ns endpoint delay each, 7 reductions of 3 x 6 ns (3,350 GB/s local memory), one start delay
    hop = int(2 * 200 + 20_480 / (450 * GBPS))
    assert hop == 442
    ar = next(o for o in g.stages[0].block_ops if o.kind is OpKind.ALLREDUCE)
    assert ar.size_bytes == 163_840
    assert be._op_ns(ar, links, 0, 3350) == 10 + 2 * 7 * (hop + 10) + 7 * 3 * 6
    # the receiving stage all-gathers each tensor over NVSwitch: 7 hand-offs of one rank's part
    gathers = [o for o in g.stages[1].head_ops if o.kind is OpKind.ALLGATHER]
    assert [be._op_ns(o, links, 1, 3350) for o in gathers] == [10 + 7 * (hop + 10)] * 2


def test_tp4_pp4_one_boundary_across_nodes():
    sim, _ = _graph(TP4_PP4)
    links = EmbeddedBackend(sim.cluster)._links[0]
    nvswitch, ib = Link(450, 400), Link(50, 2000)
    assert links.boundary == (nvswitch, ib, nvswitch)  # stages 0,1 on node 0; 2,3 on node 1
    assert links.tp_dims == ((nvswitch, 4),)
    assert p2p_ns(ib, 40_960) > p2p_ns(nvswitch, 40_960)


def test_tp_group_across_nodes_is_hierarchical():
    raw = json.loads(open(TP8_PP2).read())
    inst = raw["nodes"][0]["instances"][0]
    inst.update(tp_size=16, pp_size=1, num_npus=16)
    cluster = cluster_from_dict(raw)
    from llmsim.backends.fabric import instance_links

    assert instance_links(cluster, cluster.instances[0]).tp_dims == ((Link(450, 400), 8), (Link(50, 2000), 2))


def test_without_network_the_flat_link_is_used():
    cluster = load_cluster_config("configs/cluster/single_node_tp_pp_instance.json")
    from llmsim.backends.fabric import instance_links

    assert cluster.network is None
    assert instance_links(cluster, cluster.instances[0]).boundary == (Link(16, 20000),)


@pytest.mark.parametrize("edit, msg", [
    (lambda r: r["network"].update(gpus_per_node=6), "network.gpus_per_node: the instances use 16 NPUs but "
                                                     "num_nodes x gpus_per_node = 2 x 6"),
    (lambda r: r["network"]["inter_node"].update(topology="Ring"), "network.inter_node.topology: expected one of "
                                                                   "Switch, FullyConnected, got 'Ring'"),
    (lambda r: r["network"]["intra_node"].update(bandwidth=0), "network.intra_node.bandwidth: expected a value > 0"),
    (lambda r: r["nodes"][0].update(num_instances=3, instances=[
        dict(r["nodes"][0]["instances"][0], tp_size=tp, pp_size=pp, num_npus=tp * pp) for tp, pp in
        ((2, 1), (8, 1), (2, 3))]), "instances[1]: stage 0's TP group (NPUs 2-9) straddles a node boundary"),
])
def test_bad_network_is_a_one_line_error(edit, msg):
    raw = json.loads(open(TP8_PP2).read())
    edit(raw)
    with pytest.raises(InputError) as e:
        cluster_from_dict(raw, "c.json")
    assert msg in str(e.value) and "\n" not in str(e.value)


def test_astra_layout_puts_nodes_before_the_within_node_dimension(tmp_path):
    from astra_bridge.inputs import astra_layout, write_inputs

    cluster = load_cluster_config(TP4_PP4)
    layout = astra_layout(cluster, "upstream")
    # [TP group, nodes, TP groups within a node]: ASTRA-Sim sends on the first dimension whose
    # coordinates differ, so stage 1 (NPUs 4-7, node 0) -> stage 2 (NPUs 8-11, node 1) crosses the
    # node dimension (InfiniBand) and stage 0 -> 1 the within-node one (NVSwitch)
    assert layout.dims == (4, 2, 2) and layout.bandwidth == (450, 50, 450) and layout.latency == (200, 1000, 200)
    assert layout.tp_involved == (True, False, False)
    # our NPU p = node * 8 + group * 4 + rank  ->  ASTRA-Sim id = rank + 4 * (node + 2 * group)
    assert [layout.id(p) for p in (0, 3, 4, 7, 8, 11, 12, 15)] == [0, 3, 8, 11, 4, 7, 12, 15]
    paths = write_inputs(cluster, tmp_path, "upstream")
    assert paths.network.read_text() == ("topology: [Switch, Switch, Switch]\nnpus_count: [4, 2, 2]\n"
                                         "bandwidth: [450.0, 50.0, 450.0]\nlatency: [200.0, 1000.0, 200.0]\n")
    tp8 = astra_layout(load_cluster_config(TP8_PP2))
    assert tp8.dims == (8, 2) and tp8.ids == tuple(range(16))  # one TP group per node: ids unchanged


def test_astra_bridge_refuses_a_tp_group_across_nodes(tmp_path):
    from astra_bridge.inputs import write_inputs

    raw = json.loads(open(TP8_PP2).read())
    raw["nodes"][0]["instances"][0].update(tp_size=16, pp_size=1, num_npus=16)
    with pytest.raises(InputError, match="the bridge needs one TP size for all instances, inside a node"):
        write_inputs(cluster_from_dict(raw), tmp_path, "upstream")
