"""The pass manager: runs a pipeline on a Program, times and reports each pass, snapshots the graph into the
trace, and (with ``verify``) checks each pass: ``graph.lint()`` then a differential run on the example inputs
against the outputs before the pass. A failed check raises :class:`VerificationError` naming the pass and the
first differing output.

Recompilation is lazy: the GraphModule's Python code is regenerated only when a pass changed the graph and
the graph is about to run (verification) or the pipeline ends. A pass that changes nothing costs its own scan
plus a constant.
"""
from __future__ import annotations

import time
from typing import Any, Callable, Iterable

from fxopt.errors import FxoptError, VerificationError
from fxopt.ir import cost, provenance, shapes
from fxopt.ir.program import Program
from fxopt.ir.trace import Trace
from fxopt.passes import verify as verify_mod
from fxopt.passes.base import Pass
from fxopt.passes.registry import build_pipeline
from fxopt.passes.report import PassReport


def _totals(program: Program) -> tuple[int, int]:
    """Graph FLOPs and bytes moved, evaluated at the example sizes (0, 0 when costs are unknown); data-dependent
    sizes count at their upper bound (:func:`fxopt.ir.cost.at_example_sizes`)."""
    flops = moved = 0
    bounds: dict[str, int] = {}
    for node in program.graph.nodes:
        c = node.meta.get("cost")
        if c is None:
            continue
        c = cost.at_example_sizes(c, program.graph_module, bounds)
        flops += int(c.flops)
        moved += int(c.bytes_read) + int(c.bytes_written)
    return flops, moved


def _annotate_costs(program: Program) -> None:
    cost.annotate_costs(program.graph_module)


def _check_requires(p: Pass, program: Program) -> None:
    if "placement" in p.requires:
        missing = [n.name for n in program.graph.nodes
                   if n.op == "call_function" and "placement" not in n.meta]
        if missing:
            raise FxoptError(f"pass '{p.name}' needs placement but node '{missing[0]}' has none; "
                             "run 'split' before it")


class PassManager:
    """Runs a list of passes over a Program (see the module docstring)."""

    def __init__(self, passes: str | Iterable[Any], *, verify: bool = True, bisect_limit: int | None = None,
                 on_event: Callable[[str, PassReport | None], None] | None = None):
        """``passes``: pipeline text or a list of names/instances; ``verify``: lint + numeric check after
        each changing pass; ``bisect_limit``: run only the first N pass applications (None = all);
        ``on_event(kind, report)``: progress callback ("start" before a pass, "end" after it)."""
        self.passes: list[Pass] = build_pipeline(passes)
        self.verify = verify
        if bisect_limit is not None and bisect_limit < 0:
            raise FxoptError(f"bisect limit must be >= 0, got {bisect_limit}")
        self.bisect_limit = bisect_limit
        self.on_event = on_event or (lambda kind, report: None)

    def run(self, program: Program, *, inplace: bool = False) -> Program:
        """Run the pipeline on a copy of ``program`` (or on ``program`` itself with ``inplace``, which saves
        the O(nodes) graph copy on huge graphs); returns the result with ``reports`` (one
        :class:`PassReport` per pass) and ``trace`` filled in."""
        prog = program if inplace else program.copy()
        prog.reports = []
        trace = Trace(prog)
        expected, depths = None, None
        flat_inputs = prog.flat_example_inputs() if self.verify else None
        if self.verify:
            expected = prog.run_flat(flat_inputs)
            depths = verify_mod.output_depths(prog.graph_module)
        totals = _totals(prog)
        for index, p in enumerate(self.passes):
            report = PassReport(index=index, name=p.name, spec=p.spec(), status="ran",
                                nodes_before=prog.num_nodes(), flops_before=totals[0], bytes_before=totals[1])
            if self.bisect_limit is not None and index >= self.bisect_limit:
                report.status = "skipped"
                report.nodes_after = report.nodes_before
                report.flops_after, report.bytes_after = totals
                report.notes.append(f"skipped: beyond --bisect-limit {self.bisect_limit}")
                prog.reports.append(report)
                trace.unchanged(p.name)
                self.on_event("end", report)
                continue
            self.on_event("start", report)
            _check_requires(p, prog)
            start = time.perf_counter()
            result = p.run(prog)
            if result.modified:
                prog.dirty = True
                shapes.infer_missing(prog.graph_module)
                provenance.mark_unowned(prog.graph, p.name)
                _annotate_costs(prog)
                totals = _totals(prog)
            report.seconds = time.perf_counter() - start
            report.modified = result.modified
            report.details = dict(result.details)
            report.notes = list(result.notes)
            report.nodes_after = prog.num_nodes()
            report.flops_after, report.bytes_after = totals
            if not result.modified:
                report.verified = "unchanged" if self.verify else "off"
                trace.unchanged(p.name)
            else:
                if self.verify:
                    expected, depths = self._verify(p, prog, flat_inputs, expected, depths, report)
                trace.snapshot(prog, p.name)
            prog.reports.append(report)
            self.on_event("end", report)
        prog.ensure_compiled()
        trace.reports = [r.to_json() for r in prog.reports]
        prog.trace = trace  # rendered to JSON on demand (Program.trace_json): snapshots are references
        return prog

    def _verify(self, p: Pass, prog: Program, flat_inputs, expected, depths: list[int], report: PassReport):
        """Lint and run ``prog`` after pass ``p``, compare with ``expected`` (rounding ``depths`` of the graph
        before); returns the new outputs and depths, raises VerificationError naming the pass."""
        problem = verify_mod.lint(prog.graph_module)
        if problem:
            report.verified = "failed"
            raise VerificationError(f"pass '{p.spec()}' left a malformed graph: {problem}")
        try:
            actual = prog.run_flat(flat_inputs)
        except Exception as exc:  # noqa: BLE001 - a pass that breaks execution is a verification failure
            report.verified = "failed"
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise VerificationError(f"pass '{p.spec()}' produced a graph that fails to run: "
                                    f"{type(exc).__name__}: {first}") from exc
        # the rounding depth of the deeper of the two graphs (an unrolled loop is legitimately deeper)
        after = verify_mod.output_depths(prog.graph_module)
        depths = [verify_mod.deeper(a, b) for a, b in zip(after, depths)] + after[len(depths):]
        problem = verify_mod.first_difference(expected, actual, depths)
        if problem:
            report.verified = "failed"
            raise VerificationError(f"pass '{p.spec()}' changed the numerics: {problem}")
        report.verified = "ok"
        return actual, depths


def optimize(program: Program, passes: str | Iterable[Any], *, target: str = "reference", verify: bool = True,
             bisect_limit: int | None = None, on_event=None, inplace: bool = False) -> Program:
    """Run ``passes`` (pipeline text or list) over ``program`` and return the optimized copy (or
    ``program`` itself, rewritten, with ``inplace``).

    ``target`` names the backend the result is meant for; it is set on the program before the passes
    run, for passes and backends that care (e.g. split's op-support tables)."""
    manager = PassManager(passes, verify=verify, bisect_limit=bisect_limit, on_event=on_event)
    prog = program if inplace else program.copy()
    prog.target = target
    return manager.run(prog, inplace=True)
