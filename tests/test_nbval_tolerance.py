"""The nbval output check within printed precision (conftest.py at the repository's root)."""

import subprocess
import sys
import uuid
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(name="align")
def printed_precision_align(request):
    """conftest.py's align, from the plugin pytest loaded (importing it by name would find tests/conftest.py)."""
    (plugin,) = [p for p in request.config.pluginmanager.get_plugins() if getattr(p, "__file__", None) == str(ROOT / "conftest.py")]
    return plugin.align


@pytest.mark.parametrize("stored, new, agree", [
    ("r = 0.79, 14 of 14", "r = 0.78, 14 of 14", True),      # one unit of the last digit: a rounding boundary crossed
    ("r = 0.79", "r = 0.77", False),                        # two units: the value moved
    ("first order: 0.017", "first order: 0.018", True),
    ("| 0.90 | -0.00 |", "| 0.89 | 0.00 |", True),           # in a Markdown table; a tiny value changing sign
    ("gap = 1e-07", "gap = 2e-07", True),                   # one unit of the mantissa's last digit
    ("gap = 1e-07", "gap = 1e-06", False),
    ("14 of 14 hits", "13 of 14 hits", False),              # integers are counts: exact
    ("p = 0.80", "p = 0.8", False),                         # printed differently: not a rounding difference
    ("0.79 on the cat", "0.78 on the dog", False),          # the text around the numbers must match
    ("share 95.2%", "share 95.3%", True),
])
def test_numbers_agree_within_one_unit_of_their_last_printed_digit(align, stored, new, agree):
    assert (align(stored, new) == stored) is agree


def test_nbval_uses_it(tmp_path):
    # a notebook stored with 0.79 that now prints 0.78 passes; one that prints 0.77 fails
    folder = ROOT / "build" / f"nbval-tolerance-{uuid.uuid4().hex[:8]}"  # under the repository, where conftest.py applies
    folder.mkdir(parents=True)
    try:
        for name, value in [("close", "0.78"), ("far", "0.77")]:
            cell = nbformat.v4.new_code_cell(f"# NBVAL_CHECK_OUTPUT\nprint('share', {value})", execution_count=1,
                                             outputs=[nbformat.v4.new_output("stream", name="stdout", text="share 0.79\n")])
            nbformat.write(nbformat.v4.new_notebook(cells=[cell]), folder / f"{name}.ipynb")
        done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--nbval-lax", "--nbval-current-env",
                               str(folder / "close.ipynb"), str(folder / "far.ipynb")], cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert "1 failed, 1 passed" in done.stdout, done.stdout + done.stderr
        assert "far.ipynb::Cell 0" in done.stdout
    finally:
        for path in folder.iterdir():
            path.unlink()
        folder.rmdir()
