"""The executed notebook as a person sees it: rendered to HTML and opened in headless Chromium.

The notebook runs on a tiny simulated set (as in test_notebook.py), nbconvert renders the
executed copy, a local HTTP server serves it and Playwright drives Chromium over it. The test
checks what is on the page, not what is in the JSON: each figure cell shows an image that the
browser decoded, and no output shows ``<Figure size ...>`` or a progress bar stuck at ``0%|``.

Run as a script, this file screenshots the results section of the notebook that ``make run``
executed (reports/classification_notebook.ipynb) into reports/figures/notebook.png:

    .venv/bin/python tests/notebook/test_browser.py [EXECUTED.ipynb [OUT.png]]
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import shutil
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# The cells of the results section, each known by a call in its source: from the test
# evaluation to the classification of new images.
RESULTS_FIRST, RESULTS_LAST = "evaluate.evaluate_checkpoint(", "predict_files(best_path"


def render_html(executed: Path, out_dir: Path) -> Path:
    """The executed notebook as one self-contained HTML page (images inline), as JupyterLab
    lays it out."""
    from nbconvert import HTMLExporter

    body, _ = HTMLExporter(template_name="lab").from_filename(str(executed))
    page = out_dir / "notebook.html"
    page.write_text(body, encoding="utf-8")
    return page


@contextlib.contextmanager
def serve(folder: Path) -> Iterator[str]:
    """Serve ``folder`` on 127.0.0.1 at a free port, in a thread; yields the base URL."""

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args) -> None:  # keep the test's output for its own messages
            pass

    handler = functools.partial(Quiet, directory=str(folder))
    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler) as server:
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield f"http://127.0.0.1:{server.server_address[1]}"
        finally:
            server.shutdown()
            thread.join(timeout=10)


@contextlib.contextmanager
def open_page(url: str, profile: Path) -> Iterator:
    """A Chromium page (fresh profile in ``profile``) showing ``url`` with its images loaded.

    Requests leaving the local server are refused: the page's CDN scripts (require.js,
    MathJax) are not needed for static outputs, and a machine without network would wait on
    them.
    """
    from playwright.sync_api import sync_playwright

    base = url.rsplit("/", 1)[0]
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(profile),
            executable_path=str(CHROMIUM),
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1280, "height": 900},
        )
        try:
            context.route(
                "**/*",
                lambda route: (
                    route.continue_() if route.request.url.startswith(base) else route.abort()
                ),
            )
            page = context.new_page()
            page.goto(url, wait_until="load", timeout=60_000)
            # Every <img> decoded (or failed): naturalWidth is then final.
            page.wait_for_function(
                "Array.from(document.images).every(img => img.complete)", timeout=60_000
            )
            yield page
        finally:
            context.close()


def code_cell(page, call: str):
    """The first rendered code cell whose source holds ``call``."""
    return page.locator(".jp-CodeCell").filter(has_text=call).first


def image_widths(cell) -> list[int]:
    """naturalWidth of every image in a rendered cell's outputs (0: not decoded)."""
    return cell.locator(".jp-OutputArea img").evaluate_all("imgs => imgs.map(i => i.naturalWidth)")


def screenshot_results(page, path: Path) -> Path:
    """Screenshot of the results section: from the heading above the evaluation cell to the
    classify cell."""
    heading = code_cell(page, RESULTS_FIRST).locator(
        "xpath=preceding-sibling::div[contains(@class, 'jp-Cell')][1]"
    )
    first = heading.bounding_box()
    last = code_cell(page, RESULTS_LAST).bounding_box()
    if first is None or last is None:
        raise ValueError(f"the page has no {RESULTS_FIRST!r} or {RESULTS_LAST!r} cell to show")
    scroll = page.evaluate("[window.scrollX, window.scrollY]")
    top = first["y"] + scroll[1]
    bottom = last["y"] + last["height"] + scroll[1]
    page.screenshot(
        path=str(path),
        full_page=True,
        clip={"x": 0, "y": top, "width": page.viewport_size["width"], "height": bottom - top},
    )
    return path


def browser_missing() -> str | None:
    """Why the browser check cannot run here, or None when it can."""
    if not CHROMIUM.is_file():
        return f"no Chromium at {CHROMIUM} (install it: apt-get install -y chromium)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright Python package is not installed (pip install playwright)"
    return None


@pytest.mark.slow
def test_every_figure_shows_in_the_browser_and_no_output_is_stale(tmp_path, monkeypatch):
    missing = browser_missing()
    if missing:
        pytest.skip(missing)
    from test_notebook import FIGURE_CELLS, execute, offline_torch_hub, tiny_parameters

    offline_torch_hub(monkeypatch, tmp_path)
    execute(tmp_path, **tiny_parameters(tmp_path))
    site = tmp_path / "site"
    site.mkdir()
    page_path = render_html(tmp_path / "executed" / "classification_notebook.ipynb", site)

    with serve(site) as base, open_page(f"{base}/{page_path.name}", tmp_path / "profile") as page:
        try:
            for call, expected in FIGURE_CELLS.items():
                widths = image_widths(code_cell(page, call))
                assert len(widths) == expected, f"the {call} cell shows {len(widths)} image(s)"
                assert all(w > 0 for w in widths), f"the {call} cell has an undecoded image"
            shown = "\n".join(page.locator(".jp-OutputArea-output").all_inner_texts())
            assert "<Figure size" not in shown
            assert "0%|" not in shown
            screenshot_results(page, tmp_path / "results.png")
        except AssertionError:
            page.screenshot(path=str(tmp_path / "failure.png"), full_page=True)
            raise


def main(argv: list[str]) -> int:
    """Screenshot the results section of an executed notebook (default: make run's)."""
    root = Path(__file__).resolve().parents[2]
    executed = Path(argv[0]) if argv else root / "reports" / "classification_notebook.ipynb"
    out = Path(argv[1]) if len(argv) > 1 else root / "reports" / "figures" / "notebook.png"
    missing = browser_missing()
    if missing:
        print(f"cannot take the screenshot: {missing}", file=sys.stderr)
        return 1
    if not executed.is_file():
        print(f"no executed notebook at {executed}; run `make run` first", file=sys.stderr)
        return 1
    work = Path(tempfile.mkdtemp(prefix="notebook-screenshot-"))
    try:
        page_path = render_html(executed, work)
        with serve(work) as base, open_page(f"{base}/{page_path.name}", work / "profile") as page:
            out.parent.mkdir(parents=True, exist_ok=True)
            screenshot_results(page, out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
