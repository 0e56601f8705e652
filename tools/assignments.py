"""Student versions of the course's notebooks, made by nbgrader: ``make assignments`` (``python tools/assignments.py [ROOT]``).

Each notebook is one assignment, named after its file (``03_gradcam_from_hooks``). ROOT (default
``build/assignments``, not committed) becomes an nbgrader course directory: ``source/<assignment>/`` holds a
copy of the instructor's notebook from ``notebooks/``, and ``nbgrader generate_assignment`` writes the student
version to ``release/<assignment>/``: outputs cleared, every solution replaced by ``raise NotImplementedError()``,
hidden tests removed, test cells locked by checksums; written answers become "YOUR ANSWER HERE", graded by hand.
ROOT also gets the course's ``nbgrader_config.py`` (:data:`COURSE_CONFIG`), which nbgrader reads when run from ROOT. From
there on the instructor uses nbgrader as usual (collect into ``submitted/<student>/<assignment>/``, then
``nbgrader autograde``, the formgrader of JupyterLab's Nbgrader menu for the written answers and ``nbgrader
generate_feedback``, from ROOT); the README lists the commands.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import nbformat
from nbgrader.apps import NbGraderAPI
from nbgrader.coursedir import CourseDirectory
from traitlets.config import Config

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = REPO / "notebooks"
# nbgrader gives a cell 30 s by default; the longest cells of the course take about 20 s on 2 cores, so a slower
# student laptop would fail them. The same limit as nbval's in `make test`.
COURSE_CONFIG = {"Execute": {"timeout": 300}}


def course_api(root: Path, config: dict | None = None) -> NbGraderAPI:
    """nbgrader's API on the course directory ``root``, with :data:`COURSE_CONFIG` updated by ``config``. nbgrader runs
    ``alembic`` from PATH to create its gradebook, so the interpreter's own bin directory goes first on it (``make``
    does not activate the virtualenv)."""
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    settings = Config(COURSE_CONFIG)
    settings.merge(Config(config or {}))
    return NbGraderAPI(coursedir=CourseDirectory(root=str(root)), config=settings)


def write_config(root: Path) -> Path:
    """``root/nbgrader_config.py``: :data:`COURSE_CONFIG`, for the nbgrader commands an instructor runs from ``root``."""
    lines = ["# The Grad-CAM course's nbgrader settings, written by tools/assignments.py (make assignments).", "c = get_config()  # noqa: F821"]
    lines += [f"c.{section}.{name} = {value!r}" for section, values in COURSE_CONFIG.items() for name, value in values.items()]
    path = root / "nbgrader_config.py"
    path.write_text("\n".join(lines) + "\n")
    return path


def generate(root: Path, names: list[str] | None = None) -> list[Path]:
    """Copy the named notebooks (default: all) into ``root/source`` and generate their student versions; their paths."""
    notebooks = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
    chosen = [p for p in notebooks if names is None or p.stem in names]
    if names is not None and len(chosen) != len(set(names)):
        raise ValueError(f"no notebook named {sorted(set(names) - {p.stem for p in chosen})}; the notebooks are {[p.stem for p in notebooks]}")
    root.mkdir(parents=True, exist_ok=True)
    write_config(root)
    api = course_api(root)
    released = []
    for notebook in chosen:
        source = root / "source" / notebook.stem
        source.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(notebook, source / notebook.name)
        result = api.generate_assignment(notebook.stem, force=True)
        if not result["success"]:
            raise RuntimeError(f"nbgrader could not generate {notebook.stem}:\n{result['error']}\n{result['log']}")
        student_version = root / "release" / notebook.stem / notebook.name
        expand_answers(student_version)
        released.append(student_version)
    return released


def expand_answers(path: Path) -> None:
    """Open the answer cells of a student version: the source collapses its solutions so that self-learners try
    first, but a student must see the "YOUR CODE HERE" stub. nbgrader's checksums cover a cell's source and grading
    metadata, not JupyterLab's view of it, so grading is unaffected."""
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.metadata.get("nbgrader", {}).get("solution"):
            cell.metadata.get("jupyter", {}).pop("source_hidden", None)
            if cell.metadata.get("jupyter") == {}:
                del cell.metadata["jupyter"]
    nbformat.write(nb, path)


def main() -> None:
    root = Path(sys.argv[1] if len(sys.argv) > 1 else REPO / "build" / "assignments").resolve()
    released = generate(root)
    print(f"{len(released)} student versions in {root / 'release'} (one folder per assignment); the course directory is {root}")


if __name__ == "__main__":
    main()
