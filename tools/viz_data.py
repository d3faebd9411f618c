"""Reading, checking and packing pass traces for the visualizer (``fxopt viz``).

``load_trace(source)`` accepts a trace dict, a ``trace.json`` path or an artifact directory holding one, and
returns the trace dict after checking its shape (:func:`check_trace`). ``pack_trace(trace)`` turns it into
the compact form the page embeds: every distinct node record is stored once in ``records`` and each
snapshot lists record indices, so a pipeline whose passes touch a few nodes costs little more than one
snapshot. The page unpacks it; ``fxopt viz --json`` always gives the raw trace, never the packed form.
"""
from __future__ import annotations

# local imports: commands import torch and the compiler only when they run, so `fxopt --help` and argument errors answer without them (startup cost)
import json
import os
from typing import Any

from fxopt.errors import InputError

TRACE_FORMAT = "fxopt-trace"
PACKED_FORMAT = "fxopt-trace-packed"


def load_trace(source: Any) -> dict:
    """Return the trace dict for ``source``: a trace dict (returned as is after checking), a path to a
    trace JSON file, or an artifact directory with ``trace.json``. Raises InputError (one line, naming
    the path) when the file is missing, is not JSON, or is not an fxopt trace."""
    if isinstance(source, dict):
        check_trace(source, "the trace")
        return source
    path = os.fspath(source)
    timings_path = None
    if os.path.isdir(path):
        candidate = os.path.join(path, "trace.json")
        if not os.path.isfile(candidate):
            raise InputError(f"{path}: no trace.json in this directory; pass an fxopt artifact directory "
                             "(written by `fxopt run`) or a trace .json file")
        path = candidate
    if os.path.basename(path) == "trace.json":  # an artifact's trace: its pass timings live beside it
        timings_path = os.path.join(os.path.dirname(path), "timings.json")
    if not os.path.isfile(path):
        raise InputError(f"{path}: no such file or directory; pass an artifact directory or a trace .json file")
    from fxopt.ir.serialize import parse_json

    try:
        with open(path, encoding="utf-8") as f:
            trace = parse_json(f.read(), os.path.basename(path))
    except (UnicodeDecodeError, ValueError) as exc:
        raise InputError(f"{path}: not a JSON file ({exc.__class__.__name__}: {str(exc)[:200]}); pass an fxopt "
                         "trace.json") from None
    check_trace(trace, path)
    if timings_path and os.path.isfile(timings_path):
        from fxopt.ir.trace import merge_timings

        try:
            with open(timings_path, encoding="utf-8") as f:
                trace = merge_timings(trace, json.load(f))
        except (OSError, ValueError):
            pass  # timings are a nicety; the trace itself is complete without them
    return trace


def check_trace(trace: Any, where: str) -> None:
    """Raise InputError naming ``where`` unless ``trace`` looks like an fxopt trace: a dict with
    ``format == "fxopt-trace"``, a non-empty ``snapshots`` list whose first entry has ``nodes``, every
    ``same_as`` pointing at an earlier snapshot, and every node record having a ``name``."""
    if not isinstance(trace, dict) or trace.get("format") != TRACE_FORMAT:
        raise InputError(f"{where}: not an fxopt trace (expected \"format\": \"{TRACE_FORMAT}\"); pass the "
                         "trace.json of an artifact")
    snaps = trace.get("snapshots")
    if not isinstance(snaps, list) or not snaps:
        raise InputError(f"{where}: the trace has no snapshots; rerun `fxopt run` to write a new one")
    for i, snap in enumerate(snaps):
        if not isinstance(snap, dict):
            raise InputError(f"{where}: snapshot {i} is not an object; the trace file is damaged")
        if "nodes" in snap:
            nodes = snap["nodes"]
            if not isinstance(nodes, list) or any(not isinstance(n, dict) or "name" not in n for n in nodes):
                raise InputError(f"{where}: snapshot {i} ({snap.get('pass')}) has a node without a name; "
                                 "the trace file is damaged")
        elif not (isinstance(snap.get("same_as"), int) and 0 <= snap["same_as"] < i):
            raise InputError(f"{where}: snapshot {i} ({snap.get('pass')}) has neither nodes nor a valid "
                             "same_as; the trace file is damaged")
    if "nodes" not in snaps[0]:
        raise InputError(f"{where}: the first snapshot has no nodes; the trace file is damaged")


def pack_trace(trace: dict) -> dict:
    """The compact form of ``trace`` embedded in the page: ``{"format": "fxopt-trace-packed", "program",
    "reports", "records": [distinct node records], "snapshots": [{"index", "pass", "nodes": [record
    indices]} or {"index", "pass", "same_as"}]}``. Does not modify ``trace``."""
    records: list[dict] = []
    ids: dict[str, int] = {}
    snapshots = []
    for i, snap in enumerate(trace["snapshots"]):
        out = {"index": snap.get("index", i), "pass": snap.get("pass", f"#{i}")}
        if "nodes" in snap:
            refs = []
            for rec in snap["nodes"]:
                key = repr(rec)  # equal repr => equal JSON values; a different key order only costs a copy
                idx = ids.get(key)
                if idx is None:
                    idx = ids[key] = len(records)
                    records.append(rec)
                refs.append(idx)
            out["nodes"] = refs
        else:
            out["same_as"] = snap["same_as"]
        snapshots.append(out)
    return {"format": PACKED_FORMAT, "version": trace.get("version", 1), "program": trace.get("program", ""),
            "reports": trace.get("reports", []),
            "records": records, "snapshots": snapshots}


def unpack_trace(packed: dict) -> dict:
    """The inverse of :func:`pack_trace`: a plain ``fxopt-trace`` dict (version 1) with node records in
    every snapshot that had them."""
    records = packed["records"]
    snapshots = []
    for snap in packed["snapshots"]:
        out = {"index": snap["index"], "pass": snap["pass"]}
        if "nodes" in snap:
            out["nodes"] = [records[i] for i in snap["nodes"]]
        else:
            out["same_as"] = snap["same_as"]
        snapshots.append(out)
    return {"format": TRACE_FORMAT, "version": packed.get("version", 1), "program": packed.get("program", ""),
            "snapshots": snapshots, "reports": packed.get("reports", [])}
