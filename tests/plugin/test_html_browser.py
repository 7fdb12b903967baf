"""report.html in a real browser (Debian's headless Chromium through playwright).

Skipped only when Chromium is absent and DEBUG_REQUIRE_BROWSER is unset; CI sets it, so there a missing
browser fails instead of skipping.
"""

from __future__ import annotations

import base64
import contextlib
import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from debug._util.heatmap import heatmap_svg
from debug.plugin.html import render_html

sys.path.insert(0, str(Path(__file__).parent))
from plugin.test_results import PAYLOAD, sample_results  # noqa: E402

CHROMIUM = os.environ.get("DEBUG_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
ARGS = [
    "--no-sandbox",
    "--headless",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def _need_browser() -> None:
    required = bool(os.environ.get("DEBUG_REQUIRE_BROWSER"))
    if not Path(CHROMIUM).exists():
        if required:
            pytest.fail(
                f"DEBUG_REQUIRE_BROWSER is set but Chromium is missing at {CHROMIUM}; "
                "apt-get install -y chromium (make browser)"
            )
        pytest.skip(
            "Chromium is not installed (apt-get install -y chromium); set DEBUG_REQUIRE_BROWSER to fail"
        )
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        if required:
            pytest.fail("DEBUG_REQUIRE_BROWSER is set but playwright is missing; pip install -e '.[dev]'")
        pytest.skip("playwright is not installed")


@contextlib.contextmanager
def _open_page(path: Path) -> Iterator[tuple[Any, list[str], list[str]]]:
    """The page at `path` in headless Chromium, with the console errors and dialogs it raises."""
    from playwright.sync_api import sync_playwright

    console_errors: list[str] = []
    dialogs: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            page = browser.new_page()
            page.on("console", lambda m: console_errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: console_errors.append(str(e)))
            page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
            page.goto(path.as_uri())
            page.wait_for_load_state("load")
            yield page, console_errors, dialogs
        finally:
            browser.close()


def _png_base64() -> str:
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(2, 1.5), dpi=50)
    ax.imshow([[0.0, 1.0], [0.5, 0.2]])
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode()


def test_report_in_a_real_browser(tmp_path: Path) -> None:
    _need_browser()
    results, samples = sample_results()
    heatmap = {"name": "heatmap", "caption": PAYLOAD, "mime": "image/png", "data": _png_base64()}
    # What causal cases attach: an SVG drawn from the numbers, its labels untrusted text.
    svg = heatmap_svg([[0.0, 1.0], [float("nan"), -0.5]], [PAYLOAD, "b"], ["x", "y"], title=PAYLOAD)
    drawn = {"name": "target x layer", "caption": "svg", "mime": "image/svg+xml"}
    drawn["data"] = base64.b64encode(svg).decode()
    page_path = tmp_path / "report.html"
    html = render_html(results, samples, {results["cases"][0]["id"]: [heatmap, drawn]})
    page_path.write_text(html, encoding="utf-8")
    with _open_page(page_path) as (page, console_errors, dialogs):
        # Tables and plots are there, and the plots decoded as images.
        for table in ("#summary", "#cases", "#gates", "#families"):
            assert page.locator(table).count() == 1
        total = page.locator("#cases tr.case").count()
        assert total == len(results["cases"])
        plots = page.locator("img.plot")
        assert plots.count() == 2
        assert page.evaluate(
            "Array.from(document.querySelectorAll('img.plot')).every(i => i.complete && i.naturalWidth > 100)"
        )

        # Text filter, then the family select, then the problems-only toggle.
        page.fill("#filter", "boolean_logic")
        visible = page.locator("#cases tr.case:visible")
        assert visible.count() == 4
        assert all("boolean_logic" in t for t in visible.all_inner_texts())
        page.fill("#filter", "")
        page.select_option("#filter-family", "variable_binding")
        assert page.locator("#cases tr.case:visible").count() == 4
        page.select_option("#filter-family", "")
        page.check("#filter-problems")
        problems = page.locator("#cases tr.case:visible")
        assert problems.count() == 1 and "error" in problems.inner_text()
        page.uncheck("#filter-problems")
        assert page.locator("#cases tr.case:visible").count() == total

        # Drill-down: a click shows that case's samples, with the planted payload as text.
        first = page.locator("#cases tr.case").first
        drill_id = first.get_attribute("data-target")
        assert not page.locator(f"#{drill_id}").is_visible()
        first.click()
        drill = page.locator(f"#{drill_id}")
        assert drill.is_visible()
        assert drill.locator("table.samples tbody tr").count() == 3
        assert drill.locator("table.metrics tbody tr").count() == 2
        images = drill.locator("figure.case-image img")
        assert images.count() == 2
        assert images.evaluate_all("all => all.every(i => i.complete && i.naturalWidth > 10)")
        assert "<script>window.__pwned = 1</script>" in drill.locator("table.samples").inner_text()

        # The payload stayed inert everywhere: no global, no dialog, no extra script or img element.
        assert page.evaluate("typeof window.__pwned") == "undefined"
        assert page.evaluate("document.scripts.length") == 2  # the page's data and code, nothing else
        assert page.evaluate("document.querySelectorAll('img[src=\"x\"]').length") == 0
        assert PAYLOAD in page.locator("body").inner_text()
        page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
    assert dialogs == []
    assert console_errors == []


def test_training_report_in_a_real_browser(tmp_path: Path) -> None:
    _need_browser()
    import dataclasses

    from debug.train import PRESETS, train
    from debug.train.report import training_report

    # A checkpoint name with markup in it (no "/": it is one folder name): the table must show it as text.
    config = dataclasses.replace(PRESETS["tiny"], eval_every=4, checkpoints=((4, "early<i>x<b>"),))
    saved = train(config, tmp_path / "run", log=lambda _: None).saved
    page_path = training_report(
        [str(p) for p in saved.values()], tmp_path / "out", per_hop=2, pairs=2, num_hops=2, log=lambda _: None
    )
    with _open_page(page_path) as (page, console_errors, _):
        assert page.locator("#checkpoints tbody tr").count() == 2
        assert page.evaluate(
            "Array.from(document.images).length === 2 && "
            "Array.from(document.images).every(i => i.complete && i.naturalWidth > 100)"
        )
        assert page.evaluate("document.querySelectorAll('i').length") == 0
        assert "early<i>x<b>" in page.locator("#checkpoints").inner_text()
    assert console_errors == []
