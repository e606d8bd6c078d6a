"""Open a report in headless Chromium (selenium) and list what a reader would see broken.

Used by tests/test_report_browser.py (on hand-made pages whose faults are known) and by
tests/test_main_analysis.py (on the ``--quick`` report.html and secondary.html). Needs
Debian's ``chromium`` and ``chromium-driver``; without them the test skips with the reason,
except with ``CI=true``, where a missing browser fails.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest

WIDTH = 1280
HEIGHT = 900
#: Tallest full-page screenshot (px); longer pages are cut there.
MAX_SCREENSHOT_HEIGHT = 16000
#: Flags for Chromium as root in a container, with nothing fetched from the network.
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    f"--window-size={WIDTH},{HEIGHT}",
)

# Everything measured in the page in one script: images, tables, horizontal overflow.
_PROBE = """
// Folded tables (<details>) are opened: a reader can open them, and they must render too.
document.querySelectorAll('details').forEach(d => { d.open = true; });
const vw = document.documentElement.clientWidth;
const scrolls = (el) => {
  for (let p = el.parentElement; p; p = p.parentElement) {
    const o = getComputedStyle(p).overflowX;
    if ((o === 'auto' || o === 'scroll') && p !== document.body
        && p !== document.documentElement) return true;
  }
  return false;
};
const images = Array.from(document.images).map((im, i) => ({
  index: i, alt: im.alt, complete: im.complete, naturalWidth: im.naturalWidth,
  right: im.getBoundingClientRect().right}));
const tables = Array.from(document.querySelectorAll('table')).map((t, i) => {
  const rows = Array.from(t.querySelectorAll('tbody tr'));
  const cap = t.closest('.table-wrap') && t.closest('.table-wrap').previousElementSibling;
  const summary = t.closest('details') && t.closest('details').querySelector('summary');
  const label = summary || cap;
  return {index: i, caption: label ? label.textContent.slice(0, 80) : '',
          folded: !!t.closest('details'),
          headers: Array.from(t.querySelectorAll('thead th')).map(h => h.textContent.trim()),
          rows: rows.length, shown: rows.filter(r => r.getBoundingClientRect().height > 0).length,
          width: t.getBoundingClientRect().width,
          scrolls: t.scrollWidth > t.parentElement.clientWidth + 1};
});
const overflow = [];
for (const el of document.body.querySelectorAll('*')) {
  const r = el.getBoundingClientRect();
  if (r.width === 0 || r.height === 0) continue;
  if ((r.right > vw + 1 || r.left < -1) && !scrolls(el)) {
    overflow.push(el.tagName.toLowerCase() + (el.className ? '.' + el.className : '')
                  + ' ' + (el.textContent || el.alt || '').trim().slice(0, 60)
                  + ` [${Math.round(r.left)}, ${Math.round(r.right)}]`);
  }
}
return {vw: vw, pageWidth: document.documentElement.scrollWidth,
        height: document.documentElement.scrollHeight, images: images, tables: tables,
        overflow: overflow.slice(0, 20), title: document.title};
"""


@dataclass
class PageCheck:
    """What a reader sees of one page."""

    path: Path
    screenshot: Path
    images: list
    tables: list
    overflow: list
    console_errors: list
    page_width: int
    viewport_width: int
    problems: list = field(default_factory=list)


def find_browser() -> tuple[str, str]:
    """Paths of chromium and chromedriver, or skip (fail with ``CI=true``) naming what is missing."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    missing = [n for n, p in (("chromium", chromium), ("chromedriver", driver)) if p is None]
    try:
        import selenium  # noqa: F401 -- only to say it is missing
    except ImportError:
        missing.append("selenium (pip install -e '.[dev]')")
    if missing:
        msg = (
            f"no headless browser: {', '.join(missing)} not found "
            "(apt-get install chromium chromium-driver)"
        )
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true: {msg}")
        pytest.skip(msg)
    return chromium, driver


def open_browser():
    """A selenium Chrome driver on Debian's chromium, fresh profile, 1280 px wide."""
    # Selenium imports only here: the module is imported by tests that may skip for lack
    # of it, and pytest must still collect them.
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium, driver = find_browser()
    os.environ.setdefault("SE_AVOID_STATS", "true")  # selenium-manager must not phone home
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for f in CHROMIUM_FLAGS:
        opts.add_argument(f)
    profile = tempfile.mkdtemp(prefix="hypo-chromium-")
    opts.add_argument(f"--user-data-dir={profile}")
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    drv = webdriver.Chrome(service=Service(executable_path=driver), options=opts)
    drv.set_window_size(WIDTH, HEIGHT)
    drv._hypo_profile = profile  # removed by close_browser
    return drv


def close_browser(drv) -> None:
    profile = getattr(drv, "_hypo_profile", None)
    drv.quit()
    if profile:
        shutil.rmtree(profile, ignore_errors=True)


def check_page(drv, html: Path, screenshot: Path) -> PageCheck:
    """Load ``html`` at 1280 px, measure it, save a full-page screenshot, list problems."""
    drv.set_window_size(WIDTH, HEIGHT)
    drv.get(Path(html).resolve().as_uri())
    drv.execute_script(
        "return Promise.all(Array.from(document.images).map(i => i.decode().catch(() => 0)))"
    )
    # Full-page screenshot as a reader first sees the page (folded tables closed): grow the
    # window to the page; the viewport width stays 1280.
    height = int(drv.execute_script("return document.documentElement.scrollHeight"))
    drv.set_window_size(WIDTH, min(height + 150, MAX_SCREENSHOT_HEIGHT))
    screenshot.parent.mkdir(parents=True, exist_ok=True)
    drv.save_screenshot(str(screenshot))
    drv.set_window_size(WIDTH, HEIGHT)
    m = drv.execute_script(_PROBE)
    logs = [e for e in drv.get_log("browser") if e.get("level") == "SEVERE"]
    res = PageCheck(
        path=Path(html),
        screenshot=screenshot,
        images=m["images"],
        tables=m["tables"],
        overflow=m["overflow"],
        console_errors=[e["message"] for e in logs],
        page_width=int(m["pageWidth"]),
        viewport_width=int(m["vw"]),
    )
    for im in res.images:
        if not im["complete"] or im["naturalWidth"] == 0:
            res.problems.append(f"image {im['index']} ({im['alt']!r}) did not load")
    for t in res.tables:
        if t["rows"] == 0 or t["shown"] < t["rows"]:
            res.problems.append(
                f"table {t['index']} ({t['caption']!r}) shows {t['shown']} of {t['rows']} rows"
            )
    if res.page_width > res.viewport_width + 1:
        res.problems.append(
            f"the page is {res.page_width} px wide in a {res.viewport_width} px viewport"
        )
    res.problems += [f"overflows the page, not in a scrolling box: {o}" for o in res.overflow]
    res.problems += [f"console error: {e}" for e in res.console_errors]
    return res
