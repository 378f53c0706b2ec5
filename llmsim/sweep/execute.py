"""Running a sweep's points: a local process pool, or Dask distributed (an existing scheduler, or a
LocalCluster). Workers simulate and send back the point's figures and file contents; this process
writes every file, so remote workers need llmsim installed but no shared folder."""
from __future__ import annotations

import json
import os
import sys
import time
import traceback
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

from ..config.cluster import cluster_from_dict
from ..workload_gen import generate
from .points import Point, workload_spec
from .results import POINT_FILES, point_files, point_metrics, read_result, table, write_point, write_table
from .spec import SweepSpec

ENGINES = ("local", "dask")


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def run_point(task: dict) -> dict:
    """Simulate one point (in a worker). Never raises: a failure is the result's error."""
    import llmsim

    t0 = time.perf_counter()
    try:
        records = [json.loads(line) for line in task["workload_lines"]]
        res = llmsim.run(task["cluster"], records, engine=task["engine"], routing_policy=task["routing_policy"],
                         log_interval_s=task["peak_mem_interval_ms"] / 1e3)
        result = {"status": "ok", "error": "", **point_metrics(res, task["slo"]),
                  "timing": "+".join(sorted({i.timer.source for i in res.sim.instances}))}
        files = point_files(res)
    except Exception as e:  # noqa: BLE001 - a failed point is recorded and the sweep goes on
        result = {"status": "error", "error": _one_line(f"{type(e).__name__}: {e}")}
        files = {"error.txt": traceback.format_exc()}
    result["wall_s"] = round(time.perf_counter() - t0, 3)
    return {"id": task["id"], "result": result, "files": files}


def workload_lines(w: dict) -> list[str]:
    """The point's workload as JSONL lines: generated (seeded), or the fixed file's first num_requests."""
    spec = workload_spec(w)
    if spec is not None:
        return list(generate(spec))
    with open(w["path"], encoding="utf-8-sig") as fh:
        lines = [ln if ln.endswith("\n") else ln + "\n" for ln in fh if ln.strip()]
    return lines[:w["num_requests"]] if w.get("num_requests") else lines


def _task(point: Point, spec: SweepSpec) -> dict:
    return {"id": point.id, "cluster": point.cluster, "engine": point.engine,
            "workload_lines": workload_lines(point.workload), "slo": spec.slo,
            "routing_policy": spec.routing_policy, "peak_mem_interval_ms": spec.peak_mem_interval_ms}


def _inputs(point: Point, task: dict, spec: SweepSpec) -> dict:
    """The point's inputs, kept beside its results: enough to rerun it with `llmsim`."""
    doc = {"point_id": point.id, "index": point.index, "params": dict(point.params), "engine": point.engine,
           "workload": point.workload, "slo": spec.slo, "routing_policy": spec.routing_policy}
    return {"workload.jsonl": "".join(task["workload_lines"]),
            "cluster.json": json.dumps(point.cluster, indent=1) + "\n",
            "point.json": json.dumps(doc, indent=1, default=str) + "\n"}


def _layout(point: Point) -> dict:
    c = cluster_from_dict(point.cluster, "cluster")
    return {"layout": "+".join(dict.fromkeys(f"tp{i.tp_size}xpp{i.pp_size}" for i in c.instances)),
            "num_npus": c.total_npus}


def _local(tasks, workers):
    """Yield (task, outcome or exception) as points finish, on a process pool."""
    with ProcessPoolExecutor(max_workers=workers or os.cpu_count()) as pool:
        futs = {pool.submit(run_point, t): t for t in tasks}
        try:
            for f in as_completed(futs):
                yield futs[f], (f.exception() or f.result())
        except BaseException:
            for f in futs:
                f.cancel()
            raise


def _dask(tasks, workers, address):
    try:
        from dask.distributed import Client, LocalCluster
        from dask.distributed import as_completed as dask_completed
    except ImportError:
        from ..errors import InputError
        raise InputError("--engine dask needs dask.distributed (pip install 'llmsim[dask]')") from None
    import logging

    # distributed logs at INFO through the root handler the CLI sets up; a sweep's own lines suffice
    quiet_logs = logging.getLogger("distributed")
    level = quiet_logs.level
    quiet_logs.setLevel(logging.ERROR)
    cluster = None
    if address:
        client = Client(address, timeout="30s")
    else:
        cluster = LocalCluster(n_workers=workers or os.cpu_count(), threads_per_worker=1, processes=True,
                               dashboard_address=":0", silence_logs=logging.ERROR)
        client = Client(cluster)
    try:
        futs = client.map(run_point, tasks, key=[f"llmsim-point-{t['id']}" for t in tasks], pure=False)
        by_key = {f.key: t for f, t in zip(futs, tasks)}
        for f in dask_completed(futs):
            yield by_key[f.key], (f.exception() if f.status == "error" else f.result())
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
        quiet_logs.setLevel(level)


def _progress(total: int, quiet: bool):
    """tqdm on stderr, only when stderr is a terminal and not --quiet."""
    if quiet or not sys.stderr.isatty():
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, unit="point", file=sys.stderr)


def run_sweep(spec: SweepSpec, points: list[Point], out_dir: str, *, engine: str = "local", workers: int = 0,
              address: str | None = None, quiet: bool = False):
    """Run the points not already done in out_dir; write their folders as they finish and the
    table at the end. Returns (table, points run now, points skipped)."""
    out = Path(out_dir)
    results = {}
    for p in points:  # resume: a point whose folder holds an ok result is not run again
        r = read_result(out / "points" / p.id)
        if r is not None and r["status"] == "ok":
            results[p.id] = r
    todo = [p for p in points if p.id not in results]
    by_id = {p.id: p for p in todo}
    tasks = [_task(p, spec) for p in todo]
    bar = _progress(len(tasks), quiet)
    run = _dask(tasks, workers, address) if engine == "dask" else _local(tasks, workers)
    try:
        for task, outcome in run:
            if isinstance(outcome, BaseException):  # the worker itself died (killed, out of memory)
                outcome = {"id": task["id"], "files": {}, "result": {
                    "status": "error", "error": _one_line(f"worker failed: {type(outcome).__name__}: {outcome}")}}
            p = by_id[task["id"]]
            files = {**_inputs(p, task, spec), **outcome["files"]}
            folder = out / "points" / p.id
            for stale in set(POINT_FILES) | {"error.txt"}:
                if stale not in files and (folder / stale).is_file():
                    (folder / stale).unlink()  # left by an earlier, failed attempt
            write_point(folder, files, outcome["result"])
            results[p.id] = outcome["result"]
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    df = table(points, results, {p.id: _layout(p) for p in points})
    write_table(df, out)
    return df, len(todo), len(points) - len(todo)
