"""The pass manager: runs a pipeline on a Program, times and reports each pass, snapshots the graph into the
trace, and (with ``verify``) checks each pass: ``graph.lint()`` then a differential run on the example inputs
against the outputs before the pass. A failed check raises :class:`VerificationError` naming the pass and the
first differing output.

Recompilation is lazy: the GraphModule's Python code is regenerated only when a pass changed the graph and
the graph is about to run (verification) or the pipeline ends. A pass that changes nothing costs its own scan
plus a constant. A pass that reports a change but left every node's operation, inputs and weights as they
were (it wrote only node metadata or regions, as ``split`` does) is not recompiled, re-annotated or re-run:
its graph computes what it computed before, so its check is "unchanged". The manager compares a
fingerprint of the graph (:func:`graph_fingerprint`) before and after each such pass rather than trusting
the pass. The reference run of the original graph that verification compares against is made only when the
first pass that changed the graph is checked.
"""
from __future__ import annotations

import contextlib
import gc
import time
from typing import Any, Callable, Iterable, Iterator

import torch
import torch.fx

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


def _keyed(value):
    """``value`` (a node's args or kwargs) with nodes as their names and tensors as their identities."""
    def key(v):
        if isinstance(v, torch.fx.Node):
            return ("node", v.name)
        if isinstance(v, torch.Tensor):
            return ("tensor", id(v))
        return v
    return torch.fx.node.map_aggregate(value, key)


class GraphFingerprint:
    """What a graph computes, as a comparable value (see :func:`graph_fingerprint`). Each node is recorded as
    ``(name, op, target, args, kwargs)`` holding its own args/kwargs objects. FX replaces those objects
    whenever a node's inputs change, so a node whose args and kwargs are the very same objects as before is
    unchanged. Only nodes whose argument objects were replaced are compared value by value (nodes by name,
    tensors by identity). Two fingerprints and their comparison took 10-20 ms at 50k nodes, against
    0.11-0.13 s with every node's arguments keyed (2026-12-04, garbage collections aside)."""

    __slots__ = ("header", "graphs", "weights")

    def __init__(self, header: tuple, graphs: list, weights: list) -> None:
        """``header``: the root module's and graph's identities and codegen; ``graphs``: ``(prefix,
        [node record, ...])`` per graph module; ``weights``: ``(name, tensor id)`` per bound weight."""
        self.header, self.graphs, self.weights = header, graphs, weights

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, GraphFingerprint):
            return NotImplemented
        if self.header != other.header or self.weights != other.weights or len(self.graphs) != len(other.graphs):
            return False
        for (prefix_a, nodes_a), (prefix_b, nodes_b) in zip(self.graphs, other.graphs):
            if prefix_a != prefix_b or len(nodes_a) != len(nodes_b):
                return False
            for a, b in zip(nodes_a, nodes_b):
                if a[0] != b[0] or a[1] != b[1] or a[2] != b[2]:
                    return False
                if (a[3] is not b[3] or a[4] is not b[4]) and \
                        (_keyed(a[3]) != _keyed(b[3]) or _keyed(a[4]) != _keyed(b[4])):
                    return False
        return True

    __hash__ = None  # type: ignore[assignment] - compared, never hashed


def graph_fingerprint(program: Program) -> GraphFingerprint:
    """What a graph computes, as a comparable value: per node of the program's graph and of every graph
    module under it (control-flow bodies, partitions), its name, kind, target and arguments (nodes by name,
    tensors by identity), plus the identity of each weight tensor bound to the module tree. Node metadata
    (shapes, cost, placement) is left out. Two equal fingerprints run the same code on the same weights:
    passes bind new tensors rather than writing into old ones (see ``Program.copy``)."""
    gm = program.graph_module
    graphs = [(prefix, [(n.name, n.op, n.target, n.args, n.kwargs) for n in module.graph.nodes])
              for prefix, module in gm.named_modules() if isinstance(module, torch.fx.GraphModule)]
    weights = [(name, id(t)) for name, t in gm.state_dict(keep_vars=True).items()]
    return GraphFingerprint((id(gm), id(gm.graph), type(gm.graph._codegen)), graphs, weights)


def _same(a: GraphFingerprint, b: GraphFingerprint) -> bool:
    """Whether two fingerprints are equal; a comparison that cannot be made (a NaN literal, an argument
    whose ``==`` is not a bool) counts as different."""
    try:
        return bool(a == b)
    except Exception:  # noqa: BLE001 - undecidable means "changed": the pass then gets the full check
        return False


@contextlib.contextmanager
def _gc_frozen() -> Iterator[None]:
    """Move every object alive now out of the cyclic collector's reach while the pipeline runs (``gc.freeze``)
    and back afterwards. A big graph is millions of objects, and each full collection that the passes'
    allocations trigger walks all of them: about 0.3 s at 50k nodes, several times per pipeline.
    Garbage the passes make is still collected. A process that froze objects itself (a server freezing
    before it forks) is left as it is."""
    if gc.get_freeze_count():
        yield
        return
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


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
        with _gc_frozen():
            return self._run(program, inplace)

    def _run(self, program: Program, inplace: bool) -> Program:
        prog = program if inplace else program.copy()
        # what verification compares against, run only when a pass first changes the graph: the caller's
        # program (left as it is) or, in place, a copy of the graph as it was (sharing the weights)
        reference = (prog.copy() if inplace else program) if self.verify else None
        prog.reports = []
        trace = Trace(prog)
        flat_inputs, expected, depths = None, None, None
        totals = _totals(prog)
        fingerprint = graph_fingerprint(prog)
        for index, p in enumerate(self.passes):
            report = PassReport(index=index, name=p.name, spec=p.spec(), status="ran",
                                nodes_before=prog.num_nodes_with_submodules(), flops_before=totals[0], bytes_before=totals[1])
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
            code_changed = False
            if result.modified:
                after = graph_fingerprint(prog)
                code_changed = not _same(after, fingerprint)
                fingerprint = after
            if code_changed:
                prog.dirty = True
                shapes.infer_missing(prog.graph_module)
                provenance.mark_unowned(prog.graph, p.name)
                _annotate_costs(prog)
                totals = _totals(prog)
            report.seconds = time.perf_counter() - start
            report.modified = result.modified
            report.details = dict(result.details)
            report.notes = list(result.notes)
            report.nodes_after = prog.num_nodes_with_submodules()
            report.flops_after, report.bytes_after = totals
            if not code_changed:
                report.verified = "unchanged" if self.verify else "off"
                if result.modified:
                    trace.snapshot(prog, p.name)   # its metadata (placement, ...) changed
                else:
                    trace.unchanged(p.name)
            else:
                if self.verify:
                    if expected is None:   # every pass before this one left the graph as it was
                        flat_inputs = reference.flat_example_inputs()
                        expected = reference.run_flat(flat_inputs)
                        depths = verify_mod.output_depths(reference.graph_module)
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
