"""The GitHub Actions workflow that instructors' forks run: it must call the README's test command."""

from pathlib import Path

import yaml

WORKFLOW = Path(__file__).resolve().parent.parent / ".github" / "workflows" / "test.yml"


def test_workflow_runs_make_test_with_python_311_and_chromium():
    workflow = yaml.safe_load(WORKFLOW.read_text())
    triggers = workflow[True] if True in workflow else workflow["on"]  # YAML 1.1 reads the key `on` as true
    assert {"push", "pull_request"} <= set(triggers)
    (job,) = workflow["jobs"].values()
    assert job["runs-on"].startswith("ubuntu") and job["timeout-minutes"] <= 90 and job["env"]["CI"] == "true"
    steps = job["steps"]
    setup = next(s for s in steps if s.get("uses", "").startswith("actions/setup-python@"))
    assert setup["with"]["python-version"] == "3.11" and setup["with"]["cache"] == "pip"
    runs = [s.get("run", "") for s in steps]
    assert any("apt-get install" in r and "chromium" in r for r in runs)
    assert runs[-1].startswith("make test")  # the README's command, last
    assert all(s.get("uses", "actions/x@v1").split("@")[1] for s in steps)  # every action pinned to a version
