"""The course in a real browser: `make lab`, headless Chromium (Debian's), every cell of notebooks 00 and 03.

Chromium is driven by Playwright with ``executable_path``: no browser is ever downloaded. Where Chromium is
missing the test skips, saying how to enable it, except under CI (``CI=true``), where that is a failure.
Screenshots go to ``build/screenshots/`` (not committed).
"""

import os
import shutil
from pathlib import Path

import pytest

from test_lab import running_lab

ROOT = Path(__file__).resolve().parent.parent
SCREENSHOTS = ROOT / "build" / "screenshots"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

if CHROMIUM is None:
    if os.environ.get("CI") == "true":
        raise RuntimeError("Chromium is missing on CI: .ci/run installs Debian's chromium package before `make test`")
    pytest.skip("no Chromium here: `apt-get install chromium` (Debian/Ubuntu) enables the browser test", allow_module_level=True)

sync_api = pytest.importorskip("playwright.sync_api")

CELL_STATES = """() => {
    const panel = window.jupyterapp.shell.currentWidget;
    const cells = panel.content.model.cells;
    const states = [];
    for (let i = 0; i < cells.length; i++) {
        const cell = cells.get(i);
        if (cell.type !== "code") continue;
        const outputs = cell.outputs.toJSON();
        states.push({count: cell.executionCount, errors: outputs.filter(o => o.output_type === "error").map(o => o.ename + ": " + o.evalue)});
    }
    const kernel = panel.sessionContext.session && panel.sessionContext.session.kernel;
    return {states, busy: !kernel || kernel.status !== "idle"};
}"""


def open_notebook(page, base: str, token: str, name: str) -> None:
    """Open a notebook in JupyterLab and wait for its kernel to be idle."""
    page.goto(f"{base}/lab/tree/{name}?token={token}")
    page.wait_for_function("() => window.jupyterapp && window.jupyterapp.shell.currentWidget && "
                           "window.jupyterapp.shell.currentWidget.sessionContext && window.jupyterapp.shell.currentWidget.sessionContext.session && "
                           "window.jupyterapp.shell.currentWidget.sessionContext.session.kernel && "
                           "window.jupyterapp.shell.currentWidget.sessionContext.session.kernel.status === 'idle'", timeout=120_000)


def run_all(page, timeout_s: int = 240) -> list[dict]:
    """Run every cell of the open notebook in its fresh kernel, wait until every code cell has run; the cells' states."""
    # the kernel was just started for this page: clearing the stored outputs, then running all, is one run in a fresh kernel
    page.evaluate("() => window.jupyterapp.commands.execute('notebook:clear-all-cell-outputs')")
    page.wait_for_function(f"() => ({CELL_STATES})().states.every(c => c.count === null)", timeout=30_000)
    page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")
    page.wait_for_function(f"() => {{ const s = ({CELL_STATES})(); return !s.busy && s.states.every(c => c.count !== null) }}",
                           timeout=timeout_s * 1000, polling=1000)
    return page.evaluate(CELL_STATES)["states"]


def rendered_images(page) -> int:
    return page.evaluate("() => [...document.querySelectorAll('.jp-OutputArea-output img')].filter(i => i.complete && i.naturalWidth > 0).length")


def show_explorer(page, when: str):
    """Bring the explorer's cell into view (JupyterLab renders only the cells near the viewport) until its widget shows."""
    explorer = page.locator(".widget-interact").first
    for _ in range(24):
        page.evaluate("""() => { const notebook = window.jupyterapp.shell.currentWidget.content;
            const index = notebook.widgets.findIndex(cell => cell.model.sharedModel.getSource().includes("gradcam_explorer("));
            notebook.activeCellIndex = index; return notebook.scrollToItem(index, "center"); }""")
        try:
            explorer.wait_for(timeout=5_000)
            explorer.scroll_into_view_if_needed()
            return explorer
        except sync_api.TimeoutError:
            continue
    page.screenshot(path=str(SCREENSHOTS / f"03_explorer_{when}_missing.png"))
    raise AssertionError(f"the {when} explorer widget did not render within 2 minutes (screenshot: build/screenshots/03_explorer_{when}_missing.png)")


@pytest.fixture
def lab_server(tmp_path):
    # a copy of the notebooks: JupyterLab autosaves, and the course's stored notebooks must not change under a test
    copy = tmp_path / "notebooks"
    shutil.copytree(ROOT / "notebooks", copy, ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    with running_lab(tmp_path, copy) as server:
        yield server


@pytest.fixture
def browser_page():
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        try:
            yield page
        finally:
            browser.close()


def test_notebook_00_runs_in_jupyterlab_with_its_figures(lab_server, browser_page):
    base, token = lab_server
    open_notebook(browser_page, base, token, "00_start_here.ipynb")
    states = run_all(browser_page)
    assert [c["count"] for c in states] == list(range(1, len(states) + 1))
    assert not [c["errors"] for c in states if c["errors"]]
    assert rendered_images(browser_page) >= 3
    assert browser_page.locator(".jp-Notification-Toast, .Toastify__toast").count() == 0  # no news pop-up over the figures
    browser_page.screenshot(path=str(SCREENSHOTS / "00_start_here.png"), full_page=False)


def test_notebook_03_explorer_is_a_live_widget(lab_server, browser_page):
    base, token = lab_server
    page = browser_page
    open_notebook(page, base, token, "03_gradcam_from_hooks.ipynb")
    explorer = show_explorer(page, "stored")  # the saved notebook shows the widget from its stored state, before any run
    page.wait_for_timeout(1000)  # let the scrolled notebook paint before the screenshot
    page.screenshot(path=str(SCREENSHOTS / "03_explorer_stored.png"))
    states = run_all(page)
    assert not [c["errors"] for c in states if c["errors"]]
    explorer = show_explorer(page, "live")
    photo = explorer.locator("select").first
    output_image = explorer.locator(".jp-OutputArea-output img, .widget-output img").first
    output_image.wait_for(timeout=60_000)
    before = output_image.get_attribute("src")
    page.screenshot(path=str(SCREENSHOTS / "03_explorer_before.png"))
    options = photo.locator("option").all_inner_texts()
    photo.select_option(next(o for o in options if o != photo.input_value()))
    page.wait_for_function("(before) => { const i = document.querySelector('.widget-interact .jp-OutputArea-output img, .widget-interact .widget-output img');"
                           " return i && i.getAttribute('src') !== before && i.naturalWidth > 0 }", arg=before, timeout=60_000)
    page.screenshot(path=str(SCREENSHOTS / "03_explorer_after.png"))
    assert explorer.locator("text=interactive(children=").count() == 0  # a widget, not its text fallback
