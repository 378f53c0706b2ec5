"""The periodic [INFO] line of the design brief."""
from llmsim.results import Heartbeat
from llmsim.metrics import heartbeat_line
from conftest import run_cli


def test_line_format_matches_the_design_brief():
    hb = Heartbeat(t_ns=20_000_000_000, batch_reqs=8, prompt_tokens=1_400, gen_tokens=540,
                   npu_mem_bytes=44 * (1 << 30), running=8, waiting=0)
    assert heartbeat_line(hb, 1_000_000_000) == \
        "[INFO] step=20 batch=8 prompt_t=1.4k tok/s decode_t=540 tok/s npu_mem=44.0 GB"
    # counts are per interval: 700 tokens in half a second are 1.4k tok/s
    hb2 = Heartbeat(10_000_000_000, 3, 700, 100, 0, 0, 0)
    assert heartbeat_line(hb2, 500_000_000).startswith("[INFO] step=20 batch=3 prompt_t=1.4k tok/s decode_t=200 tok/s")


def test_one_line_per_interval_until_the_end():
    # single GPU, example trace: the last request ends at 1.664 s, so intervals of 0.2 s end at 0.2 ... 1.6 s
    res = run_cli("--cluster-config", "configs/cluster/single_node_single_instance.json", "--dtype", "bfloat16",
                  "--dataset", "workloads/example_trace.jsonl", "--log-interval", 0.2)
    steps = [int(l.split("step=")[1].split()[0]) for l in res.output.splitlines() if l.startswith("[INFO] step=")]
    assert steps == list(range(1, 9))
