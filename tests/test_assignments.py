"""Lab assignments by nbgrader: student versions of every notebook, and a round trip of one through autograding."""

import ast
import shutil
import sys
from pathlib import Path

import nbformat
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))
import assignments  # noqa: E402

NOTEBOOKS = sorted(assignments.NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
ROUND_TRIP = "01_taylor_intuition"  # among the quickest to run: the round trip executes it twice


def graded(nb):
    return [c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade")]


def split_lines(cell) -> tuple[set[str], set[str]]:
    """The code lines of a cell inside solution or hidden-test regions, and those outside."""
    inside, hidden, shown = False, set(), set()
    for line in cell.source.splitlines():
        if "### BEGIN SOLUTION" in line or "### BEGIN HIDDEN TESTS" in line:
            inside = True
        elif "### END SOLUTION" in line or "### END HIDDEN TESTS" in line:
            inside = False
        elif line.strip() and not line.strip().startswith("#"):
            (hidden if inside else shown).add(line.strip())
    return hidden, shown


@pytest.fixture(scope="module")
def course(tmp_path_factory):
    root = tmp_path_factory.mktemp("course")
    return root, assignments.generate(root)


def test_every_notebook_becomes_a_student_version_without_answers(course):
    _, released = course
    assert [p.name for p in released] == [p.name for p in NOTEBOOKS]
    for source_path, student_path in zip(NOTEBOOKS, released):
        source, student = nbformat.read(source_path, 4), nbformat.read(student_path, 4)
        text = "\n".join(c.source for c in student.cells)
        assert "BEGIN SOLUTION" not in text and "BEGIN HIDDEN TESTS" not in text
        split = [split_lines(c) for c in source.cells]
        secret = set().union(*(h for h, _ in split)) - set().union(*(v for _, v in split))  # lines only the answers hold
        assert secret and not [line for line in secret if line in text], f"{student_path.name} shows solution or hidden-test lines"
        assert not any(c.get("outputs") for c in student.cells if c.cell_type == "code")
        answers = [c for c in student.cells if c.metadata.get("nbgrader", {}).get("solution")]
        assert answers and all("raise NotImplementedError()" in c.source for c in answers)
        points = sum(c.metadata["nbgrader"]["points"] for c in graded(student))
        assert points == sum(c.metadata["nbgrader"]["points"] for c in graded(source)) and f"*Points: {points} in all" in text


def test_each_visible_check_needs_what_its_answer_defines():
    # the student version must fail at every test cell: its visible check asks for names only the answer cell defines
    for path in NOTEBOOKS:
        nb = nbformat.read(path, 4)
        defined_before: set[str] = set()
        for i, cell in enumerate(nb.cells):
            if cell.metadata.get("nbgrader", {}).get("grade"):
                visible = cell.source.split("### BEGIN HIDDEN TESTS")[0]
                asked = {node.value for node in ast.walk(ast.parse(visible)) if isinstance(node, ast.Constant) and isinstance(node.value, str)
                         and node.value.isidentifier()}
                answer = nb.cells[i - 1]
                assert asked, f"{path.name}: {cell.metadata['nbgrader']['grade_id']} has no visible check"
                assert asked.isdisjoint(defined_before), f"{path.name}: {sorted(asked & defined_before)} exist before the answer"
                assert all(name in answer.source for name in asked)
            elif cell.cell_type == "code" and not cell.metadata.get("nbgrader", {}).get("solution"):
                source = "\n".join("" if line.lstrip().startswith(("%", "!")) else line for line in cell.source.splitlines())
                for node in ast.walk(ast.parse(source)):
                    if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                        defined_before.add(node.id)
                    elif isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                        defined_before.add(node.name)
                    elif isinstance(node, (ast.Import, ast.ImportFrom)):
                        defined_before |= {(a.asname or a.name).split(".")[0] for a in node.names}


def test_autograding_scores_the_source_full_and_the_untouched_student_version_zero(course):
    root, released = course
    api = assignments.course_api(root)
    student_version = next(p for p in released if p.stem == ROUND_TRIP)
    for student, notebook in [("instructor", assignments.NOTEBOOKS / f"{ROUND_TRIP}.ipynb"), ("untouched", student_version)]:
        submitted = root / "submitted" / student / ROUND_TRIP
        submitted.mkdir(parents=True)
        shutil.copyfile(notebook, submitted / notebook.name)
        result = api.autograde(ROUND_TRIP, student, force=True, create=True)
        assert result["success"], result["error"] + result["log"]
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{root / 'gradebook.db'}") as gradebook:
        full = gradebook.find_submission(ROUND_TRIP, "instructor")
        empty = gradebook.find_submission(ROUND_TRIP, "untouched")
        assert full.max_score > 0 and full.score == full.max_score
        assert empty.score == 0 and all(grade.score == 0 for notebook in empty.notebooks for grade in notebook.grades)
    # the untouched student version failed exactly at its answer cells and test cells, nowhere else
    autograded = nbformat.read(root / "autograded" / "untouched" / ROUND_TRIP / f"{ROUND_TRIP}.ipynb", 4)
    failed = {c.metadata.get("nbgrader", {}).get("grade_id", f"cell {i}") for i, c in enumerate(autograded.cells)
              if any(o.output_type == "error" for o in c.get("outputs", []))}
    exercises = {c.metadata["nbgrader"]["grade_id"] for c in autograded.cells if "nbgrader" in c.metadata
                 and (c.metadata["nbgrader"].get("solution") or c.metadata["nbgrader"].get("grade"))}
    assert failed == exercises
    feedback = api.generate_feedback(ROUND_TRIP, "untouched", force=True)
    assert feedback["success"] and (root / "feedback" / "untouched" / ROUND_TRIP / f"{ROUND_TRIP}.html").exists()
