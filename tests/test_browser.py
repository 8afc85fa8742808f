"""The listening widget in a real browser: JupyterLab 4 + ipywidgets 8, driven by headless Chromium.

Needs Debian's Chromium (``apt-get install -y chromium``) and the ``playwright`` package (its
driver only; no browser download: Playwright launches ``/usr/bin/chromium``). Skipped, with that
reason, only when Chromium is absent. The screenshots (``listen_widget.png``, ``compare_widget.png``)
stay in the test's own temporary folder; the test writes nothing into ``outputs/``.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import nbformat
import numpy as np
import pandas as pd
import pytest
from browser.lab import jupyterlab
from browser.tiny_corpus import make_corpus

from sqa.listen import ratings_store

pytestmark = pytest.mark.slow

CHROMIUM = Path(os.environ.get("SQA_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
LISTENER = "browser-test"

NOTEBOOK_CELLS = [
    'from sqa.data import manifest\n'
    'from sqa.listen import clips, widgets\n'
    'df = manifest.read("data/manifest.csv")\n'
    'roots = manifest.roots("data/manifest.csv")\n'
    'predictions = {name: clips.read_predictions(f"predictions/{name}.csv") for name in ("student", "teacher")}',
    f'app = widgets.ListenApp(df, roots, "ratings/ratings.csv", predictions, listener="{LISTENER}", n_clips=3)\n'
    'app.test.show_info.value = True\n'
    'app.widget',
]


def write_notebook(root: Path) -> None:
    """The corpus, two models' predictions and a notebook that shows the app, under ``root``."""
    df, _, _ = make_corpus(root / "data")
    (root / "predictions").mkdir()
    rng = np.random.default_rng(0)
    for name, noise in (("student", 0.4), ("teacher", 0.1)):
        pd.DataFrame({"utt_id": df["utt_id"], "corpus": df["corpus"], "sys_id": df["sys_id"], "mos": df["mos"],
                      "pred": df["mos"] + rng.normal(0, noise, len(df))}).to_csv(
            root / "predictions" / f"{name}.csv", index=False)
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(src) for src in NOTEBOOK_CELLS]
    nb.metadata = {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"}}
    nbformat.write(nb, root / "listen.ipynb")


def votes_when_written(path: Path, timeout: float = 10.0) -> pd.DataFrame:
    """The ratings file's votes once it holds at least one (the kernel writes it)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.is_file():
            votes = ratings_store.read_ratings(path)
            if len(votes):
                return votes
        time.sleep(0.25)
    raise TimeoutError(f"no vote in {path} after {timeout:.0f} s")


@pytest.mark.skipif(not CHROMIUM.is_file(), reason=f"Debian's Chromium is not installed at {CHROMIUM} "
                    "(apt-get install -y chromium)")
@pytest.mark.timeout(180)
def test_listening_widget_renders_and_rates_in_jupyterlab(tmp_path):
    from playwright.sync_api import sync_playwright

    root = tmp_path / "lab"
    root.mkdir()
    write_notebook(root)
    shot, compare_shot = tmp_path / "listen_widget.png", tmp_path / "compare_widget.png"
    console: list[str] = []
    with jupyterlab(root, tmp_path / "jupyter") as lab, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1500})
            page.on("console", lambda msg: console.append(f"{msg.type}: {msg.text}"))
            page.goto(lab.open_url("listen.ipynb"))
            page.wait_for_selector(".jp-Notebook .jp-Cell .cm-content", timeout=60_000)
            page.get_by_text("| Idle").wait_for(timeout=60_000)  # the kernel is up
            page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
            page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()
            page.locator("button", has_text="5 Excellent").wait_for(timeout=90_000)
            page.locator(".widget-image img, img.widget-image").first.wait_for(timeout=30_000)

            for label in ("1 Bad", "2 Poor", "3 Fair", "4 Good", "5 Excellent", "Submit & next", "Start session"):
                assert page.locator("button", has_text=label).count() == 1, label
            for tab in ("Listen & rate", "Browse clips", "Compare models"):
                assert page.get_by_text(tab, exact=True).count() >= 1, tab
            assert page.get_by_text("Clip 1 of 3").count() == 1
            assert page.locator("audio").count() >= 1
            assert page.evaluate("() => [...document.querySelectorAll('img')].some("
                                 "i => i.naturalWidth > 300 && i.src.startsWith('blob:'))")
            assert page.locator("td", has_text="student").count() == 1  # predictions beside the label

            page.locator("button", has_text="4 Good").click()
            page.locator("button", has_text="Submit & next").click()
            page.get_by_text("Clip 2 of 3").wait_for(timeout=30_000)
            page.get_by_text("1 of 3 rated").wait_for(timeout=10_000)
            page.locator(".jp-Cell").nth(1).evaluate("cell => cell.scrollIntoView({block: 'start'})")
            page.screenshot(path=str(shot))

            page.get_by_text("Compare models", exact=True).first.click()
            page.get_by_text("clips where").wait_for(timeout=10_000)
            plays = page.locator("button", has_text="▶")
            assert plays.count() == 10  # top 10 of the 12 clips both models scored
            plays.first.click()
            page.get_by_text("#1 · ").wait_for(timeout=30_000)
            page.screenshot(path=str(compare_shot))
        finally:
            browser.close()

    votes = votes_when_written(root / "ratings" / "ratings.csv")
    assert len(votes) == 1 and votes["rating"].iloc[0] == 4 and votes["listener"].iloc[0] == LISTENER
    broken = [m for m in console if "Failed to load model class" in m or "Error displaying widget" in m]
    assert not broken, broken
    for png in (shot, compare_shot):  # kept in the test's own tmp folder, never in outputs/
        assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000
