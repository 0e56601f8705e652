"""Lab assignments by nbgrader: the student version of every notebook, and every notebook through autograding.

Untouched student versions are executed by ``nbgrader autograde`` (every cell, in nbgrader's own kernel and folder):
each must fail at its answer and test cells and nowhere else, and score zero. ``make test`` executes notebook 01's
and proves the rest statically (outside the exercises a student version is the instructor's notebook, which nbval
runs, and nothing but exercises follows the first exercise); ``make test-assignments`` (``--all-assignments``, run by
CI) executes all of them. The instructor's versions score full points: notebook 01 executed by nbgrader, every notebook
graded by nbgrader on the outputs of its one stored run (nbval re-executes those same notebooks), the written answers
graded by hand.
"""

import ast
import shutil
import sys
from pathlib import Path

import nbformat
import pytest
from nbgrader.api import Gradebook
from nbgrader.converters import Autograde

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))
import assignments  # noqa: E402

NOTEBOOKS = sorted(assignments.NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
ROUND_TRIP = "01_taylor_intuition"  # among the quickest to run: executed as the instructor's submission too
# nbgrader without its two steps that clear and execute: it grades the outputs the submission stores
STORED_OUTPUTS = {"Autograde": {
    steps: [p for p in Autograde.class_traits()[steps].default() if p.__name__ not in ("ClearOutput", "Execute")]
    for steps in ("sanitize_preprocessors", "autograde_preprocessors")}}


def nbgrader_cells(nb, *, solution=None, grade=None):
    """The cells with nbgrader metadata, filtered on being a solution and/or a grade cell."""
    return [c for c in nb.cells if "nbgrader" in c.metadata
            and (solution is None or bool(c.metadata["nbgrader"].get("solution")) == solution)
            and (grade is None or bool(c.metadata["nbgrader"].get("grade")) == grade)]


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


def submit(root: Path, student: str, notebook: Path) -> None:
    submitted = root / "submitted" / student / notebook.stem
    submitted.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(notebook, submitted / notebook.name)


def autograde(api, student: str, names) -> None:
    for name in names:
        result = api.autograde(name, student, force=True, create=True)
        assert result["success"], f"{name}, {student}: " + result["error"] + result["log"]


@pytest.fixture(scope="module")
def course(tmp_path_factory):
    root = tmp_path_factory.mktemp("course")
    return root, assignments.generate(root)


@pytest.fixture(scope="module")
def executed(request) -> list[Path]:
    return NOTEBOOKS if request.config.getoption("--all-assignments") else [assignments.NOTEBOOKS / f"{ROUND_TRIP}.ipynb"]


@pytest.fixture(scope="module")
def untouched(course, executed):
    """The untouched student versions of the executed notebooks, autograded: nbgrader runs each from top to bottom."""
    root, released = course
    chosen = [p for p in released if p.stem in {n.stem for n in executed}]
    for student_version in chosen:
        submit(root, "untouched", student_version)
    autograde(assignments.course_api(root), "untouched", [p.stem for p in chosen])
    return root


def test_every_notebook_becomes_a_student_version_without_answers(course):
    root, released = course
    assert [p.name for p in released] == [p.name for p in NOTEBOOKS]
    assert "c.Execute.timeout = 300" in (root / "nbgrader_config.py").read_text()  # what `nbgrader autograde` run from root reads
    for source_path, student_path in zip(NOTEBOOKS, released):
        source, student = nbformat.read(source_path, 4), nbformat.read(student_path, 4)
        text = "\n".join(c.source for c in student.cells)
        assert "BEGIN SOLUTION" not in text and "BEGIN HIDDEN TESTS" not in text
        split = [split_lines(c) for c in source.cells if c.cell_type == "code"]
        secret = set().union(*(h for h, _ in split)) - set().union(*(v for _, v in split))  # lines only the answers hold
        assert secret and not [line for line in secret if line in text], f"{student_path.name} shows solution or hidden-test lines"
        written = [line.strip() for c in nbgrader_cells(source, solution=True) if c.cell_type == "markdown" for line in c.source.splitlines()]
        assert not [line for line in written if line and line in text], f"{student_path.name} shows a line of a written answer"
        assert not any(c.get("outputs") for c in student.cells if c.cell_type == "code")
        answers = nbgrader_cells(student, solution=True)
        assert answers and all(("raise NotImplementedError()" if c.cell_type == "code" else "YOUR ANSWER HERE") in c.source for c in answers)
        assert not [c for c in answers if c.metadata.get("jupyter", {}).get("source_hidden")], f"{student_path.name}: an answer cell is collapsed"
        points = sum(c.metadata["nbgrader"]["points"] for c in nbgrader_cells(student, grade=True))
        assert points == sum(c.metadata["nbgrader"]["points"] for c in nbgrader_cells(source, grade=True)) and f"*Points: {points} in all" in text


def test_each_visible_check_needs_what_its_answer_defines():
    # the student version must fail at every test cell: its visible check asks for names only the answer cell defines
    for path in NOTEBOOKS:
        nb = nbformat.read(path, 4)
        defined_before: set[str] = set()
        for i, cell in enumerate(nb.cells):
            grading = cell.metadata.get("nbgrader", {})
            if grading.get("grade") and not grading.get("solution"):
                visible = cell.source.split("### BEGIN HIDDEN TESTS")[0]
                asked = {node.value for node in ast.walk(ast.parse(visible)) if isinstance(node, ast.Constant) and isinstance(node.value, str)
                         and node.value.isidentifier()}
                answer = nb.cells[i - 1]
                assert asked, f"{path.name}: {grading['grade_id']} has no visible check"
                assert asked.isdisjoint(defined_before), f"{path.name}: {sorted(asked & defined_before)} exist before the answer"
                assert all(name in answer.source for name in asked)
            elif cell.cell_type == "code" and not grading.get("solution"):
                source = "\n".join("" if line.lstrip().startswith(("%", "!")) else line for line in cell.source.splitlines())
                for node in ast.walk(ast.parse(source)):
                    if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                        defined_before.add(node.id)
                    elif isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                        defined_before.add(node.name)
                    elif isinstance(node, (ast.Import, ast.ImportFrom)):
                        defined_before |= {(a.asname or a.name).split(".")[0] for a in node.names}


def test_outside_the_exercises_a_student_version_is_the_instructors_notebook(course):
    # so it runs as the instructor's does under nbval up to the first exercise; after it come only exercises and prose
    _, released = course
    for source_path, student_path in zip(NOTEBOOKS, released):
        source, student = nbformat.read(source_path, 4), nbformat.read(student_path, 4)
        assert [(c.cell_type, c.source) for c in source.cells if "nbgrader" not in c.metadata] == \
               [(c.cell_type, c.source) for c in student.cells if "nbgrader" not in c.metadata]
        first = next(i for i, c in enumerate(student.cells) if "nbgrader" in c.metadata)
        after = [c for c in student.cells[first:] if c.cell_type == "code" and "nbgrader" not in c.metadata]
        assert not after, f"{student_path.name}: a code cell among the exercises, which a student's stub could break"


def test_untouched_student_versions_fail_exactly_at_their_exercises(untouched, executed):
    for path in executed:
        autograded = nbformat.read(untouched / "autograded" / "untouched" / path.stem / path.name, 4)
        failed = {c.metadata.get("nbgrader", {}).get("grade_id", f"cell {i}") for i, c in enumerate(autograded.cells)
                  if any(o.output_type == "error" for o in c.get("outputs", []))}
        exercises = {c.metadata["nbgrader"]["grade_id"] for c in nbgrader_cells(autograded) if c.cell_type == "code"
                     and (c.metadata["nbgrader"].get("solution") or c.metadata["nbgrader"].get("grade"))}
        assert failed == exercises, f"{path.stem}: failed at {sorted(failed - exercises)}, passed at {sorted(exercises - failed)}"


def test_untouched_student_versions_score_zero_with_nothing_to_grade_by_hand(untouched, executed):
    with Gradebook(f"sqlite:///{untouched / 'gradebook.db'}") as gradebook:
        for path in executed:
            submission = gradebook.find_submission(path.stem, "untouched")
            grades = [grade for notebook in submission.notebooks for grade in notebook.grades]
            assert submission.max_score > 0 and submission.score == 0
            assert grades and all(grade.score == 0 and not grade.needs_manual_grade for grade in grades), path.stem


def test_feedback_for_a_student(untouched):
    api = assignments.course_api(untouched)
    feedback = api.generate_feedback(ROUND_TRIP, "untouched", force=True)
    assert feedback["success"], feedback["error"] + feedback["log"]
    report = (untouched / "feedback" / "untouched" / ROUND_TRIP / f"{ROUND_TRIP}.html").read_text()
    assert "NotImplementedError" in report  # the student sees where the work is missing


def grade_written_answers_in_full(root: Path, student: str, names) -> None:
    """What an instructor does in formgrader: give each written answer its points."""
    with Gradebook(f"sqlite:///{root / 'gradebook.db'}") as gradebook:
        for name in names:
            for notebook in gradebook.find_submission(name, student).notebooks:
                for grade in notebook.grades:
                    if grade.needs_manual_grade:
                        grade.manual_score = grade.max_score
            gradebook.db.commit()


def assert_full_marks(root: Path, student: str, names) -> None:
    """Every autograded test cell at full points, every written answer waiting for the instructor; then, once
    graded by hand, the whole submission at the points the notebook states."""
    sources = {name: nbformat.read(assignments.NOTEBOOKS / f"{name}.ipynb", 4) for name in names}
    with Gradebook(f"sqlite:///{root / 'gradebook.db'}") as gradebook:
        for name, source in sources.items():
            grades = [g for nb in gradebook.find_submission(name, student).notebooks for g in nb.grades]
            auto = [g for g in grades if g.cell.cell_type == "code"]
            written = [g for g in grades if g.cell.cell_type == "markdown"]
            assert len(auto) == len([c for c in nbgrader_cells(source, grade=True) if c.cell_type == "code"]) > 0, name
            assert len(written) == len([c for c in nbgrader_cells(source, grade=True) if c.cell_type == "markdown"]), name
            assert all(g.auto_score == g.max_score and not g.needs_manual_grade for g in auto), name
            assert all(g.auto_score is None and g.needs_manual_grade for g in written), name
    grade_written_answers_in_full(root, student, names)
    with Gradebook(f"sqlite:///{root / 'gradebook.db'}") as gradebook:
        for name in names:
            submission = gradebook.find_submission(name, student)
            text = "\n".join(c.source for c in sources[name].cells)
            assert f"*Points: {submission.max_score:.0f} in all" in text and submission.score == submission.max_score, name


def test_the_instructors_version_autograded_by_nbgrader_scores_full_points(course):
    root, _ = course
    submit(root, "instructor", assignments.NOTEBOOKS / f"{ROUND_TRIP}.ipynb")
    autograde(assignments.course_api(root), "instructor", [ROUND_TRIP])
    assert_full_marks(root, "instructor", [ROUND_TRIP])


def test_every_instructors_version_scores_full_points_on_its_stored_run(course):
    root, _ = course
    for path in NOTEBOOKS:
        submit(root, "stored-run", path)
    autograde(assignments.course_api(root, STORED_OUTPUTS), "stored-run", [p.stem for p in NOTEBOOKS])
    for path in NOTEBOOKS:  # graded as stored, not run again: the outputs are those of the stored run
        graded = nbformat.read(root / "autograded" / "stored-run" / path.stem / path.name, 4)
        stored = nbformat.read(path, 4)
        assert [(c.execution_count, c.outputs) for c in graded.cells if c.cell_type == "code"] == \
               [(c.execution_count, c.outputs) for c in stored.cells if c.cell_type == "code"], path.stem
    assert_full_marks(root, "stored-run", [p.stem for p in NOTEBOOKS])
