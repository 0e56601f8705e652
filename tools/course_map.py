"""The README's course map, made from the stored notebooks: ``python tools/course_map.py`` (``--check`` only compares).

For each notebook: a thumbnail of its key figure (the first figure it stores), written to
``docs/thumbnails/<notebook>.jpg``; the idea and the measurement (:data:`COURSE`); its run time, from the
timestamps its one top-to-bottom run stored (on the 2-core machine that ran it); and, where the paper gives a
figure, the paper's figure beside ours, both read from the "paper vs ours" table the notebook's run computed
(:data:`PAPER_ROWS` names the rows). The table replaces the README's text between the two ``course-map`` markers.
"""

from __future__ import annotations

import base64
import io
import sys
from datetime import datetime
from pathlib import Path

import nbformat
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"
THUMBNAILS = REPO / "docs" / "thumbnails"
START, END = "<!-- course-map:start -->", "<!-- course-map:end -->"
THUMBNAIL_WIDTH = 220

# notebook -> (the idea, the measurement)
COURSE = {
    "00_start_here": ("Grad-CAM in three lines on a real photo; map of the course",
                      "top-1 class and its map; each class's map share inside its own object on a two-object photo"),
    "01_taylor_intuition": ("first-order Taylor expansion; $\\alpha^c_k$ as the average slope of $y^c$ along channel $k$",
                            "finite differences vs gradients; predicted vs actual score change; average slope vs full gradient"),
    "02_cam_equivalence": ("on GAP + linear nets $\\alpha^c_k = w^c_k / Z$: Grad-CAM = CAM / Z",
                           "max abs error at float round-off; an MLP head breaks CAM, not Grad-CAM; the head on held-out layouts and photos"),
    "03_gradcam_from_hooks": ("capture $A$ and $\\partial y/\\partial A$ with hooks, by hand",
                              "hand-made map == package map; class discrimination; layer choice over 4 photos; an explorer widget"),
    "04_relu_and_counterfactuals": ("why the ReLU; counterfactual maps",
                                    "deletion on the logit $y^c$ ($p(c)$ beside it) against random regions of the same size, anywhere and inside the object's box, n = photos; deletion curves"),
    "05_guided_gradcam": ("guided backprop, deconvnet, fusion with Grad-CAM", "class discrimination; sanity check under randomisation"),
    "06_gradcam_plus_plus": ("Grad-CAM++ derived; Smooth Grad-CAM++, three ways to average",
                             "equal-size instances with distractors; negative weights on signed layers; cost of smoothing"),
    "07_captioning": ("explain each word of two captioners, show and tell (the paper's kind) and soft attention, with Grad-CAM and HiResCAM",
                      "word maps against a random-object pointer and an attribute detector, by shared attribute and object count; "
                      "removal of the maps' top regions; attention weights beside; a contrast between two words"),
    "08_vqa": ("explain the answer of a VQA model (CNN + GRU, product fusion, no attention) with Grad-CAM and HiResCAM",
               "hit rates and shares against a random-object pointer and an attribute detector, by type, shared attribute and "
               "object count, clustered SEs; left_of at chance and why; contrast maps for counting"),
    "09_bias_doctor_nurse": ("how Grad-CAM exposes a dataset bias: the paper's doctor/nurse study on drawn people",
                             "biased vs balanced training: accuracy per cell, map shares on the head and the tool against a map over the person, "
                             "at two resolutions and within one map cell; five seeds per setting, paired by seed; the sweep's trend tested within seeds"),
    "10_evaluating_explanations": ("faithfulness: does the map order pixels as occlusion does? Whole photos and compositions apart",
                                   "Spearman's rho with occlusion at two windows, against maps that ignore the object and flat maps that know it; "
                                   "an equivalence test for \"of the paper's size\"; deletion and insertion on $y^c$; cost"),
    "11_localisation": ("localisation, each score beside the baseline that knows most",
                        "a pointing game that can fail (two tiles, binomial); pointing against a random-object pointer; box accuracy swept "
                        "over thresholds (MaxBoxAcc, validation-chosen) against a perfect map's ceiling; top-1 vs class-given error; "
                        "Grad-CAM++ on instances of different sizes"),
    "12_attacks_and_failures": ("does the map survive an adversarial attack? And the network's own mistakes",
                                "targeted PGD on 8-bit images over four budgets; the map's share on the object as an equivalence test "
                                "beside noise; $y^c$ and $y^t$ beside $p(c)$; look-alikes against chance; the shapes classifier's misses"),
    "13_metrics_and_sanity_checks": ("every method the engine has through the metrics of papers and libraries, each beside a control",
                                     "Average Drop and Increase in Confidence against the map's coverage; ROAD (MoRF / LeRF); occlusion "
                                     "by the scene's own background per label kind; data randomisation with a true-label control"),
    "14_shortcuts_and_interventions": ("does the map show what the model uses? Interventions on the drawings; learned pooling; a badge on the tool's spot",
                                       "the drop of $y^c$ when the hair is swapped or the tool painted out; per-person rank correlation of map "
                                       "shares with those drops against a map over the person; Grad-CAM vs HiResCAM under learned pooling; "
                                       "an equivalence test of two models' maps beside the intervention that separates them"),
}


# notebook -> the rows of its computed "paper vs ours" table that the course map quotes
PAPER_ROWS = {
    "07_captioning": ["each word's map points at its object"],
    "08_vqa": ["evidence that the map localises"],
    "09_bias_doctor_nurse": ["biased model, test accuracy", "balanced model, test accuracy"],
    "10_evaluating_explanations": ["rank correlation with occlusion, Grad-CAM"],
    "11_localisation": ["pointing game, Grad-CAM", "localisation error (IoU < 0.5), Grad-CAM"],
    "12_attacks_and_failures": ["the map of the true class still finds the object"],
    "13_metrics_and_sanity_checks": ["Average Drop, Grad-CAM", "Average Drop, Grad-CAM++"],
}


def notebooks() -> list[Path]:
    return sorted((REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def key_figure(nb: nbformat.NotebookNode) -> bytes | None:
    """The first figure the notebook stores, as a JPEG thumbnail THUMBNAIL_WIDTH pixels wide."""
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            for mime in ("image/png", "image/jpeg"):
                if mime in output.get("data", {}):
                    image = Image.open(io.BytesIO(base64.b64decode(output["data"][mime]))).convert("RGB")
                    height = round(image.height * THUMBNAIL_WIDTH / image.width)
                    buffer = io.BytesIO()
                    image.resize((THUMBNAIL_WIDTH, height), Image.Resampling.LANCZOS).save(buffer, "JPEG", quality=80)
                    return buffer.getvalue()
    return None


def paper_vs_ours(nb: nbformat.NotebookNode, rows: list[str]) -> str:
    """The named rows of the notebook's stored "paper vs ours" table (a Markdown output whose header is
    ``| | paper ... | ours |``, optionally with a last column ``comparable? |``), as "row: paper P; ours O" lines,
    each followed by whether the two are comparable when the table says."""
    tables = [output["data"]["text/markdown"] for cell in nb.cells for output in cell.get("outputs", [])
              if "text/markdown" in output.get("data", {}) and output["data"]["text/markdown"].startswith("| | paper")]
    if len(tables) != 1:
        raise ValueError(f"expected one stored 'paper vs ours' table, found {len(tables)}")
    lines = tables[0].splitlines()
    width = 4 if lines[0].rstrip().endswith("| comparable? |") else 3
    cells = {}
    for line in lines[2:]:
        parts = [part.strip() for part in line.strip().removeprefix("|").removesuffix("|").split(" | ")]
        if len(parts) != width or parts[0] in cells:
            layout = "| label | paper | ours |" + (" comparable? |" if width == 4 else "")
            raise ValueError(f"a 'paper vs ours' row must be '{layout}' with a label of its own: {line!r}")
        cells[parts[0]] = parts[1:]
    unknown = [row for row in rows if row not in cells]
    if unknown:
        raise ValueError(f"the table has no rows {unknown}; its rows are {list(cells)}")
    return "<br>".join(f"{row}: paper {cells[row][0]}; ours {cells[row][1]}" + (f" (comparable? {cells[row][2]})" if width == 4 else "")
                       for row in rows)


def run_seconds(nb: nbformat.NotebookNode) -> float:
    """From the first code cell's start to the last one's reply, as the stored run recorded them."""
    stamps = [cell.metadata.get("execution", {}) for cell in nb.cells if cell.cell_type == "code"]
    if not stamps or not stamps[0] or not stamps[-1]:
        raise ValueError("the notebook stores no execution timestamps: run it with nbconvert --execute (nbclient records them)")
    start = datetime.fromisoformat(stamps[0]["iopub.execute_input"].replace("Z", "+00:00"))
    end = datetime.fromisoformat(stamps[-1]["shell.execute_reply"].replace("Z", "+00:00"))
    return (end - start).total_seconds()


def build() -> tuple[str, dict[Path, bytes]]:
    """The README with a fresh course map, and the thumbnails it links."""
    missing = sorted({p.stem for p in notebooks()} ^ set(COURSE))
    if missing:
        raise ValueError(f"COURSE and notebooks/ disagree on {missing}")
    rows = ["| # | key figure | notebook | the idea | the measurement | run time | paper vs ours |", "|---|---|---|---|---|---:|---|"]
    thumbnails = {}
    for path in notebooks():
        nb = nbformat.read(path, as_version=4)
        idea, measurement = COURSE[path.stem]
        thumbnail = key_figure(nb)
        picture = ""
        if thumbnail is not None:
            target = THUMBNAILS / f"{path.stem}.jpg"
            thumbnails[target] = thumbnail
            picture = f"![{path.stem}]({target.relative_to(REPO).as_posix()})"
        compared = paper_vs_ours(nb, PAPER_ROWS[path.stem]) if path.stem in PAPER_ROWS else "-"
        rows.append(f"| {path.stem[:2]} | {picture} | [`{path.stem}`](notebooks/{path.name}) | {idea} | {measurement} | "
                    f"{run_seconds(nb):.0f} s | {compared} |")
    text = README.read_text()
    if START not in text or END not in text:
        raise ValueError(f"README.md lacks the markers {START} and {END}")
    before, rest = text.split(START, 1)
    after = rest.split(END, 1)[1]
    return before + START + "\n" + "\n".join(rows) + "\n" + END + after, thumbnails


def main() -> None:
    readme, thumbnails = build()
    if "--check" in sys.argv[1:]:
        stale = [p for p, data in thumbnails.items() if not p.exists() or p.read_bytes() != data]
        if readme != README.read_text() or stale:
            sys.exit(f"the course map is stale ({'README' if readme != README.read_text() else ''} {[p.name for p in stale]}): run python tools/course_map.py")
        return
    THUMBNAILS.mkdir(parents=True, exist_ok=True)
    for path, data in thumbnails.items():
        path.write_bytes(data)
    README.write_text(readme)
    print(f"README.md course map and {len(thumbnails)} thumbnails in {THUMBNAILS.relative_to(REPO)}")


if __name__ == "__main__":
    main()
