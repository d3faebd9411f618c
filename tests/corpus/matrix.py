"""The corpus support matrix (model x backend) from a real run, for docs/models.md.

    python tests/corpus/matrix.py [-j 2] [--model NAME ...] [--write-docs] [--json out.json]

Runs every corpus model through every backend column of tests/corpus/endtoend.py (capture, default
pipeline, compile, check against eager, save) and reloads each model's artifacts in a fresh process without
transformers; prints the table, and with ``--write-docs`` replaces the generated part of docs/models.md."""
from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import datetime
import json
import os
import platform
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))   # tests/: `import corpus`

DOC = os.path.join(os.path.dirname(os.path.dirname(HERE)), "docs", "models.md")
BEGIN, END = "<!-- corpus-matrix:begin -->", "<!-- corpus-matrix:end -->"


def run_model(name: str, out_root: str) -> dict:
    """Every backend column for model ``name`` plus its fresh-process reload; returns a JSON-able record."""
    import warnings

    warnings.filterwarnings("ignore")
    from corpus.endtoend import BACKENDS, reload_in_fresh_process, run_cell

    cells = [run_cell(name, backend, out_root) for backend in BACKENDS]
    saved = tuple(c.backend for c in cells if c.ok)
    reload = reload_in_fresh_process(name, out_root, saved) if saved else {}
    return {"model": name, "cells": [dataclasses.asdict(c) for c in cells], "reload": reload}


def cell_text(cell: dict, reload: dict) -> str:
    """One table cell: ok / the failure, where the graph runs, and the fresh-process reload."""
    if not cell["ok"]:
        return f"fails: {cell['detail'][:120]}"
    parts = cell["partitions"]
    device = cell["backend"].split("+")[0]
    if set(parts) == {"cpu"} and device != "reference":
        where = "CPU only¹"
    elif len(parts) == 1 or device == "reference":
        where = "one partition" if sum(parts.values()) == 1 else f"{sum(parts.values())} partitions"
    else:
        where = " + ".join(f"{d} {n}" for d, n in sorted(parts.items(), key=lambda kv: kv[0] == "cpu"))
    loaded = reload.get(cell["backend"])
    mark = "reload ok" if loaded == "ok" else f"reload fails: {loaded}"
    return f"ok ({where}; err {cell['max_abs_error']:.1g}; {mark})"


def table(records: list[dict]) -> str:
    """The markdown matrix, models in corpus order."""
    from corpus import BUILDERS
    from corpus.endtoend import BACKENDS

    order = {n: i for i, n in enumerate(BUILDERS)}
    lines = ["| model | " + " | ".join(BACKENDS) + " |", "|---|" + "---|" * len(BACKENDS)]
    for rec in sorted(records, key=lambda r: order[r["model"]]):
        doc = (BUILDERS[rec["model"]].__doc__ or "").split(":")[0].strip()
        cells = {c["backend"]: cell_text(c, rec["reload"]) for c in rec["cells"]}
        lines.append(f"| {rec['model']} ({doc}) | " + " | ".join(cells[b] for b in BACKENDS) + " |")
    return "\n".join(lines)


def summary(records: list[dict]) -> str:
    """Counts under the table: cells ok, reloads ok, cells with no accelerator partition."""
    cells = [c for r in records for c in r["cells"]]
    ok = sum(c["ok"] for c in cells)
    reloads = sum(v == "ok" for r in records for k, v in r["reload"].items() if k != "imported")
    cpu_only = sum(1 for c in cells if c["ok"] and c["backend"] != "reference" and set(c["partitions"]) == {"cpu"})
    return (f"{len(records)} models, {ok} of {len(cells)} cells ok, {reloads} of {ok} artifacts reload in a "
            f"process without transformers with the same outputs; {cpu_only} accelerator cells run CPU only.")


def write_docs(text: str) -> None:
    with open(DOC, encoding="utf-8") as f:
        doc = f.read()
    start, end = doc.index(BEGIN) + len(BEGIN), doc.index(END)
    with open(DOC, "w", encoding="utf-8") as f:
        f.write(doc[:start] + "\n" + text + "\n" + doc[end:])


def main(argv: list[str] | None = None) -> int:
    from corpus import BUILDERS

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-j", type=int, default=2, help="models run at once (processes)")
    parser.add_argument("--model", action="append", help="only these models")
    parser.add_argument("--write-docs", action="store_true", help="replace the matrix in docs/models.md")
    parser.add_argument("--json", help="write the records here")
    args = parser.parse_args(argv)
    names = args.model or list(BUILDERS)
    with tempfile.TemporaryDirectory() as out_root, \
            concurrent.futures.ProcessPoolExecutor(max_workers=args.j) as pool:
        records = list(pool.map(run_model, names, [out_root] * len(names)))
    date = datetime.date.today().isoformat()
    import torch
    import transformers

    text = (f"Generated {date} by `python tests/corpus/matrix.py --write-docs` on {platform.machine()} "
            f"({os.cpu_count()} cores), torch {torch.__version__}, transformers {transformers.__version__}.\n\n"
            + table(records) + "\n\n" + summary(records))
    print(text)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(records, f, indent=1)
    if args.write_docs:
        write_docs(text)
    return 0 if all(c["ok"] for r in records for c in r["cells"]) else 1


if __name__ == "__main__":
    sys.exit(main())
