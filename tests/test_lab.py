"""`make lab` serves JupyterLab on the course, with notebook 00 in it."""

import json
import os
import secrets
import signal
import socket
import subprocess
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url: str, token: str) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers={"Authorization": f"token {token}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.status, response.read()


@contextmanager
def running_lab(tmp_path: Path, notebook_dir: Path | None = None):
    """`make lab` (on ``notebook_dir``, default the course's) on a free port with a known token, until the block ends; yields (base URL, token)."""
    port, token = free_port(), secrets.token_hex(16)
    args = f"--no-browser --ip=127.0.0.1 --port={port} --IdentityProvider.token={token} --ServerApp.open_browser=False --LabApp.expose_app_in_browser=True"
    env = {**os.environ, "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime")}
    log = tmp_path / "lab.log"  # a file, not a pipe: a browser's requests fill a pipe nobody reads, and the server blocks
    process = subprocess.Popen(
        ["make", "--no-print-directory", "lab", f"LAB_ARGS={args}", *([f"NOTEBOOK_DIR={notebook_dir}"] if notebook_dir else [])],
        cwd=ROOT, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if process.poll() is not None:
                raise AssertionError(f"make lab exited with {process.returncode}: {log.read_text()[-2000:]}")
            try:
                get(f"{base}/api/status", token)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        yield base, token
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)


@pytest.fixture
def lab_server(tmp_path):
    with running_lab(tmp_path) as server:
        yield server


def test_make_lab_serves_jupyterlab_with_notebook_00(lab_server):
    base, token = lab_server
    status, page = get(f"{base}/lab", token)
    assert status == 200 and b"JupyterLab" in page
    status, body = get(f"{base}/api/contents/00_start_here.ipynb?content=1", token)
    notebook = json.loads(body)
    assert status == 200 and notebook["type"] == "notebook"
    assert any("grad_cam" in "".join(cell["source"]) for cell in notebook["content"]["cells"])
    status, body = get(f"{base}/api/kernelspecs", token)
    assert "python3" in json.loads(body)["kernelspecs"]


def test_make_lab_opens_notebook_00_without_the_news_question(lab_server):
    base, token = lab_server
    request = urllib.request.Request(f"{base}/", headers={"Authorization": f"token {token}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.geturl().endswith("/lab/tree/00_start_here.ipynb")
    # the course's overrides replace the schema's default "none" (ask, the pop-up) with "false" (never fetch)
    _, body = get(f"{base}/lab/api/settings/@jupyterlab/apputils-extension:notification", token)
    properties = json.loads(body)["schema"]["properties"]
    assert properties["fetchNews"]["default"] == "false" and properties["checkForUpdates"]["default"] is False


def test_make_names_a_python_that_is_not_there(tmp_path):
    venv = tmp_path / "venv"
    result = subprocess.run(["make", "--no-print-directory", "PYTHON=no-such-python-3.99", f"VENV={venv}", f"{venv}/.installed"],
                            cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "the Python interpreter 'no-such-python-3.99' was not found" in result.stderr
    assert "/bin/sh" not in result.stderr  # the shell's own garbled "not found" stays out
    assert not venv.exists()
