"""The notebooks' structure: numbered names, exercises as nbgrader pairs, solutions collapsed for self-learners."""

import re
from pathlib import Path

import nbformat
import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("[0-9][0-9]_*.ipynb"))


@pytest.fixture(params=NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def notebook(request):
    return request.param, nbformat.read(request.param, as_version=4)


def test_names_are_numbered_snake_case():
    assert [p.name[:2] for p in NOTEBOOKS] == [f"{i:02d}" for i in range(len(NOTEBOOKS))]
    assert all(re.fullmatch(r"\d\d_[a-z0-9_]+\.ipynb", p.name) for p in NOTEBOOKS)


def test_exercises_are_nbgrader_pairs_with_collapsed_solutions(notebook):
    path, nb = notebook
    cells = nb.cells
    answers = [i for i, c in enumerate(cells) if c.metadata.get("nbgrader", {}).get("solution")]
    assert answers, f"{path.name} has no exercise"
    ids = [c.metadata["nbgrader"]["grade_id"] for c in cells if "nbgrader" in c.metadata]
    assert len(ids) == len(set(ids)), f"{path.name}: grade_ids repeat"
    for i in answers:
        answer = cells[i]
        grade_id = answer.metadata["nbgrader"]["grade_id"]
        assert answer.metadata.get("jupyter", {}).get("source_hidden") is True, f"{path.name}: solution {grade_id} is not collapsed"
        if answer.cell_type == "markdown":  # a written answer, graded by hand: the whole cell is the solution
            assert answer.metadata["nbgrader"].get("grade") and answer.metadata["nbgrader"]["points"] > 0 and grade_id.endswith("-written")
            assert "Written answer to" in cells[i - 1].source and "graded by hand" in cells[i - 1].source, f"{path.name}: {grade_id} has no question above it"
            continue
        test = cells[i + 1]
        assert answer.cell_type == "code" and "### BEGIN SOLUTION" in answer.source and "### END SOLUTION" in answer.source
        grading = test.metadata.get("nbgrader", {})
        assert grading.get("grade") and grading.get("locked") and grading.get("points", 0) > 0 and not grading.get("solution")
        assert grading["grade_id"] == grade_id + "-test"
        assert "assert" in test.source and "### BEGIN SOLUTION" not in test.source
    for c in cells:
        if "### BEGIN SOLUTION" in c.source:
            assert c.metadata.get("nbgrader", {}).get("solution"), f"{path.name}: a solution region outside a solution cell"
    assert not [c for c in cells if c.cell_type == "markdown" and re.search(r"\bSolution to \d", c.source)], \
        f"{path.name}: a solution in a plain markdown cell would reach the student version"


def test_points_stated_in_the_notebook_match_its_cells(notebook):
    path, nb = notebook
    graded = [c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade")]
    auto = sum(c.metadata["nbgrader"]["points"] for c in graded if not c.metadata["nbgrader"].get("solution"))
    written = sum(c.metadata["nbgrader"]["points"] for c in graded if c.metadata["nbgrader"].get("solution"))
    text = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    stated = re.search(r"\*Points: (\d+) in all(?:: (\d+) autograded.*? and (\d+) for written answers)?", text)
    assert stated, f"{path.name} does not state its points"
    assert (int(stated[1]), int(stated[2] or stated[1]), int(stated[3] or 0)) == (auto + written, auto, written)


def test_stored_from_one_top_to_bottom_run(notebook):
    path, nb = notebook
    counts = [c.execution_count for c in nb.cells if c.cell_type == "code"]
    assert counts == list(range(1, len(counts) + 1)), f"{path.name} was not stored from one run in a fresh kernel"


def test_progress_bars_are_widgets_in_jupyterlab(notebook):
    path, nb = notebook
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    assert not re.search(r"^\s*(from tqdm import|import tqdm\s*$)", code, re.M), f"{path.name}: use tqdm.auto (a widget in JupyterLab, text elsewhere)"


@pytest.fixture
def course_map():
    import sys

    sys.path.insert(0, str(NOTEBOOKS[0].parent.parent / "tools"))
    import course_map

    return course_map


def test_readme_course_map_is_current(course_map):
    readme, thumbnails = course_map.build()
    assert readme == course_map.README.read_text(), "the README's course map is stale: run python tools/course_map.py"
    for path, data in thumbnails.items():
        assert path.exists() and path.read_bytes() == data, f"{path.name} is stale: run python tools/course_map.py"


def test_course_map_quotes_a_paper_vs_ours_table_row_by_row(course_map):
    def table(*rows):
        output = nbformat.v4.new_output("display_data", data={"text/markdown": "| | paper | ours |\n|---|---|---|\n" + "\n".join(rows)})
        return nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("", outputs=[output])])

    nb = table("| accuracy | 82 % | 74.7% |", "| pointing | 70.58 % | 65.8% (500 scenes) |")
    assert course_map.paper_vs_ours(nb, ["pointing", "accuracy"]) == "pointing: paper 70.58 %; ours 65.8% (500 scenes)<br>accuracy: paper 82 %; ours 74.7%"
    with pytest.raises(ValueError, match="no rows \\['recall'\\]"):
        course_map.paper_vs_ours(nb, ["recall"])
    with pytest.raises(ValueError, match="label of its own"):
        course_map.paper_vs_ours(table("| accuracy | 82 % | 74.7% |", "| accuracy | 90 % | 93.0% |"), ["accuracy"])
    with pytest.raises(ValueError, match="label of its own"):
        course_map.paper_vs_ours(table("| accuracy | 82 % | a | b |"), ["accuracy"])
    # a table with a "comparable?" column: quoted with each row, and every row must have one
    output = nbformat.v4.new_output("display_data", data={"text/markdown": "| | paper | ours | comparable? |\n|---|---|---|---|\n"
                                                                           "| pointing | 70.58 % | 65.8% | no: other data |\n| accuracy | 82 % | 74.7% |"})
    wide = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("", outputs=[output])])
    with pytest.raises(ValueError, match="comparable\\? \\|' with a label of its own"):
        course_map.paper_vs_ours(wide, ["pointing"])
    output["data"]["text/markdown"] = output["data"]["text/markdown"].replace("74.7% |", "74.7% | yes |")
    assert course_map.paper_vs_ours(wide, ["pointing"]) == "pointing: paper 70.58 %; ours 65.8% (comparable? no: other data)"
