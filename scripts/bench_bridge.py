"""Per-iteration overhead of the ASTRA-Sim bridge: trace writing, and the whole subprocess path.

Prints ms per batch for (1) writing every NPU's .et files of each iteration graph, per flavour, and
(2) a full run on --backend astra-sim against a binary (default: the protocol stand-in, which costs
little itself, so the figure is the bridge's: files + protocol + process I/O). The reference spends
142 ms per batch. Not a test: `python scripts/bench_bridge.py [--astra-sim-bin PATH]`.
"""
import os
import stat
import sys
import tempfile
import time
from pathlib import Path

import click

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from astra_bridge.traces import write_graph  # noqa: E402
from llmsim.config.engine import EngineArgs  # noqa: E402
from llmsim.simulate import make_backend, prepare, run  # noqa: E402

CONFIG = "configs/cluster/single_node_pp_instance.json"
DATASET = "workloads/example_trace.jsonl"


def standin_binary(folder: Path) -> Path:
    exe = folder / "AnalyticalAstra"
    exe.write_text(f"#!/bin/sh\nPYTHONPATH={ROOT} exec {sys.executable} {ROOT / 'tests' / 'astra_standin.py'} \"$@\"\n")
    exe.chmod(exe.stat().st_mode | stat.S_IEXEC)
    return exe


@click.command()
@click.option("--astra-sim-bin", default=None, help="A real fork build (default: the stand-in).")
def main(astra_sim_bin):
    os.chdir(ROOT)
    args = EngineArgs(dtype="bfloat16")
    sim = prepare(CONFIG, args, DATASET)
    graphs = []
    run(sim, on_graph=graphs.append)
    print(f"{len(graphs)} batches of the pp=2 example ({CONFIG})")
    with tempfile.TemporaryDirectory() as d:
        for flavor in ("llmservingsim", "upstream"):
            t0 = time.perf_counter()
            for g in graphs:
                write_graph(g, Path(d) / flavor / f"b{g.batch_id}" / "llm", flavor, multi_dim=False)
            ms = (time.perf_counter() - t0) * 1e3 / len(graphs)
            print(f"trace writing, {flavor:<14} {ms:7.2f} ms per batch (2 NPUs)")
        binary = astra_sim_bin or str(standin_binary(Path(d)))
        sim = prepare(CONFIG, args, DATASET)
        t0 = time.perf_counter()
        result = run(sim, make_backend(sim, "astra-sim", {"astra_sim_bin": binary, "astra_sim_workdir": str(Path(d) / "run"),
                                                          "astra_sim_timeout": 60}))
        wall = time.perf_counter() - t0
        who = "real build" if astra_sim_bin else "stand-in"
        print(f"full astra-sim run ({who})   {wall * 1e3 / result.iterations:7.2f} ms per batch "
              f"({result.iterations} batches, {wall:.2f} s)")
        t0 = time.perf_counter()
        run(prepare(CONFIG, args, DATASET))
        print(f"embedded backend              {(time.perf_counter() - t0) * 1e3 / result.iterations:7.2f} ms per batch")


if __name__ == "__main__":
    main()
