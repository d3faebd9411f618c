"""``fxopt viz``: one self-contained HTML page showing what each pass did to the graph.

    fxopt viz out/ranking                  # writes out/ranking/page.html
    fxopt viz trace.json -o page.html --open
    fxopt viz out/ranking --json           # the raw trace on stdout (or into -o)

The page (``tools/viz_assets/``: page.html, viz.css, viz.js, all inlined by :func:`build_page`) needs no
server, no network and no CDN: it opens from ``file://``. The trace is embedded packed
(:func:`fxopt.tools.viz_data.pack_trace`). Layout and rendering are our own plain JavaScript (layered
Sugiyama-style layout on a canvas); docs/viz.md says why and what the page measures.
"""
from __future__ import annotations

# local imports: commands import torch and the compiler only when they run, so `fxopt --help` and argument errors answer without them (startup cost)
import argparse
import html
import json
import os
import sys
from typing import Any

from fxopt.tools.viz_data import load_trace, pack_trace

ASSET_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "viz_assets")
PAGE_NAME = "page.html"


def _asset(name: str) -> str:
    with open(os.path.join(ASSET_DIR, name), encoding="utf-8") as f:
        return f.read()


def _script_safe(text: str) -> str:
    """``text`` made safe inside a <script> element: no ``</`` (which could close it) and no ``<!--``."""
    return text.replace("</", "<\\/").replace("<!--", "<\\!--")


def embed_json(data: Any) -> str:
    """``data`` as compact JSON that can sit inside ``<script type="application/json">`` (every ``<``,
    ``>`` and ``&`` escaped as ``\\u003c`` etc., so no label can end the element); returns the text."""
    text = json.dumps(data, separators=(",", ":"), allow_nan=False, default=str)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def build_page(trace: dict) -> str:
    """Return the HTML page (a str) for ``trace`` (an fxopt trace dict, checked with
    :func:`fxopt.tools.viz_data.check_trace`): template, CSS, JavaScript and the packed trace inlined."""
    trace = load_trace(trace)
    title = f"fxopt viz: {trace.get('program') or 'program'}"
    page = _asset("page.html")
    parts = {
        "{{TITLE}}": html.escape(title),
        "{{CSS}}": _asset("viz.css").replace("</", "<\\/"),
        "{{JS}}": _script_safe(_asset("viz.js")),
        "{{DATA}}": embed_json(pack_trace(trace)),
    }
    for key, value in parts.items():
        head, sep, tail = page.partition(key)
        if not sep:
            raise RuntimeError(f"tools/viz_assets/page.html lacks the placeholder {key}")
        page = head + value + tail
    return page


def default_page_path(source: Any) -> str:
    """Where ``fxopt viz SOURCE`` writes without ``-o``: ``DIR/page.html`` for an artifact directory,
    ``name.html`` beside a trace file ``name.json``. Raises InputError for a dict (it has no path)."""
    from fxopt.errors import InputError

    if isinstance(source, dict):
        raise InputError("write_page: a trace dict has no default output path; pass path=")
    source = os.fspath(source)
    if os.path.isdir(source):
        return os.path.join(source, PAGE_NAME)
    stem, _ext = os.path.splitext(source)
    return stem + ".html"


def write_page(trace_or_dir: Any, path: str | None = None) -> str:
    """Build the page for ``trace_or_dir`` (a trace dict, a trace .json path or an artifact directory)
    and write it to ``path`` (default: :func:`default_page_path`); returns the absolute path written.
    Raises InputError for a missing/damaged trace or an unwritable path."""
    from fxopt.errors import InputError
    from fxopt.ir.files import write_text_atomic

    trace = load_trace(trace_or_dir)
    path = os.path.abspath(path or default_page_path(trace_or_dir))
    text = build_page(trace)
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        write_text_atomic(path, text)
    except OSError as exc:
        raise InputError(f"{path}: cannot write the page ({exc.strerror or exc}); choose another path with -o")
    return path


# ------------------------------------------------------------------------------------------ CLI
def register(add) -> None:
    """Add the ``viz`` subcommand through the CLI's ``add(name, help, description)`` hook."""
    p = add("viz", "write the pass-by-pass trace as one self-contained HTML page",
            "Render an artifact's trace.json (or any fxopt trace file) as one HTML file that opens offline "
            "from file://: a pass timeline with before/after diffs, the graph with modules collapsed, "
            "placement colors, shapes and bytes on edges, source lines, search and keyboard navigation.")
    p.add_argument("source", metavar="OUT_DIR_or_trace.json",
                   help="an artifact directory written by `fxopt run`, or a trace .json file")
    p.add_argument("-o", "--output", metavar="PAGE",
                   help="file to write (default: OUT_DIR/page.html, or NAME.html beside NAME.json; "
                        "with --json: stdout)")
    p.add_argument("--open", action="store_true", help="open the page in the default web browser")
    p.add_argument("--json", action="store_true",
                   help="write the raw trace JSON instead of the page (to -o, or to stdout)")
    p.set_defaults(handler=cmd_viz)


def cmd_viz(args: argparse.Namespace) -> int:
    """``fxopt viz``: write the page (or with ``--json`` the raw trace); prints what it wrote. Returns 0."""
    trace = load_trace(args.source)
    if args.json:
        text = json.dumps(trace, indent=1, sort_keys=True, allow_nan=False, default=str) + "\n"
        if args.output:
            with open(args.output, "w", encoding="utf-8") as f:
                f.write(text)
            print(f"trace: {args.output}")
        else:
            sys.stdout.write(text)
        return 0
    path = write_page(trace, args.output or default_page_path(args.source))
    nodes = sum(len(s["nodes"]) for s in trace["snapshots"] if "nodes" in s)
    print(f"page: {path} ({os.path.getsize(path) / 1e6:.2f} MB; {len(trace['snapshots'])} snapshots, "
          f"{nodes} node records; opens offline from file://)")
    if args.open:
        import pathlib
        import webbrowser

        webbrowser.open(pathlib.Path(path).as_uri())
    return 0
