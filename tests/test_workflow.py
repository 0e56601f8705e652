"""The GitHub Actions workflow that instructors' forks run: it must call the README's test command."""

from pathlib import Path

import yaml

WORKFLOW = Path(__file__).resolve().parent.parent / ".github" / "workflows" / "test.yml"


def test_workflow_runs_make_test_in_debian_with_python_311_and_chromium():
    workflow = yaml.safe_load(WORKFLOW.read_text())
    triggers = workflow[True] if True in workflow else workflow["on"]  # YAML 1.1 reads the key `on` as true
    assert {"push", "pull_request"} <= set(triggers)
    (job,) = workflow["jobs"].values()
    assert job["container"] == "python:3.11-bookworm"  # Debian 12, whose chromium package the browser test drives
    assert job["timeout-minutes"] <= 90 and job["env"]["CI"] == "true"
    steps = job["steps"]
    assert all("@v" in s["uses"] for s in steps if "uses" in s)  # every action pinned to a major version
    cache = next(s for s in steps if s.get("uses", "").startswith("actions/cache@"))
    assert cache["with"]["path"] == "~/.cache/pip" and "requirements-lock.txt" in cache["with"]["key"]
    runs = [s.get("run", "") for s in steps]
    assert any("apt-get install" in r and "chromium" in r and "make" in r for r in runs)
    assert runs[-1].startswith("make test")  # the README's command, last
