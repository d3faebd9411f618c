"""fxopt as a ``torch.compile`` backend, and :func:`explain` for what it compiled.

    compiled = torch.compile(model, backend="fxopt", options={"backend": "xla"})
    with torch.no_grad():
        compiled(x)                         # each dynamo graph: captured, optimized, compiled, checked

``torch.compile`` finds the name through the ``torch_dynamo_backends`` entry point (no ``import fxopt``
needed); :func:`register` adds it by hand where fxopt is on ``sys.path`` without being installed.

Dynamo hands :func:`fxopt_backend` one FX graph per region between graph breaks, with the real example
inputs; guards and recompiles stay dynamo's. For each graph fxopt:

- binds the module's parameters and buffers (dynamo passes them as graph inputs) as the graph's weights,
  so fold-constants, dedupe and moe see weights, and fixes int inputs (symbolic sizes) to their values;
- runs :func:`fxopt.export`: capture, the target's default pipeline (or ``passes``), the chosen fxopt
  backend, and the artifact check against the graph on the example inputs (``verify`` also checks every pass);
- calls the artifact on later calls. The compiled graph is specialised to the weights it was compiled with
  (identity and version counter: an in-place update such as an optimizer step recompiles) and to the input
  shapes; a new shape (after dynamo's automatic dynamic shapes) compiles once more, up to ``max_shapes``
  per graph, after which that graph runs eagerly.

A graph fxopt does not compile is run by ``fallback`` (``"inductor"``, the default backend of
``torch.compile``, or ``"eager"``) and said in one log line: training graphs (grad enabled and a tensor that
requires grad; fxopt compiles inference graphs, under ``torch.no_grad()`` or ``torch.inference_mode()``), and
graphs fxopt cannot capture or compile (the line names the error). ``options={"fallback": "error"}`` raises
instead. Options: ``backend`` (fxopt backend, default "reference"), ``passes`` (pipeline text; default the
target's), ``target``, ``verify`` (default True), ``fallback``, ``max_shapes`` (default 8).
"""
from __future__ import annotations

import dataclasses
import logging
import re
import time
from typing import Any, Callable, Sequence

import torch
import torch.utils._pytree as pytree

from fxopt.api import export
from fxopt.backends.base import get_backend
from fxopt.errors import FxoptError, InputError
from fxopt.passes.registry import build_pipeline

NAME = "fxopt"
FALLBACKS = ("inductor", "eager", "error")
_LOG = logging.getLogger("fxopt.dynamo")
_WEIGHT_SOURCE = re.compile(r"\._(parameters|buffers)\[")


@dataclasses.dataclass(frozen=True)
class DynamoOptions:
    """``torch.compile(..., backend="fxopt", options={...})``, checked (see the module docstring)."""

    backend: str = "reference"
    passes: str | None = None
    target: str | None = None
    verify: bool = True
    fallback: str = "inductor"
    max_shapes: int = 8

    @classmethod
    def from_dict(cls, options: dict | None) -> "DynamoOptions":
        """Options from the ``options=`` dict; InputError naming an unknown option or a bad value."""
        options = dict(options or {})
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise InputError(f"torch.compile(backend='fxopt'): unknown option {unknown[0]!r} "
                             f"(options: {', '.join(sorted(known))})")
        opts = cls(**options)
        if not isinstance(opts.backend, str):
            raise InputError("torch.compile(backend='fxopt'): option 'backend' must be a backend name, e.g. 'xla'")
        get_backend(opts.backend)
        if opts.passes is not None:
            build_pipeline(opts.passes)
        if opts.fallback not in FALLBACKS:
            raise InputError(f"torch.compile(backend='fxopt'): fallback must be one of {', '.join(FALLBACKS)}, "
                             f"not {opts.fallback!r}")
        if not isinstance(opts.max_shapes, int) or opts.max_shapes < 1:
            raise InputError("torch.compile(backend='fxopt'): max_shapes must be an integer >= 1")
        return opts


@dataclasses.dataclass
class GraphRecord:
    """What became of one graph dynamo handed over: its op count, whether fxopt compiled it (``compiled``,
    with the backend, the passes that changed it, node counts and seconds per compile) or why not
    (``reason``, and who runs it instead: ``runs_with``)."""

    index: int
    ops: int
    backend: str
    compile_id: str = ""
    compiled: bool = False
    runs_with: str = "fxopt"
    reason: str = ""
    shapes: int = 0
    nodes_after: int = 0
    changed_by: tuple = ()
    seconds: float = 0.0

    def line(self) -> str:
        """One line for :class:`Explanation`."""
        head = f"graph {self.index} [{self.compile_id}]: {self.ops} ops" if self.compile_id else \
            f"graph {self.index}: {self.ops} ops"
        if self.compiled:
            passes = ", ".join(self.changed_by) or "no pass changed it"
            shapes = f", {self.shapes} shapes" if self.shapes > 1 else ""
            return (f"{head} -> fxopt {self.backend} ({self.nodes_after} nodes after {passes}; "
                    f"{self.seconds:.2f}s{shapes})")
        return f"{head} -> left to {self.runs_with}: {self.reason}"


# Lists that fxopt_backend appends its records to while explain() runs (a stack: explain may nest).
_RECORDERS: list[list[GraphRecord]] = []
_SAID: set[str] = set()


def _say(message: str) -> None:
    """Log ``message`` once per process (one line on stderr through logging's last-resort handler)."""
    if message not in _SAID:
        _SAID.add(message)
        _LOG.warning("fxopt: %s", message)


def fxopt_backend(gm: torch.fx.GraphModule, example_inputs: Sequence[Any], options: dict | None = None,
                  **_ignored: Any) -> Callable[..., Any]:
    """The dynamo backend: takes dynamo's graph and its example inputs (and ``torch.compile``'s
    ``options``); returns a callable that runs the graph compiled by fxopt, or by the fallback (see the
    module docstring). Raises InputError for bad options."""
    opts = DynamoOptions.from_dict(options)
    record = GraphRecord(index=_next_index(), compile_id=_compile_id(), ops=sum(n.op in ("call_function", "call_method", "call_module")
                                                      for n in gm.graph.nodes), backend=opts.backend)
    for recorder in _RECORDERS:
        recorder.append(record)
    if torch.is_grad_enabled() and any(isinstance(t, torch.Tensor) and t.requires_grad for t in example_inputs):
        reason = ("a training graph (grad enabled, inputs that require grad); fxopt compiles inference graphs: "
                  "run under torch.no_grad() or torch.inference_mode()")
        return _fall_back(gm, example_inputs, opts, record, reason)
    graph = _SpecialisedGraph(gm, opts, record)
    if not any(isinstance(a, torch.SymInt) for a in example_inputs):
        try:
            graph.compile_for(list(example_inputs))   # now, inside dynamo's compile step, while inputs are real
        except FxoptError as exc:
            if opts.fallback == "error":
                raise
            return _fall_back(gm, example_inputs, opts, record, f"fxopt could not compile it: {exc}")
    return graph


_COUNTER = [0]


def _next_index() -> int:
    _COUNTER[0] += 1
    return _COUNTER[0]


def _compile_id() -> str:
    """Dynamo's id of the compile in progress (``frame/recompile``, as its logs print it), or ""."""
    try:
        return str(torch._guards.CompileContext.current_compile_id() or "")
    except Exception:  # noqa: BLE001 - a private API: the label is only a convenience
        return ""


def _label(record: "GraphRecord") -> str:
    return f"graph [{record.compile_id}]" if record.compile_id else f"graph {record.index}"


def _fall_back(gm: torch.fx.GraphModule, example_inputs: Sequence[Any], opts: DynamoOptions, record: GraphRecord,
               reason: str) -> Callable[..., Any]:
    """Say why, record it, and return the fallback's callable for ``gm``."""
    if opts.fallback == "error":
        raise InputError(f"torch.compile(backend='fxopt'): {_label(record)}: {reason}")
    record.compiled, record.runs_with, record.reason = False, opts.fallback, reason
    _say(f"{_label(record)} ({record.ops} ops) left to {opts.fallback}: {reason}")
    if opts.fallback == "inductor":
        from torch._dynamo.backends.registry import lookup_backend  # local: loads inductor only when used

        return lookup_backend("inductor")(gm, list(example_inputs))
    return gm.forward


class _BoundGraph(torch.nn.Module):
    """Dynamo's graph as a module fxopt can capture: weights bound as this module's parameters and buffers,
    int inputs fixed to their values, the remaining tensors as its inputs."""

    def __init__(self, gm: torch.fx.GraphModule, layout: list[tuple[str, Any]]) -> None:
        super().__init__()
        self.graph_module = gm
        self._layout = []
        for position, (kind, value) in enumerate(layout):
            if kind == "weight":
                name = f"weight_{position}"
                if isinstance(value, torch.nn.Parameter):
                    self.register_parameter(name, value)
                else:
                    self.register_buffer(name, value)
                self._layout.append(("weight", name))
            else:
                self._layout.append((kind, value))
        self.eval()

    def forward(self, *inputs: Any) -> Any:
        args, k = [], 0
        for kind, value in self._layout:
            if kind == "weight":
                args.append(getattr(self, value))
            elif kind == "const":
                args.append(value)
            else:
                args.append(inputs[k])
                k += 1
        return self.graph_module(*args)


class _SpecialisedGraph:
    """The callable fxopt_backend returns: one fxopt artifact per (weights, input shapes) seen, at most
    ``max_shapes``; beyond that, dynamo's graph runs eagerly."""

    def __init__(self, gm: torch.fx.GraphModule, opts: DynamoOptions, record: GraphRecord) -> None:
        self.gm, self.opts, self.record = gm, opts, record
        self.weight_positions = _weight_positions(gm)
        self.compiled: dict[tuple, tuple[Any, list[int]]] = {}

    def key(self, args: Sequence[Any]) -> tuple:
        """What an artifact is specialised to: weight identity and version, tensor shapes and dtypes, ints."""
        parts = []
        for i, a in enumerate(args):
            if isinstance(a, torch.Tensor):
                parts.append((id(a), a._version) if i in self.weight_positions else (tuple(a.shape), a.dtype))
            else:
                parts.append(int(a) if isinstance(a, (int, torch.SymInt)) else repr(a))
        return tuple(parts)

    def compile_for(self, args: list) -> tuple[Any, list[int]]:
        """Compile an artifact for ``args`` (dynamo's full argument list); returns it and the positions of
        the arguments it takes. Raises FxoptError when fxopt cannot."""
        layout: list[tuple[str, Any]] = []
        inputs, positions = [], []
        for i, a in enumerate(args):
            if isinstance(a, torch.Tensor) and i in self.weight_positions:
                layout.append(("weight", a))
            elif isinstance(a, torch.Tensor):
                layout.append(("input", None))
                inputs.append(a.detach().clone())   # compiling runs the graph: never on the caller's tensors
                positions.append(i)
            else:
                layout.append(("const", int(a) if isinstance(a, torch.SymInt) else a))
        t0 = time.perf_counter()
        with torch.no_grad():
            compiled, report = export(_BoundGraph(self.gm, layout), tuple(inputs), backend=self.opts.backend,
                                      passes=self.opts.passes, target=self.opts.target, verify=self.opts.verify)
        entry = (compiled, positions)
        self.compiled[self.key(args)] = entry
        rec = self.record
        rec.compiled, rec.reason, rec.shapes = True, "", len(self.compiled)
        rec.changed_by = tuple(r.spec for r in report.passes if r.modified)
        rec.nodes_after = report.passes[-1].nodes_after if report.passes else 0
        rec.seconds += time.perf_counter() - t0
        return entry

    def __call__(self, *args: Any) -> Any:
        entry = self.compiled.get(self.key(args))
        if entry is None:
            if len(self.compiled) >= self.opts.max_shapes:
                _say(f"{_label(self.record)}: more than {self.opts.max_shapes} input shapes or weight "
                     "versions; the rest run eagerly (raise options['max_shapes'], or mark the dims dynamic "
                     "in a model fxopt captures with --dynamic-batch)")
                return self.gm(*args)
            try:
                entry = self.compile_for(list(args))
            except FxoptError as exc:
                if self.opts.fallback == "error":
                    raise
                _say(f"{_label(self.record)}: fxopt could not compile it for these inputs, runs eagerly: {exc}")
                return self.gm(*args)
        compiled, positions = entry
        outs = compiled.run_flat([args[i] for i in positions])
        return pytree.tree_unflatten(list(outs), compiled.out_spec) if compiled.out_spec is not None else outs


def _weight_positions(gm: torch.fx.GraphModule) -> set[int]:
    """Positions of the graph inputs that are module parameters or buffers (dynamo passes them as inputs;
    its placeholders record where each came from)."""
    positions = set()
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    for i, node in enumerate(placeholders):
        source = getattr(node.meta.get("grapharg"), "source", None)
        name = getattr(source, "name", "")
        name = name() if callable(name) else name
        example = getattr(node.meta.get("grapharg"), "example", None)
        if isinstance(example, torch.nn.Parameter) or _WEIGHT_SOURCE.search(str(name)):
            positions.add(i)
    return positions


def register() -> None:
    """Register :func:`fxopt_backend` with dynamo as ``"fxopt"`` unless it is known already (through the
    entry point, or an earlier call)."""
    from torch._dynamo.backends import registry  # local: dynamo costs a second to import; only when asked

    if NAME not in registry._BACKENDS and NAME not in registry._COMPILER_FNS:
        registry.register_backend(fxopt_backend, NAME)


# ------------------------------------------------------------------------------------------ explain
@dataclasses.dataclass(frozen=True)
class Explanation:
    """:func:`explain`'s answer: one record per graph dynamo handed over, and dynamo's graph breaks."""

    graphs: tuple
    break_reasons: tuple

    @property
    def compiled(self) -> list[GraphRecord]:
        """The graphs fxopt compiled."""
        return [g for g in self.graphs if g.compiled]

    @property
    def left(self) -> list[GraphRecord]:
        """The graphs fxopt left to the fallback, each with its reason."""
        return [g for g in self.graphs if not g.compiled]

    def __str__(self) -> str:
        head = (f"fxopt.explain: {len(self.graphs)} graphs, {len(self.break_reasons)} graph breaks; fxopt "
                f"compiled {len(self.compiled)}, left {len(self.left)}")
        lines = [head, *("  " + g.line() for g in self.graphs)]
        lines += [f"  break {i + 1}: {reason}" for i, reason in enumerate(self.break_reasons)]
        return "\n".join(lines)


def explain(model: Callable[..., Any], *inputs: Any, **options: Any) -> Explanation:
    """Run ``torch.compile(model, backend="fxopt", options=options)`` once on ``inputs`` under
    ``torch.no_grad()`` and report, per graph dynamo handed over, whether fxopt compiled it and why not, with
    dynamo's graph-break reasons (from ``torch._dynamo.explain``). Like ``torch._dynamo.explain`` it resets
    dynamo's caches before and after. Returns an :class:`Explanation` (print it for a table)."""
    DynamoOptions.from_dict(options)
    records: list[GraphRecord] = []
    torch._dynamo.reset()
    _RECORDERS.append(records)
    try:
        with torch.no_grad():
            torch.compile(model, backend=fxopt_backend, options=options)(*inputs)
    finally:
        _RECORDERS.remove(records)
        torch._dynamo.reset()
    try:
        with torch.no_grad():
            info = torch._dynamo.explain(model)(*inputs)
        reasons = tuple(_break_text(r) for r in info.break_reasons)
    finally:
        torch._dynamo.reset()
    for i, record in enumerate(records):
        record.index = i + 1
    return Explanation(tuple(records), reasons)


def _break_text(reason: Any) -> str:
    """A graph break as one line: dynamo's reason and the user frame it happened in."""
    text = " ".join(str(getattr(reason, "reason", reason)).split())
    text = text.split(" Explanation:")[0]   # dynamo's reason, then a paragraph of explanation and hints
    stack = getattr(reason, "user_stack", None) or []
    if stack:
        frame = stack[-1]
        text += f" (at {frame.filename}:{frame.lineno})"
    return text[:300]
