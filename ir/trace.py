"""The pass trace: a JSON record of the graph after every pass, for the visualizer and for debugging.

Format (``"format": "fxopt-trace"``, ``"version": 1``)::

    {"program": "ranking", "snapshots": [
        {"index": 0, "pass": "capture", "nodes": [NODE, ...]},
        {"index": 1, "pass": "dce", "same_as": 0},          # the pass changed nothing
        ...],
     "reports": [PassReport.to_json(), ...]}

    NODE = {"name", "op", "target", "inputs": [node names], "args": short text of the arguments,
            "shape": "f32[s0, 64]", "bytes": int, "placement", "module", "provenance": {...},
            "cost": {"flops", "bytes_read", "bytes_written"},
            "placement_reason", "partition"}     # these two only when split recorded them

Snapshots of unchanged graphs are references, so a long pipeline of passes that change nothing stays cheap.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.fx

from fxopt.ir.gc_pause import collections_paused
from fxopt.ir.program import Program, target_name, value_bytes
from fxopt.ir.shapes import describe

TRACE_FORMAT = "fxopt-trace"
TRACE_VERSION = 1


def _arg_text(a: Any) -> str:
    if isinstance(a, torch.fx.Node):
        return a.name
    if isinstance(a, (list, tuple)):
        inner = ", ".join(_arg_text(x) for x in a)
        return f"[{inner}]" if isinstance(a, list) else f"({inner})"
    if isinstance(a, torch.dtype):
        return str(a).replace("torch.", "")
    if isinstance(a, float):
        return repr(a)
    return str(a)


class _Snapshot:
    """The graph as it was after a pass, kept as references and rendered to JSON only when asked.

    Node names, ops, targets, args tuples and meta values are not mutated by passes (they replace them),
    so holding references is as good as a copy and makes a snapshot O(nodes) with a tiny constant.
    """

    __slots__ = ("rows",)

    def __init__(self, graph: torch.fx.Graph):
        with collections_paused():
            self.rows = self._rows(graph)

    @staticmethod
    def _rows(graph: torch.fx.Graph) -> list[tuple]:
        return [(n, n.name, n.op, n.target, n.args, n.kwargs, tuple(x.name for x in n.all_input_nodes),
                 n.meta.get("val"), n.meta.get("placement"), n.meta.get("provenance"), n.meta.get("cost"),
                 n.meta.get("placement_reason"), n.meta.get("partition"))
                for n in graph.nodes]

    def render(self) -> list[dict]:
        out = []
        for _node, name, op, target, args, kwargs, inputs, val, placement, prov, cost, why, part in self.rows:
            out.append(_record(name, op, target, args, kwargs, inputs, val, placement, prov, cost, why, part))
        return out


def _record(name, op, target, args, kwargs, inputs, val, placement, prov, cost, why=None, partition=None) -> dict:
    text = ", ".join([_arg_text(a) for a in args] + [f"{k}={_arg_text(v)}" for k, v in kwargs.items()])
    record = {
        "name": name,
        "op": op,
        "target": target_name(target),
        "inputs": list(inputs),
        "args": text if len(text) <= 200 else text[:197] + "...",
        "shape": describe(val),
        "bytes": value_bytes(val),
        "placement": placement,
        "module": (prov or {}).get("module", ""),
        "provenance": prov,
    }
    if cost is not None and hasattr(cost, "to_json"):
        record["cost"] = cost.to_json()
    if why:
        record["placement_reason"] = why
    if isinstance(partition, str):
        record["partition"] = partition
    return record


class Trace:
    """Collects graph snapshots and pass reports while a pipeline runs."""

    def __init__(self, program: Program):
        """Start a trace for ``program`` with its current graph as snapshot 0 ("capture")."""
        self.program_name = program.name
        self.snapshots: list[dict] = []
        self.reports: list[dict] = []
        self.snapshot(program, "capture")

    def snapshot(self, program: Program, pass_name: str) -> None:
        """Record the full graph as it is after ``pass_name``."""
        self.snapshots.append({"index": len(self.snapshots), "pass": pass_name,
                               "nodes": _Snapshot(program.graph)})

    def unchanged(self, pass_name: str) -> None:
        """Record that ``pass_name`` left the graph as the previous snapshot."""
        prev = self.snapshots[-1]
        base = prev.get("same_as", prev["index"])
        self.snapshots.append({"index": len(self.snapshots), "pass": pass_name, "same_as": base})

    def to_json(self) -> dict:
        """The trace as a JSON-able dict (snapshots rendered now)."""
        snapshots = []
        for snap in self.snapshots:
            snap = dict(snap)
            if isinstance(snap.get("nodes"), _Snapshot):
                snap["nodes"] = snap["nodes"].render()
            snapshots.append(snap)
        return {
            "format": TRACE_FORMAT,
            "version": TRACE_VERSION,
            "program": self.program_name,
            "snapshots": snapshots,
            "reports": self.reports,
        }


# ------------------------------------------------------------------------------------------ timings
TIMINGS_KEY = "seconds"


def split_timings(trace: dict) -> tuple[dict, dict]:
    """Separate the wall-clock timings from a trace so that the rest is deterministic.

    Takes a trace dict (left unmodified); returns ``(trace without timings, timings)``: every ``"seconds"``
    key anywhere inside ``trace["reports"]`` is removed, and ``timings`` is ``{"format":
    "fxopt-timings", "version": 1, "reports": [{"index": i, "values": {"details/seconds": ..., ...}}]}``
    (paths joined by ``/``) so :func:`merge_timings` can put them back."""
    reports, rows = [], []
    for i, report in enumerate(trace.get("reports", [])):
        values: dict[str, Any] = {}
        reports.append(_strip(report, "", values))
        if values:
            rows.append({"index": i, "values": values})
    stripped = dict(trace)
    stripped["reports"] = reports
    return stripped, {"format": "fxopt-timings", "version": 1, "reports": rows}


def _strip(value: Any, path: str, found: dict) -> Any:
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            sub = f"{path}/{k}" if path else str(k)
            if k == TIMINGS_KEY:
                found[sub] = v
            else:
                out[k] = _strip(v, sub, found)
        return out
    if isinstance(value, list):
        return [_strip(v, f"{path}/{i}", found) for i, v in enumerate(value)]
    return value


def merge_timings(trace: dict, timings: dict | None) -> dict:
    """The trace with the timings from :func:`split_timings` put back (a new dict; ``trace`` is left as it
    is). Timings that do not fit the trace (another run's file) are ignored."""
    if not isinstance(timings, dict) or not isinstance(trace.get("reports"), list):
        return trace
    reports = [dict(r) if isinstance(r, dict) else r for r in trace["reports"]]
    for row in timings.get("reports", []):
        i = row.get("index") if isinstance(row, dict) else None
        if not isinstance(i, int) or not 0 <= i < len(reports) or not isinstance(reports[i], dict):
            continue
        for path, v in (row.get("values") or {}).items():
            _put(reports, [str(i)] + str(path).split("/"), v)
    merged = dict(trace)
    merged["reports"] = reports
    return merged


def _put(root: Any, parts: list[str], value: Any) -> None:
    node = root
    for j, part in enumerate(parts[:-1]):
        key: Any = int(part) if isinstance(node, list) else part
        try:
            child = node[key]
        except (KeyError, IndexError, TypeError):
            return
        if isinstance(child, dict):
            child = dict(child)
        elif isinstance(child, list):
            child = list(child)
        else:
            return
        node[key] = child
        node = child
    if isinstance(node, dict):
        node[parts[-1]] = value
