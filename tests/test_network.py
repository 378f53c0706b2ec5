"""Communication costs against ASTRA-Sim's own recorded results."""
from llmsim.backends.network import Link, mem_ns, p2p_ns, ring_allgather_ns, ring_allreduce_ns


def test_upstream_ring_allreduce_example_43000_cycles():
    # upstream astra-sim microbenchmark: 4 NPUs on a 50 GB/s, 500 ns ring, 1 MB all-reduce,
    # 4 chunks, endpoint delay 10, local-mem-bw 1600; its stdout reports 43,000 cycles.
    t = ring_allreduce_ns(Link(50, 500), 1_048_576, 4, local_mem_bw_gbps=1600, endpoint_delay_ns=10,
                          splits=4, total_npus=4)
    assert t == 43_000


def test_fork_tp2_allreduce():
    # 81,920 B over 2 ranks at 16 GB/s and 20 us: 40,960 B hand-offs of 20,000 + 40,960 / 17.18 ns,
    # endpoint delay 10 each, one reduction of 3 x 25 ns, one starting endpoint delay.
    assert ring_allreduce_ns(Link(16, 20000), 81_920, 2, local_mem_bw_gbps=1597) == 10 + 2 * 22_394 + 75


def test_p2p_matches_captured_pp2_send():
    # first pp=2 batch of the reference run: 10 tokens x 4096 x 2 B activations cost 24,768 ns
    assert p2p_ns(Link(16, 20000), 81_920) == 24_768
    assert p2p_ns(Link(16, 20000), 8_192) == 20_476


def test_host_memory_transfer():
    assert mem_ns(256, 0, 40) == 0
    assert mem_ns(256, 100, 2_560_000) == 100 + 10_000


def test_ring_allgather_of_one_rank_slice():
    # ASTRA-Sim's ALL_GATHER takes comm_size as each rank's part (Ring: msg_size = data size):
    # N-1 hand-offs of the whole 40,960 B (20,000 + 40,960 / 17.18 = 22,384 ns, + endpoint delay
    # 10), no reduction, one starting endpoint delay. The real fork and upstream builds time the
    # tp=2 x pp=2 example's gathers the same (tests/test_astra_backend.py, real builds).
    link = Link(16, 20000)
    assert ring_allgather_ns(link, 40_960, 2) == 10 + 22_394
    assert ring_allgather_ns(link, 40_960, 4) == 10 + 3 * 22_394
    assert ring_allgather_ns(link, 40_960, 1) == 0


def test_ring_alltoall_as_astra_sim_runs_it():
    # measured on both real builds (upstream and the fork), 1 MiB per rank over 2, 4, 8 NPUs of one
    # FullyConnected dimension at 16 GB/s, 20 us: N(N-1)/2 hand-offs of size/N, each + 10 ns
    from llmsim.backends.network import ring_alltoall_ns

    link = Link(16, 20_000)
    hop = lambda n: int(20_000 + (1 << 20) / n / 17.179869184) + 10
    assert [10 + n * (n - 1) // 2 * hop(n) for n in (2, 4, 8)] == [50_537, 211_618, 773_902]
    assert [ring_alltoall_ns(link, 1 << 20, n) for n in (2, 4, 8)] == [50_537, 211_618, 773_902]
    assert ring_alltoall_ns(link, 1 << 20, 1) == 0
