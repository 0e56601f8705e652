"""`make lab` serves JupyterLab on the course, with notebook 00 in it."""

import json
import os
import secrets
import signal
import socket
import subprocess
import time
import urllib.request
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


@pytest.fixture
def lab_server(tmp_path):
    port, token = free_port(), secrets.token_hex(16)
    args = f"--no-browser --ip=127.0.0.1 --port={port} --IdentityProvider.token={token} --ServerApp.open_browser=False"
    env = {**os.environ, "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime")}
    process = subprocess.Popen(
        ["make", "--no-print-directory", "lab", f"LAB_ARGS={args}"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if process.poll() is not None:
                raise AssertionError(f"make lab exited with {process.returncode}: {process.stdout.read().decode()[-2000:]}")
            try:
                get(f"{base}/api/status", token)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        yield base, token
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)


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
