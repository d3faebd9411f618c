"""The public API: capture → optimize → compile → save/load, and ``export`` doing all of them, checked.
See docs/architecture.md."""
from __future__ import annotations

import dataclasses
import time
from typing import Any, Iterable, NamedTuple, Sequence

import torch
import torch.utils._pytree as pytree

from fxopt import zoo
from fxopt.backends.base import (Compiled, check_replaceable, compile_program, get_backend, load as _load,
                                 read_manifest, steps_summary)
from fxopt.errors import FxoptError, VerificationError, first_line
from fxopt.ir import loops
from fxopt.ir.capture.library_outputs import plain_tree
from fxopt.ir.capture import capture as _capture, eval_mode, register_model_source, resolve_model  # noqa: F401 - resolve_model re-exported for tools
from fxopt.ir.numerics import first_difference, max_abs_error, output_depths
from fxopt.ir.program import Program
from fxopt.passes.manager import optimize as _optimize
from fxopt.passes.registry import build_pipeline, default_pipeline


register_model_source("zoo", zoo.resolve)   # "zoo:NAME", "zoo:NAME{small=true}": the built-in models


def capture(model: Any, example_inputs: Any = None, *, example_kwargs: dict | None = None,
            dynamic_shapes: Any = None, trust_pickle: bool = False, decode: Any = None) -> Program:
    """Capture ``model`` (nn.Module, ``.pt2`` path, ``file.py:Attr``, ``module:Attr`` or ``zoo:NAME``) with
    torch.export into a flat core-ATen :class:`~fxopt.ir.Program`. ``example_inputs`` is a tuple of positional
    inputs (default: the model's ``example_inputs()``), ``example_kwargs`` a dict of keyword inputs (a Hugging
    Face batch: ``example_kwargs=tokenizer(text, return_tensors="pt")``); ``dynamic_shapes`` as for
    ``torch.export.export``.
    ``file.py:Attr`` and ``module:Attr`` import (run) that Python file; a ``.pt2`` whose parts need a full
    unpickler (which can run code) is refused unless ``trust_pickle``. ``decode``: a ``GenerationSpec``
    (or dict) to capture a Hugging Face model's greedy ``generate`` as a decode loop, or a ``LoopSpec`` (or
    a dict with a ``step``) naming the pieces of a greedy loop the model's forward runs (docs/decode-loop.md)."""
    return _capture(model, example_inputs, example_kwargs=example_kwargs, dynamic_shapes=dynamic_shapes,
                    trust_pickle=trust_pickle, decode=decode)


def optimize(program: Program, passes: str | Iterable[Any] | None = None, *, target: str = "reference",
             verify: bool = True, bisect_limit: int | None = None, inplace: bool = False,
             on_event: Any = None) -> Program:
    """Run a pass pipeline (``"dce,unroll{partition=25},dedupe"`` or a list; default: ``target``'s default
    pipeline, as ``fxopt passes`` lists it) on a copy of ``program``; returns the optimized Program with
    ``reports`` and ``trace``. ``verify`` lints and numerically checks every pass that changed the graph;
    ``bisect_limit`` runs only the first N passes; ``inplace`` rewrites ``program`` itself instead of a copy
    (saves the graph copy on huge graphs); ``on_event(kind, report)`` is called as each pass starts and ends."""
    if passes is None:
        passes = default_pipeline(target)
    return _optimize(program, passes, target=target, verify=verify, bisect_limit=bisect_limit, inplace=inplace,
                     on_event=on_event)


def compile(program: Program, backend: str = "reference") -> Compiled:  # noqa: A001 - public API name
    """Compile ``program`` with ``backend``; returns a :class:`Compiled` callable like the model, with
    ``.save(dir)``."""
    return compile_program(program, backend)


def load(directory: str) -> Compiled:
    """Load an artifact directory saved by ``Compiled.save``; returns a callable :class:`Compiled`."""
    return _load(directory)


# ------------------------------------------------------------------------------------------ export
@dataclasses.dataclass(frozen=True)
class ExportReport:
    """What :func:`export` did: the program, the backend and target, each pass's report, the artifact
    check's max abs error, the seconds per stage, where it was saved (``path``, None when not saved) and, for
    a saved artifact, the steps done here and left for the target host (from its manifest)."""

    program: str
    backend: str
    target: str
    passes: tuple
    max_abs_error: float
    seconds: dict
    path: str | None = None
    done_here: tuple = ()
    left_for_target: tuple = ()
    notes: tuple = ()

    def summary(self) -> str:
        """A few lines for a training script's log: passes run and changed, the check, time, the artifact."""
        changed = [r.spec for r in self.passes if r.modified]
        lines = [f"fxopt export {self.program}: {len(self.passes)} passes for target '{self.target}' "
                 f"({len(changed)} changed the graph: {', '.join(changed) or 'none'})",
                 f"check: the {self.backend} artifact reproduces the model (max abs error {self.max_abs_error:.3g})",
                 "time: " + ", ".join(f"{k} {v:.2f}s" for k, v in self.seconds.items())]
        if self.path:
            lines.append(f"artifact: {self.path}; compiled here: {', '.join(self.done_here) or 'nothing'}; "
                         f"left for the target host: {', '.join(self.left_for_target) or 'nothing'}")
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)


class ExportResult(NamedTuple):
    """``compiled, report = fxopt.export(...)``."""

    compiled: Compiled
    report: ExportReport


def export(model: Any, example_inputs: Any = None, *, backend: str = "reference",
           passes: str | Iterable[Any] | None = None, target: str | None = None, out: str | None = None,
           verify: bool = True, dynamic_shapes: Any = None, example_kwargs: dict | None = None) -> ExportResult:
    """The translation job after training, in one call: capture ``model`` (as :func:`capture` takes it) on
    ``example_inputs`` (and keyword inputs ``example_kwargs``), optimize it (``passes``, default: the target's pipeline; ``target`` defaults to the
    backend's name), compile it with ``backend``, check the artifact against the model on those inputs, and
    save it to ``out`` when given (atomically; an existing ``out`` is replaced only if it is an fxopt
    artifact or empty). Cheap arguments (backend, passes, out) are checked before the capture.

    Returns ``(compiled, report)`` (:class:`ExportResult`). Raises InputError for bad input and
    VerificationError when a pass or the artifact changes the numerics. The model is not modified."""
    get_backend(backend)
    target = target or backend.partition("{")[0].strip()
    pipeline = build_pipeline(passes if passes is not None else default_pipeline(target))
    if out is not None:
        check_replaceable(out)
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    program = _capture(model, example_inputs, example_kwargs=example_kwargs, dynamic_shapes=dynamic_shapes)
    expected = _model_outputs(model, program)
    seconds["capture"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    optimized = _optimize(program, pipeline, target=target, verify=verify)
    seconds["optimize"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    compiled = compile_program(optimized, backend)
    seconds["compile"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    error = check_compiled(compiled, program, expected,
                           "bisect with fxopt.optimize(..., bisect_limit=N)" if verify else
                           "rerun with verify=True to find the pass")
    seconds["check"] = time.perf_counter() - t0
    path, done, left = None, (), ()
    if out is not None:
        t0 = time.perf_counter()
        path = compiled.save(out)
        seconds["save"] = time.perf_counter() - t0
        done, left = steps_summary(read_manifest(path))
    report = ExportReport(program=program.name, backend=backend, target=target, passes=tuple(optimized.reports),
                          max_abs_error=error, seconds=seconds, path=path, done_here=tuple(done),
                          left_for_target=tuple(left),
                          notes=tuple(program.notes) + tuple(compiled.extra.get("notes", [])))
    return ExportResult(compiled, report)


def _model_outputs(model: Any, program: Program) -> tuple:
    """The flat outputs the artifact must reproduce: the user's module run eagerly in eval mode (as it was
    captured; its own flags are restored), or the captured program where the model is not a plain module
    (a spec string, a ``.pt2``, a decode-loop model whose program is the whole loop)."""
    if isinstance(model, torch.nn.Module) and not loops.is_decode_loop(model):
        with torch.no_grad(), eval_mode(model):
            return tuple(flat_leaves(plain_tree(model(*fresh_copy(program.example_inputs),
                                                      **fresh_copy(program.example_kwargs)))))
    return tuple(program.run_flat(program.flat_example_inputs()))


def fresh_copy(inputs: Any) -> Any:
    """``inputs`` with every tensor cloned: a model that writes into its inputs (``x.add_(1)``) must not
    change the caller's tensors, nor the inputs the next run is checked on."""
    return pytree.tree_map(lambda t: t.clone() if isinstance(t, torch.Tensor) else t, inputs)


def flat_leaves(value: Any) -> list:
    """The leaves of a (nested) model output, in pytree order."""
    return pytree.tree_flatten(value)[0]


def check_compiled(compiled: Any, program: Program, expected: Sequence[Any], hint: str = "") -> float:
    """Run ``compiled`` on ``program``'s example inputs and compare its flattened outputs with ``expected``
    under the shared tolerance rule (:mod:`fxopt.ir.numerics`, depth from ``program``). Returns the max abs
    error; raises VerificationError (its message ends with ``hint`` in parentheses, when given) when they
    differ or the artifact fails to run."""
    try:
        actual = flat_leaves(compiled(*fresh_copy(program.example_inputs), **fresh_copy(program.example_kwargs)))
    except FxoptError:
        raise
    except Exception as exc:  # noqa: BLE001 - a compiled artifact that cannot run is a failed check
        raise VerificationError(
            f"the compiled artifact ({compiled.backend}) fails to run on the example inputs: "
            f"{type(exc).__name__}: {first_line(str(exc)) or '?'}" + (f" ({hint})" if hint else "")) from exc
    problem = first_difference(tuple(expected), tuple(actual), output_depths(program.graph_module))
    if problem:
        raise VerificationError(
            f"the compiled artifact ({compiled.backend}) does not reproduce the captured model: {problem}"
            + (f" ({hint})" if hint else ""))
    return max_abs_error(expected, actual)
