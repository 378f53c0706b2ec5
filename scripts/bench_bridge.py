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
from llmsim.backends.embedded import EmbeddedBackend  # noqa: E402
from llmsim.config.engine import EngineArgs  # noqa: E402
from llmsim.engine import Engine  # noqa: E402
from llmsim.simulate import prepare, run  # noqa: E402

CONFIG = "configs/cluster/single_node_pp_instance.json"
DATASET = "workloads/example_trace.jsonl"


def standin_binary(folder: Path) -> Path:
    exe = folder / "AnalyticalAstra"
    exe.write_text(f"#!/bin/sh\nPYTHONPATH={ROOT} exec {sys.executable} -m astra_bridge.standin \"$@\"\n")
    exe.chmod(exe.stat().st_mode | stat.S_IEXEC)
    return exe


@click.command()
@click.option("--astra-sim-bin", default=None, help="A real fork build (default: the stand-in).")
def main(astra_sim_bin):
    os.chdir(ROOT)
    args = EngineArgs(dtype="bfloat16")
    sim = prepare(CONFIG, args, DATASET)
    graphs = []
    Engine(sim.instances, EmbeddedBackend(sim.cluster), sim.requests, on_graph=graphs.append).run()
    print(f"{len(graphs)} batches of the pp=2 example ({CONFIG})")
    with tempfile.TemporaryDirectory() as d:
        for flavor in ("llmservingsim", "upstream"):
            t0 = time.perf_counter()
            for g in graphs:
                write_graph(g, Path(d) / flavor / f"b{g.batch_id}" / "llm", flavor, multi_dim=False)
            ms = (time.perf_counter() - t0) * 1e3 / len(graphs)
            print(f"trace writing, {flavor:<14} {ms:7.2f} ms per batch (2 NPUs)")
        binary = astra_sim_bin or str(standin_binary(Path(d)))
        from astra_bridge.runner import astra_engine

        sim = prepare(CONFIG, args, DATASET)
        t0 = time.perf_counter()
        result = run(sim, engine_factory=lambda s, **kw: astra_engine(
            s, flavor="llmservingsim", binary=binary, workdir=str(Path(d) / "run"), timeout_s=60, **kw))
        wall = time.perf_counter() - t0
        who = "real build" if astra_sim_bin else "stand-in"
        print(f"full astra-sim run ({who})   {wall * 1e3 / result.iterations:7.2f} ms per batch "
              f"({result.iterations} batches, {wall:.2f} s)")
        t0 = time.perf_counter()
        run(prepare(CONFIG, args, DATASET))
        print(f"embedded backend              {(time.perf_counter() - t0) * 1e3 / result.iterations:7.2f} ms per batch")


if __name__ == "__main__":
    main()
