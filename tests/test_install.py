"""Installed anywhere: the wheel carries the data the examples need, and an installed llmsim runs
from any directory, finding model configs and profiles in the package (llmsim/paths.py)."""
import subprocess
import sys
import zipfile

import pytest

from conftest import ROOT


@pytest.fixture(scope="module")
def unpacked_wheel(tmp_path_factory):
    out = tmp_path_factory.mktemp("wheel")
    res = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                          str(out), str(ROOT)], capture_output=True, text=True)
    if res.returncode:
        pytest.skip(f"cannot build a wheel here: {res.stderr.strip().splitlines()[-1:]}")
    (whl,) = out.glob("llmsim-*.whl")
    site = out / "site"
    with zipfile.ZipFile(whl) as z:
        names = set(z.namelist())
        z.extractall(site)
    return site, names


def test_wheel_ships_profiles_configs_and_workloads(unpacked_wheel):
    _, names = unpacked_wheel
    for f in ("llmsim/_data/configs/model/meta-llama/Llama-3.1-8B.json",
              "llmsim/_data/configs/cluster/single_node_pp_instance.json",
              "llmsim/_data/configs/hardware/H100.json",
              "llmsim/_data/profiles/architectures/llama.yaml",
              "llmsim/_data/workloads/example_trace.jsonl"):
        assert f in names, f
    assert any(n.startswith("llmsim/_data/profiles/RTXPRO6000/meta-llama/Llama-3.1-8B/") for n in names)


def _run_outside(site, tmp_path, *args, env_extra=None):
    import os

    env = {**os.environ, "PYTHONPATH": str(site), **(env_extra or {})}
    env.pop("LLMSIM_HOME", None) if not env_extra or "LLMSIM_HOME" not in env_extra else None
    return subprocess.run([sys.executable, "-m", "llmsim", *map(str, args)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)


def test_installed_llmsim_runs_from_any_directory(unpacked_wheel, tmp_path):
    site, _ = unpacked_wheel
    out = tmp_path / "pp2.csv"
    # the README example with an absolute config path, from a folder that holds no data
    res = _run_outside(site, tmp_path, "--cluster-config", ROOT / "configs/cluster/single_node_pp_instance.json",
                       "--dtype", "float16", "--dataset", ROOT / "workloads/example_trace.jsonl", "--output", out,
                       "--quiet")
    assert res.returncode == 0, res.stderr
    ref = tmp_path / "ref.csv"
    subprocess.run([sys.executable, "-m", "llmsim", "--cluster-config", "configs/cluster/single_node_pp_instance.json",
                    "--dtype", "float16", "--dataset", "workloads/example_trace.jsonl", "--output", str(ref),
                    "--quiet"], cwd=ROOT, check=True, capture_output=True)
    assert out.read_bytes() == ref.read_bytes()
    # shipped configs and workloads by their relative names work too
    res = _run_outside(site, tmp_path, "--cluster-config", "configs/cluster/single_node_pp_instance.json",
                       "--dtype", "float16", "--dataset", "workloads/example_trace.jsonl", "--output",
                       tmp_path / "rel.csv", "--quiet")
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "rel.csv").read_bytes() == ref.read_bytes()


def test_a_missing_model_names_where_it_looked(unpacked_wheel, tmp_path):
    import json

    site, _ = unpacked_wheel
    cfg = json.loads((ROOT / "configs/cluster/single_node_pp_instance.json").read_text())
    cfg["nodes"][0]["instances"][0]["model_name"] = "acme/Nope-1B"
    p = tmp_path / "c.json"
    p.write_text(json.dumps(cfg))
    home = tmp_path / "home"
    res = _run_outside(site, tmp_path, "--cluster-config", p, "--quiet", env_extra={"LLMSIM_HOME": str(home)})
    assert res.returncode == 2
    (line,) = [l for l in res.stderr.splitlines() if l.startswith("error:")]
    assert "no model config 'acme/Nope-1B.json'; searched" in line
    assert str(home / "configs/model") in line and "_data/configs/model" in line


def test_llmsim_home_adds_a_model_and_falls_through_for_the_rest(unpacked_wheel, tmp_path):
    import json
    import shutil

    site, _ = unpacked_wheel
    home = tmp_path / "home"
    (home / "configs/model/acme").mkdir(parents=True)
    shutil.copy(ROOT / "configs/model/meta-llama/Llama-3.1-8B.json", home / "configs/model/acme/Llama-Copy.json")
    cfg = json.loads((ROOT / "configs/cluster/single_node_pp_instance.json").read_text())
    cfg["nodes"][0]["instances"][0]["model_name"] = "acme/Llama-Copy"
    p = tmp_path / "c.json"
    p.write_text(json.dumps(cfg))
    res = _run_outside(site, tmp_path, "--cluster-config", p, "--dataset", ROOT / "workloads/example_trace.jsonl",
                       "--quiet", env_extra={"LLMSIM_HOME": str(home)})
    # the model comes from LLMSIM_HOME; with no measured profile for it, the roofline model times it
    # from the shipped hardware file and architecture
    assert res.returncode == 0, res.stderr
    assert "roofline" in res.stderr
