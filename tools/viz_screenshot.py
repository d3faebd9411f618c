"""Regenerate the screenshots of ``fxopt viz`` in docs/: ``python -m fxopt.tools.viz_screenshot [DOCS_DIR]``.

Captures zoo:ranking (default size), runs ``dedupe,moe,split{target=xla}``, writes the page and photographs
it in headless Chromium (playwright, ``/usr/bin/chromium`` or ``$FXOPT_CHROMIUM``):

- ``viz-ranking.png``: the ``moe`` pass in diff mode (the 16 experts removed, the batched matmuls added)
  with the node panel of the new ``bmm_default``;
- ``viz-ranking-split.png``: after ``split``, placement colors (cpu vs xla partitions) with every module
  expanded.
"""
from __future__ import annotations

# local imports: commands import torch and the compiler only when they run, so `fxopt --help` and argument errors answer without them (startup cost)
import os
import sys
import tempfile

CHROMIUM = os.environ.get("FXOPT_CHROMIUM", "/usr/bin/chromium")


def ranking_trace() -> dict:
    """The trace of zoo:ranking after ``dedupe,moe,split{target=xla}`` (a dict)."""
    import fxopt

    model, inputs = fxopt.zoo.get("ranking")
    return fxopt.optimize(fxopt.capture(model, inputs), "dedupe,moe,split{target=xla}").trace_json()


def screenshots(docs_dir: str, trace: dict | None = None) -> list[str]:
    """Write the two PNGs described in the module docstring into ``docs_dir``; returns their paths.
    Raises RuntimeError when playwright or chromium is missing."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:
        raise RuntimeError("playwright is not installed (pip install playwright)") from exc
    if not os.path.exists(CHROMIUM):
        raise RuntimeError(f"{CHROMIUM} not found (apt-get install chromium, or set FXOPT_CHROMIUM)")
    from fxopt.tools.viz import write_page

    trace = trace or ranking_trace()
    out = []
    with tempfile.TemporaryDirectory() as tmp, sync_playwright() as p:
        page_path = write_page(trace, os.path.join(tmp, "ranking.html"))
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1600, "height": 900})
        page.goto("file://" + page_path)
        page.wait_for_function("window.fxviz && window.fxviz.ready")
        page.click("#timeline button[data-index='2']")
        page.check("#diff")
        page.evaluate("fxviz.fit()")
        page.evaluate("fxviz.reveal('bmm_default'); fxviz.state.view.k = 0.75; fxviz.fit()")
        out.append(os.path.join(docs_dir, "viz-ranking.png"))
        page.screenshot(path=out[-1])
        page.keyboard.press("Escape")
        page.uncheck("#diff")
        page.click("#timeline button[data-index='3']")
        page.click("#expand-all")
        page.evaluate("fxviz.reveal('addmm_40')")
        out.append(os.path.join(docs_dir, "viz-ranking-split.png"))
        page.screenshot(path=out[-1])
        browser.close()
    return out


def main(argv=None) -> int:
    """Command line: ``[DOCS_DIR]`` (default: the repository's docs/). Prints the files written; returns 0."""
    argv = sys.argv[1:] if argv is None else argv
    docs = argv[0] if argv else os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs")
    for path in screenshots(docs):
        print(path)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
