"""Student versions of the course's notebooks, made by nbgrader: ``make assignments`` (``python tools/assignments.py [ROOT]``).

Each notebook is one assignment, named after its file (``03_gradcam_from_hooks``). ROOT (default
``build/assignments``, not committed) becomes an nbgrader course directory: ``source/<assignment>/`` holds a
copy of the instructor's notebook from ``notebooks/``, and ``nbgrader generate_assignment`` writes the student
version to ``release/<assignment>/``: outputs cleared, every solution replaced by ``raise NotImplementedError()``,
hidden tests removed, test cells locked by checksums. From there on the instructor uses nbgrader as usual
(collect into ``submitted/<student>/<assignment>/``, then ``nbgrader autograde`` and ``nbgrader generate_feedback``
with ``--CourseDirectory.root=ROOT``); the README lists the commands.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from nbgrader.apps import NbGraderAPI
from nbgrader.coursedir import CourseDirectory

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = REPO / "notebooks"


def course_api(root: Path) -> NbGraderAPI:
    """nbgrader's API on the course directory ``root``. nbgrader runs ``alembic`` from PATH to create its gradebook,
    so the interpreter's own bin directory goes first on it (``make`` does not activate the virtualenv)."""
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    return NbGraderAPI(coursedir=CourseDirectory(root=str(root)))


def generate(root: Path, names: list[str] | None = None) -> list[Path]:
    """Copy the named notebooks (default: all) into ``root/source`` and generate their student versions; their paths."""
    notebooks = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
    chosen = [p for p in notebooks if names is None or p.stem in names]
    if names is not None and len(chosen) != len(set(names)):
        raise ValueError(f"no notebook named {sorted(set(names) - {p.stem for p in chosen})}; the notebooks are {[p.stem for p in notebooks]}")
    api = course_api(root)
    released = []
    for notebook in chosen:
        source = root / "source" / notebook.stem
        source.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(notebook, source / notebook.name)
        result = api.generate_assignment(notebook.stem, force=True)
        if not result["success"]:
            raise RuntimeError(f"nbgrader could not generate {notebook.stem}:\n{result['error']}\n{result['log']}")
        released.append(root / "release" / notebook.stem / notebook.name)
    return released


def main() -> None:
    root = Path(sys.argv[1] if len(sys.argv) > 1 else REPO / "build" / "assignments").resolve()
    released = generate(root)
    print(f"{len(released)} student versions in {root / 'release'} (one folder per assignment); the course directory is {root}")


if __name__ == "__main__":
    main()
