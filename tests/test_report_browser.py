"""The browser check itself, on small pages whose faults are known (headless Chromium).

The --quick report.html and secondary.html of the main analysis are checked in
tests/test_main_analysis.py with the same helper (tests/browser.py).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from hypo.report.writer import Figure, Section, Table, write_report
from tests.browser import check_page, close_browser, open_browser


@pytest.fixture(scope="module")
def browser():
    drv = open_browser()
    yield drv
    close_browser(drv)


def _report(tmp_path, intro=(), embed=True, wide=False):
    (tmp_path / "figures").mkdir(exist_ok=True)
    Image.fromarray((np.indices((60, 90)).sum(0) % 255).astype(np.uint8)).save(
        tmp_path / "figures" / "f.png"
    )
    df = pd.DataFrame({"hypothesis": ["H1", "H2", "H3"], "OR [95% CI]": ["1.2 [0.9, 1.6]"] * 3})
    if wide:  # 40 columns: wider than the page, but inside the table's scrolling box
        df = pd.concat([df] + [df.rename(columns=lambda c, i=i: f"{c} {i}") for i in range(20)], axis=1)  # fmt: skip
    sections = [Section("Results", [Table(df, "Every test"), Figure("figures/f.png", "A figure")])]
    return write_report(tmp_path, sections, title="t", intro=intro, embed_figures=embed)["html"]


def test_a_good_page_passes_and_leaves_a_screenshot(browser, tmp_path):
    html = _report(tmp_path, wide=True)
    res = check_page(browser, html, tmp_path / "shot.png")
    assert res.problems == []
    assert [im["naturalWidth"] for im in res.images] == [90]
    assert [t["rows"] for t in res.tables] == [3] and res.tables[0]["scrolls"]
    assert res.viewport_width <= 1280 and res.page_width <= res.viewport_width
    with Image.open(res.screenshot) as im:
        assert im.size[0] == 1280 and im.size[1] > 300


def test_a_broken_image_is_caught(browser, tmp_path):
    html = _report(tmp_path, embed=False)
    (tmp_path / "figures" / "f.png").unlink()
    res = check_page(browser, html, tmp_path / "shot.png")
    assert any("image 0" in p and "did not load" in p for p in res.problems)
    assert any("console error" in p for p in res.problems)


def test_text_wider_than_the_page_is_caught(browser, tmp_path):
    html = _report(tmp_path, intro=["x" * 600])
    res = check_page(browser, html, tmp_path / "shot.png")
    assert any("px wide in a" in p for p in res.problems)
