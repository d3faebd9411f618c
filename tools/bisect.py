"""``fxopt bisect MODEL --passes SPEC``: find the first pass application that breaks a model.

As LLVM's ``-opt-bisect-limit``: the model is captured once, then ``optimize(program, SPEC, verify=False,
bisect_limit=k)`` runs only the first ``k`` pass applications; a binary search over ``k`` finds the smallest
``k`` whose result is *bad*: it raises, or its outputs on the example inputs differ from the captured
program's (the pass verifier's tolerances per dtype, or ``--atol``/``--rtol``), or — with ``--backend`` — the
backend fails to compile it, or the compiled artifact fails to run or gives other outputs. Pass application
``k`` (1-based) is then the culprit; the command prints it (index and spec), the max abs error, and the node
diff of that one pass (nodes removed / added / changed between the graph before and after it).

The search assumes that once a prefix of the pipeline is bad, longer prefixes are too (as opt-bisect
does); it checks both ends, so a pipeline that is fine prints "no pass breaks numerics". Exit codes: 0 when
nothing breaks, 1 when a bad pass application was found (or the backend fails with no passes at all), 2 for
bad input (unknown pass or backend, unreadable model).
"""
from __future__ import annotations

# local imports: commands import torch and the compiler only when they run, so `fxopt --help` and argument errors answer without them (startup cost)
import argparse
from dataclasses import dataclass, field
from typing import Any, Callable


@dataclass
class Verdict:
    """The outcome of one bisect step: ``bad``, a one-line ``reason``, and ``max_error`` (inf when it
    failed to run)."""

    bad: bool
    reason: str = ""
    max_error: float = 0.0


@dataclass
class BisectResult:
    """What :func:`bisect_pipeline` found: ``first_bad`` (1-based index of the culprit pass application;
    0 when the program is bad with no passes; None when nothing is bad), its ``spec``, ``verdict``,
    ``applications`` (pipeline length), ``steps`` (optimize runs made) and ``diff`` (:class:`NodeDiff`)."""

    applications: int
    first_bad: int | None = None
    spec: str | None = None
    verdict: Verdict | None = None
    steps: int = 0
    diff: Any = None


@dataclass
class NodeDiff:
    """Nodes ``removed``, ``added`` and ``changed`` (``(before, after)`` pairs) by one pass, each as text."""

    removed: list = field(default_factory=list)
    added: list = field(default_factory=list)
    changed: list = field(default_factory=list)

    def lines(self, limit: int = 12) -> list[str]:
        """The diff as compact text lines (``- node``, ``+ node``, ``~ before -> after``), at most ``limit``
        per kind, with a count of the rest."""
        out = [f"{len(self.removed)} removed, {len(self.added)} added, {len(self.changed)} changed"]
        for mark, items in (("-", self.removed), ("+", self.added)):
            out += [f"  {mark} {item}" for item in items[:limit]]
            if len(items) > limit:
                out.append(f"  {mark} ... {len(items) - limit} more")
        out += [f"  ~ {before}  ->  {after}" for before, after in self.changed[:limit]]
        if len(self.changed) > limit:
            out.append(f"  ~ ... {len(self.changed) - limit} more")
        return out


def _node_text(node) -> str:
    import torch.fx

    def arg(a):
        return f"%{a.name}" if isinstance(a, torch.fx.Node) else repr(a)

    target = node.target
    if node.op == "call_function":
        target = str(target).replace("aten.", "aten::", 1) if "aten." in str(target) else getattr(
            target, "__name__", str(target))
    args = ", ".join(str(torch.fx.node.map_aggregate(a, arg)) for a in node.args)
    kwargs = "".join(f", {k}={torch.fx.node.map_aggregate(v, arg)}" for k, v in node.kwargs.items())
    if node.op == "placeholder":
        return f"{node.name} = input"
    if node.op == "get_attr":
        return f"{node.name} = self.{node.target}"
    return f"{node.name} = {target}({args}{kwargs})"


def node_diff(before, after) -> NodeDiff:
    """Diff two Programs' graphs by node name: removed, added, and same-named nodes whose target or
    arguments differ. Returns a :class:`NodeDiff`."""
    old = {n.name: _node_text(n) for n in before.graph.nodes}
    new = {n.name: _node_text(n) for n in after.graph.nodes}
    return NodeDiff(removed=[t for name, t in old.items() if name not in new],
                    added=[t for name, t in new.items() if name not in old],
                    changed=[(old[name], new[name]) for name in old if name in new and old[name] != new[name]])


def _compare(expected: tuple, actual: tuple, atol: float | None, rtol: float | None,
             depths: list[int] | None = None) -> Verdict:
    import torch

    from fxopt.ir.numerics import first_difference, max_abs_error

    error = max_abs_error(expected, actual)
    if atol is None and rtol is None:
        problem = first_difference(tuple(expected), tuple(actual), depths)
    else:
        problem = None
        if len(expected) != len(actual):
            problem = f"the graph now has {len(actual)} outputs instead of {len(expected)}"
        for i, (e, a) in enumerate(zip(expected, actual)):
            if problem:
                break
            if not isinstance(e, torch.Tensor) or not isinstance(a, torch.Tensor):
                problem = None if e == a else f"output {i}: expected {e!r}, got {a!r}"
            elif e.shape != a.shape or e.dtype != a.dtype:
                problem = f"output {i}: {a.dtype}{list(a.shape)} instead of {e.dtype}{list(e.shape)}"
            elif not torch.allclose(a.double(), e.double(), rtol=rtol or 0.0, atol=atol or 0.0, equal_nan=True):
                problem = f"output {i}: max abs error {max_abs_error([e], [a]):.3g} exceeds rtol={rtol or 0:g}, atol={atol or 0:g}"
    return Verdict(bool(problem), problem or "", error)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"


def make_judge(program, pipeline: list, *, backend: str | None = None, atol: float | None = None,
               rtol: float | None = None) -> Callable[[int], Verdict]:
    """A function ``k -> Verdict`` judging the first ``k`` pass applications of ``pipeline`` on
    ``program`` (see the module docstring); ``program`` is never modified."""
    from fxopt.backends.base import compile_program
    from fxopt.passes.manager import optimize
    from fxopt.api import flat_leaves

    from fxopt.ir.numerics import output_depths

    flat = program.flat_example_inputs()
    expected = tuple(program.run_flat(flat))
    depths = output_depths(program.graph_module)

    def judge(k: int) -> Verdict:
        try:
            result = optimize(program, pipeline, verify=False, bisect_limit=k, target=backend or "reference")
        except Exception as exc:  # noqa: BLE001 - a pass that crashes is a bad application
            return Verdict(True, f"the pipeline raised {_first_line(exc)}", float("inf"))
        try:
            actual = tuple(result.run_flat(result.flat_example_inputs()))
        except Exception as exc:  # noqa: BLE001
            return Verdict(True, f"the optimized graph fails to run: {_first_line(exc)}", float("inf"))
        verdict = _compare(expected, actual, atol, rtol, depths)
        if verdict.bad or backend is None:
            return verdict
        try:
            compiled = compile_program(result, backend)
        except Exception as exc:  # noqa: BLE001 - BackendError or a crash: the backend fails here
            return Verdict(True, f"backend '{backend}' fails to compile it: {_first_line(exc)}", float("inf"))
        try:
            artifact = tuple(flat_leaves(compiled(*program.example_inputs, **program.example_kwargs)))
        except Exception as exc:  # noqa: BLE001
            return Verdict(True, f"the {backend} artifact fails to run: {_first_line(exc)}", float("inf"))
        verdict = _compare(expected, artifact, atol, rtol, depths)
        if verdict.bad:
            verdict.reason = f"the {backend} artifact differs: {verdict.reason}"
        return verdict

    return judge


def bisect_pipeline(program, passes: Any, *, backend: str | None = None, atol: float | None = None,
                    rtol: float | None = None) -> BisectResult:
    """Binary-search the first bad pass application of ``passes`` (pipeline text or list) on ``program``;
    returns a :class:`BisectResult` (with the culprit's node diff). ``program`` is never modified."""
    from fxopt.passes.manager import optimize
    from fxopt.passes.registry import build_pipeline

    pipeline = build_pipeline(passes)
    judge = make_judge(program, pipeline, backend=backend, atol=atol, rtol=rtol)
    result = BisectResult(applications=len(pipeline))
    verdicts: dict[int, Verdict] = {}

    def bad(k: int) -> bool:
        if k not in verdicts:
            verdicts[k] = judge(k)
            result.steps += 1
        return verdicts[k].bad

    if not bad(len(pipeline)):
        return result
    if bad(0):
        result.first_bad, result.verdict = 0, verdicts[0]
        return result
    lo, hi = 0, len(pipeline)  # bad(lo) is False, bad(hi) is True
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if bad(mid):
            hi = mid
        else:
            lo = mid
    result.first_bad, result.spec, result.verdict = hi, pipeline[hi - 1].spec(), verdicts[hi]
    before = optimize(program, pipeline, verify=False, bisect_limit=hi - 1, target=backend or "reference")
    try:
        after = optimize(program, pipeline, verify=False, bisect_limit=hi, target=backend or "reference")
        result.diff = node_diff(before, after)
    except Exception:  # noqa: BLE001 - the pass itself crashed: there is no graph after it
        result.diff = None
    return result


# ------------------------------------------------------------------------------------------ command line
def register(add) -> None:
    """Add the ``bisect`` subcommand to the ``fxopt`` CLI (``add`` is tools.cli's sub-parser factory)."""
    from fxopt.tools.cli import add_model_input_arguments  # local: cli imports this module to register it
    p = add("bisect", "find the first pass application that breaks a model's numerics (or a backend)",
            "Capture MODEL once, then binary-search over the pass applications of SPEC (with the bisect "
            "limit) for the first one whose result differs from the captured model on the example inputs, "
            "raises, or (with --backend) makes the backend fail; print it with the node diff of that pass. "
            "Exit 0 when no pass breaks the model, 1 when one does.")
    p.add_argument("model", metavar="MODEL", help="zoo:NAME, a .pt2 file, file.py:Attr or module:Attr")
    add_model_input_arguments(p)
    p.add_argument("--passes", metavar="SPEC", required=True, help="the pass pipeline to bisect")
    p.add_argument("--backend", metavar="NAME", help="also compile and run each candidate with this backend")
    p.add_argument("--atol", type=float, help="absolute tolerance (default: the verifier's, by dtype)")
    p.add_argument("--rtol", type=float, help="relative tolerance (default: the verifier's, by dtype)")
    p.add_argument("--limit", type=int, default=12, help="node diff lines shown per kind (default 12)")
    p.set_defaults(handler=cmd_bisect)


def cmd_bisect(args: argparse.Namespace) -> int:
    """``fxopt bisect``: prints the result; returns 0 (nothing breaks) or 1 (found)."""
    from fxopt.backends.base import get_backend
    from fxopt.errors import InputError
    from fxopt.passes.registry import build_pipeline
    from fxopt.tools.cli import capture_model, model_request

    spec, inputs = model_request(args)
    pipeline = build_pipeline(args.passes)  # InputError before the slow capture
    if args.backend:
        get_backend(args.backend)
    for name in ("atol", "rtol"):
        value = getattr(args, name)
        if value is not None and not value >= 0:
            raise InputError(f"--{name} must be a non-negative number, got {value}")
    program = capture_model(spec, args.debug, inputs=inputs)
    result = bisect_pipeline(program, pipeline, backend=args.backend, atol=args.atol, rtol=args.rtol)
    what = f" with backend {args.backend}" if args.backend else ""
    head = f"bisect {program.name}: {result.applications} pass applications, {result.steps} runs{what}"
    if result.first_bad is None:
        print(f"{head}: no pass breaks numerics")
        return 0
    verdict = result.verdict
    if result.first_bad == 0:
        print(f"{head}: the model is bad before any pass ran: {verdict.reason}")
        return 1
    print(head)
    print(f"first bad pass application: #{result.first_bad} of {result.applications}: {result.spec} "
          f"(--bisect-limit {result.first_bad} is bad, {result.first_bad - 1} is good)")
    print(f"why: {verdict.reason}")
    print(f"max abs error: {verdict.max_error:.3g}")
    if result.diff is not None:
        print(f"node diff of {result.spec}: " + "\n".join(result.diff.lines(args.limit)))
    return 1
