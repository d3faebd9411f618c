"""`fxopt viz` at scale: page size, build time and load/interaction times in headless Chromium.

``python -m benchmarks.viz [--quick] [--sizes 5000,20000,50000]``: for each size a synthetic trace
(``fxopt.tools.viz_synthetic``: encoder layers of 40 nodes; three snapshots: capture, a q/k/v fusion, a
placement) is built into a page and opened in Chromium from file://. Columns: nodes in the capture snapshot,
page size, Python build time (pack + inline), load (page.goto until the page reports ready: parse, index,
default view, first layout and draw), the page's own script time, then layouts on demand: expanding the
module that holds every layer (one box per layer), switching to the fusion pass, turning diff on, and a
search that reveals a node deep inside a layer. ``--quick``: 5,000 nodes only. Needs playwright and
/usr/bin/chromium (or $FXOPT_CHROMIUM).
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time

CHROMIUM = os.environ.get("FXOPT_CHROMIUM", "/usr/bin/chromium")


def measure(browser, n: int, tmp: str) -> dict:
    """Build and open the page for a synthetic ``n``-node trace in ``browser``; returns the figures."""
    from fxopt.tools.viz import write_page
    from fxopt.tools.viz_synthetic import synthetic_trace

    trace = synthetic_trace(n)
    t0 = time.perf_counter()
    path = write_page(trace, os.path.join(tmp, f"synthetic{n}.html"))
    build = time.perf_counter() - t0
    page = browser.new_page(viewport={"width": 1400, "height": 850})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    t0 = time.perf_counter()
    page.goto("file://" + path)
    page.wait_for_function("window.fxviz && window.fxviz.ready", timeout=120_000)
    load = time.perf_counter() - t0
    row = {"nodes": len(trace["snapshots"][0]["nodes"]), "page_mb": os.path.getsize(path) / 1e6,
           "build_s": build, "load_s": load, "script_ms": page.evaluate("fxviz.stats.loadMs"),
           "boxes": page.evaluate("fxviz.stats.items")}
    layers = trace["reports"][0]["details"]["layers_fused"]
    steps = [("expand_ms", "fxviz.expand('encoder.layers')"), ("switch_ms", "fxviz.setPass(1)"),
             ("diff_ms", "fxviz.setDiff(true)"), ("search_ms", f"fxviz.search('l{layers // 2}_gelu')")]
    for key, js in steps:
        row[key] = page.evaluate(f"() => {{ const t = performance.now(); {js}; return performance.now() - t; }}")
    row["boxes_expanded"] = page.evaluate("fxviz.stats.items")
    row["crossings"] = page.evaluate("fxviz.stats.crossings")
    row["errors"] = len(errors)
    page.close()
    return row


def main(argv=None) -> list[dict]:
    """Run the benchmark (see the module docstring), print a table, return one dict per size."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="5,000 nodes only")
    parser.add_argument("--sizes", default="5000,20000,50000", help="comma-separated node counts")
    args = parser.parse_args(argv)
    sizes = [5000] if args.quick else [int(x) for x in args.sizes.split(",")]
    from playwright.sync_api import sync_playwright

    rows = []
    with tempfile.TemporaryDirectory() as tmp, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        for n in sizes:
            rows.append(measure(browser, n, tmp))
        browser.close()
    head = ("nodes", "page MB", "build s", "load s", "script ms", "boxes", "expand ms", "boxes after",
            "switch ms", "diff ms", "search ms", "errors")
    print("fxopt viz on synthetic traces (3 snapshots each), headless Chromium")
    print("  ".join(f"{h:>11}" for h in head))
    for r in rows:
        vals = (r["nodes"], f"{r['page_mb']:.1f}", f"{r['build_s']:.2f}", f"{r['load_s']:.2f}", r["script_ms"],
                r["boxes"], f"{r['expand_ms']:.0f}", r["boxes_expanded"], f"{r['switch_ms']:.0f}",
                f"{r['diff_ms']:.0f}", f"{r['search_ms']:.0f}", r["errors"])
        print("  ".join(f"{v:>11}" for v in vals))
    return rows


if __name__ == "__main__":  # pragma: no cover
    main()
