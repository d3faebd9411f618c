"""The pass trace: a JSON record of the graph after every pass, for the visualizer and for debugging.

Format (``"format": "fxopt-trace"``, ``"version": 1``)::

    {"program": "ranking", "snapshots": [
        {"index": 0, "pass": "capture", "nodes": [NODE, ...]},
        {"index": 1, "pass": "dce", "same_as": 0},          # the pass changed nothing
        ...],
     "reports": [PassReport.to_json(), ...]}

    NODE = {"name", "op", "target", "inputs": [node names], "args": short text of the arguments,
            "shape": "f32[s0, 64]", "bytes": int, "placement", "module", "provenance": {...},
            "cost": {"flops", "bytes_read", "bytes_written"}}

Snapshots of unchanged graphs are references, so a long pipeline of passes that change nothing stays cheap.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.fx

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


def node_record(node: torch.fx.Node) -> dict:
    """The JSON record of one node (see the module docstring)."""
    val = node.meta.get("val")
    cost = node.meta.get("cost")
    args = ", ".join([_arg_text(a) for a in node.args] + [f"{k}={_arg_text(v)}" for k, v in node.kwargs.items()])
    record = {
        "name": node.name,
        "op": node.op,
        "target": target_name(node.target),
        "inputs": [n.name for n in node.all_input_nodes],
        "args": args if len(args) <= 200 else args[:197] + "...",
        "shape": describe(val),
        "bytes": value_bytes(val),
        "placement": node.meta.get("placement"),
        "module": (node.meta.get("provenance") or {}).get("module", ""),
        "provenance": node.meta.get("provenance"),
    }
    if cost is not None and hasattr(cost, "to_json"):
        record["cost"] = cost.to_json()
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
        nodes = [node_record(n) for n in program.graph.nodes]
        self.snapshots.append({"index": len(self.snapshots), "pass": pass_name, "nodes": nodes})

    def unchanged(self, pass_name: str) -> None:
        """Record that ``pass_name`` left the graph as the previous snapshot."""
        prev = self.snapshots[-1]
        base = prev.get("same_as", prev["index"])
        self.snapshots.append({"index": len(self.snapshots), "pass": pass_name, "same_as": base})

    def to_json(self) -> dict:
        """The trace as a JSON-able dict."""
        return {
            "format": TRACE_FORMAT,
            "version": TRACE_VERSION,
            "program": self.program_name,
            "snapshots": self.snapshots,
            "reports": self.reports,
        }
