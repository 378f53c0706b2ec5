"""Placement of a batch's pipeline stages on NPU timelines and the shared host-memory FIFO,
worked by hand on small clusters."""
import copy

import pytest

from llmsim.backends.base import StageEvent
from llmsim.backends.placement import Placement
from llmsim.config.cluster import cluster_from_dict

_INSTANCE = {
    "model_name": "meta-llama/Llama-3.1-8B",
    "hardware": "RTXPRO6000",
    "npu_mem": {"mem_size": 96, "mem_bw": 1597, "mem_latency": 0},
    "pd_type": None,
}


def _cluster(*shapes):
    """One node with an instance per (tp, pp) shape (the schema of configs/cluster/*.json)."""
    insts = []
    for tp, pp in shapes:
        inst = copy.deepcopy(_INSTANCE)
        inst.update(num_npus=tp * pp, tp_size=tp, pp_size=pp)
        insts.append(inst)
    raw = {
        "num_nodes": 1, "link_bw": 16, "link_latency": 20000,
        "nodes": [{"num_instances": len(insts),
                   "cpu_mem": {"mem_size": 512, "mem_bw": 256, "mem_latency": 0},
                   "instances": insts}],
    }
    return cluster_from_dict(raw)


def _spans(events):
    return [(e.stage, e.start_ns, e.end_ns) for e in events]


def test_cluster_shapes():
    c = _cluster((2, 2), (1, 1))
    assert [(i.tp_size, i.pp_size, i.first_npu) for i in c.instances] == [(2, 2, 0), (1, 1, 4)]


def test_single_stage_back_to_back():
    p = Placement(_cluster((1, 1)))
    ev = p.place(0, 0, 1, 7, [(100, 0, 0)], 50)
    assert ev == [StageEvent(0, 0, 0, 7, 50, 150, 150)]
    # a batch submitted while the NPU is busy waits for it
    assert _spans(p.place(0, 0, 1, 8, [(100, 0, 0)], 120)) == [(0, 150, 250)]
    # one submitted after it is idle starts at once
    assert _spans(p.place(0, 0, 1, 9, [(100, 0, 0)], 400)) == [(0, 400, 500)]


def test_pp2_batches_overlap():
    p = Placement(_cluster((1, 2)))
    times = [(100, 0, 0), (100, 0, 0)]
    e1 = p.place(0, 0, 1, 1, times, 0)
    # stage 0 on NPU 0: 0-100; stage 1 on NPU 1 starts when stage 0 hands over: 100-200
    assert e1 == [StageEvent(0, 0, 0, 1, 0, 100, 100), StageEvent(0, 1, 1, 1, 100, 200, 200)]
    # batch 2 submitted at 0 too: its stage 0 waits for batch 1's stage 0 (100-200), its
    # stage 1 for both its stage 0 (200) and batch 1's stage 1 (200): 200-300
    e2 = p.place(0, 0, 1, 2, times, 0)
    assert _spans(e2) == [(0, 100, 200), (1, 200, 300)]
    assert [e.npu for e in e2] == [0, 1]


def test_pp2_slow_last_stage_is_the_bottleneck():
    p = Placement(_cluster((1, 2)))
    times = [(100, 0, 0), (300, 0, 0)]
    # each batch submitted when stage 0 is free (as the engine does)
    e1 = p.place(0, 0, 1, 1, times, 0)
    assert _spans(e1) == [(0, 0, 100), (1, 100, 400)]
    e2 = p.place(0, 0, 1, 2, times, 100)
    # stage 0: 100-200; stage 1 waits for batch 1's to end at 400: 400-700
    assert _spans(e2) == [(0, 100, 200), (1, 400, 700)]
    e3 = p.place(0, 0, 1, 3, times, 200)
    assert _spans(e3) == [(0, 200, 300), (1, 700, 1000)]  # one batch per 300 ns


def test_pp2_slow_first_stage_leaves_a_bubble_on_the_last():
    p = Placement(_cluster((1, 2)))
    times = [(300, 0, 0), (100, 0, 0)]
    e1 = p.place(0, 0, 1, 1, times, 0)
    assert _spans(e1) == [(0, 0, 300), (1, 300, 400)]
    e2 = p.place(0, 0, 1, 2, times, 300)
    # stage 1 idles 400-600 waiting for batch 2's stage 0
    assert _spans(e2) == [(0, 300, 600), (1, 600, 700)]


def test_instances_have_separate_timelines():
    p = Placement(_cluster((1, 1), (1, 1)))
    assert _spans(p.place(0, 0, 1, 0, [(100, 0, 0)], 0)) == [(0, 0, 100)]
    # instance 1's NPU is free even though instance 0's is busy (no host transfers involved)
    e = p.place(1, 1, 1, 0, [(100, 0, 0)], 0)
    assert e == [StageEvent(1, 0, 1, 0, 0, 100, 100)]


def test_tp2_loads_queue_rank_after_rank():
    # tp=2, pp=1: load L=10 per rank, busy 100, store S=20 per rank, submitted at t=1000
    p = Placement(_cluster((2, 1)))
    (e,) = p.place(0, 0, 2, 0, [(100, 10, 20)], 1000)
    # rank 0 loads 1000-1010, rank 1 1010-1020; compute 1020-1120 (the later rank sets the pace);
    # rank 0 stores 1120-1140, rank 1 1140-1160
    assert e == StageEvent(0, 0, 0, 0, 1000, 1160, 1140)
    assert e.end_ns - e.first_rank_end_ns == 20  # one store


def test_tp2_pp2_load_on_first_stage_store_on_last():
    p = Placement(_cluster((2, 2)))
    times = [(100, 10, 0), (200, 0, 20)]
    e0, e1 = p.place(0, 0, 2, 5, times, 0)
    # stage 0 (NPUs 0-1): loads 0-10, 10-20; compute 20-120; no store -> both ranks end at 120
    assert e0 == StageEvent(0, 0, 0, 5, 0, 120, 120)
    # stage 1 (NPUs 2-3): compute 120-320; stores 320-340 (rank 0), 340-360 (rank 1)
    assert e1 == StageEvent(0, 1, 2, 5, 120, 360, 340)
    # the next batch's stage 0: its loads queue at 120-130, 130-140; compute 140-240;
    # stage 1: rank 0 is free at 340, rank 1 at 360 (its previous store); the event starts with
    # the first rank (340) but the ranks meet at the all-reduce, so compute ends 360 + 200 = 560;
    # stores 560-580, 580-600
    f0, f1 = p.place(0, 0, 2, 6, times, 120)
    assert f0 == StageEvent(0, 0, 0, 6, 120, 240, 240)
    assert f1 == StageEvent(0, 1, 2, 6, 340, 600, 580)


def test_tp1_load_and_store_add_to_the_stage():
    p = Placement(_cluster((1, 1)))
    (e,) = p.place(0, 0, 1, 0, [(100, 10, 20)], 0)
    # load 0-10, compute 10-110, store 110-130
    assert e == StageEvent(0, 0, 0, 0, 0, 130, 130)


def test_host_fifo_is_shared_across_instances():
    p = Placement(_cluster((1, 1), (1, 1)))
    a = p.place(0, 0, 1, 0, [(100, 50, 0)], 0)
    b = p.place(1, 1, 1, 0, [(100, 50, 0)], 0)
    # instance 0 loads 0-50 and computes 50-150; instance 1's load waits: 50-100, compute 100-200
    assert _spans(a) == [(0, 0, 150)]
    assert _spans(b) == [(0, 0, 200)]


def test_host_fifo_fills_gaps_and_queues_stores():
    p = Placement(_cluster((1, 1), (1, 1)))
    # instance 0: load 0-100, compute 100-1100, store 1100-1200 -> FIFO booked [0,100) [1100,1200)
    assert _spans(p.place(0, 0, 1, 0, [(1000, 100, 100)], 0)) == [(0, 0, 1200)]
    # instance 1: load waits for [0,100) then fits the gap: 100-200; compute 200-1150;
    # its store, ready at 1150, overlaps [1100,1200) and waits: 1200-1300
    assert _spans(p.place(1, 1, 1, 0, [(950, 100, 100)], 0)) == [(0, 0, 1300)]


def test_host_fifo_transfer_too_long_for_a_gap_waits_past_it():
    p = Placement(_cluster((1, 1), (1, 1), (1, 1)))
    # instance 0 books [0,100) (load) and [300,400) (store after 200 ns of compute)
    assert _spans(p.place(0, 0, 1, 0, [(200, 100, 100)], 0)) == [(0, 0, 400)]
    # instance 1's 150 ns load fits the 100-300 gap: 100-250, compute 250-260
    assert _spans(p.place(1, 1, 1, 0, [(10, 150, 0)], 0)) == [(0, 0, 260)]
    # instance 2's 100 ns load ready at 0: [0,100) and [100,250) are booked; the 250-300 gap is
    # too short (250-350 would overlap [300,400)) -> it starts at 400, ends 500; compute 500-510
    assert _spans(p.place(2, 2, 1, 0, [(10, 100, 0)], 0)) == [(0, 0, 510)]


def test_tp2_ranks_interleave_with_another_instance_in_the_fifo():
    p = Placement(_cluster((1, 1), (2, 1)))
    # instance 0 (NPU 0) loads 0-30 then computes 30-1030
    assert _spans(p.place(0, 0, 1, 0, [(1000, 30, 0)], 0)) == [(0, 0, 1030)]
    # instance 1 (NPUs 1-2): rank 0 loads 30-60, rank 1 60-90; compute 90-190
    (e,) = p.place(1, 1, 2, 0, [(100, 30, 0)], 0)
    assert e == StageEvent(1, 0, 1, 0, 0, 190, 190)


def test_many_batches_keep_a_steady_pace():
    # 200 back-to-back batches (enough to exercise dropping old FIFO bookings): each loads 10,
    # computes 90, stores 0 -> each takes exactly 100 ns
    p = Placement(_cluster((1, 1)))
    t = 0
    for k in range(200):
        (e,) = p.place(0, 0, 1, k, [(90, 10, 0)], t)
        assert (e.start_ns, e.end_ns) == (100 * k, 100 * k + 100)
        t = e.end_ns


def test_tp2_without_host_transfers_matches_tp1():
    times = [(100, 0, 0), (250, 0, 0)]
    p1, p2 = Placement(_cluster((1, 2))), Placement(_cluster((2, 2)))
    for k, t in enumerate((0, 100, 200, 300)):
        e1, e2 = p1.place(0, 0, 1, k, times, t), p2.place(0, 0, 2, k, times, t)
        assert _spans(e1) == _spans(e2)
        assert [e.end_ns for e in e2] == [e.first_rank_end_ns for e in e2]


@pytest.mark.parametrize("tp, pp", [(1, 1), (1, 2), (2, 1), (2, 2), (1, 4)])
def test_place_ends_matches_place(tp, pp):
    cluster = _cluster((tp, pp), (tp, pp))
    a, b = Placement(cluster), Placement(cluster)
    # uneven stages with a load on stage 0 and a store on the last; two instances share the FIFO
    times = [(100 + 37 * s, 15 if s == 0 else 0, 25 if s == pp - 1 else 0) for s in range(pp)]
    subs = [(0, 0), (1, 0), (0, 40), (1, 90), (0, 130), (0, 400), (1, 410)]
    for k, (inst, t) in enumerate(subs):
        first_npu = inst * tp * pp
        ev = a.place(inst, first_npu, tp, k, times, t)
        assert len(ev) == pp
        assert b.place_ends(inst, first_npu, tp, k, times, t) == (ev[0].first_rank_end_ns, ev[-1].end_ns)


def test_place_ends_hand_worked_tp2():
    p = Placement(_cluster((2, 1)))
    # loads 0-10 and 10-20, compute 20-120, stores 120-140 and 140-160
    assert p.place_ends(0, 0, 2, 0, [(100, 10, 20)], 0) == (140, 160)
