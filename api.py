"""The public API: capture → optimize → compile → save/load. See docs/architecture.md."""
from __future__ import annotations

from typing import Any, Iterable

from fxopt import zoo
from fxopt.backends.base import Compiled, compile_program, load as _load
from fxopt.ir.capture import capture as _capture, register_model_source
from fxopt.ir.program import Program
from fxopt.passes.manager import optimize as _optimize


register_model_source("zoo", zoo.get)   # "zoo:NAME": the built-in models


def capture(model: Any, example_inputs: Any = None, *, dynamic_shapes: Any = None,
            trust_pickle: bool = False) -> Program:
    """Capture ``model`` (nn.Module, ``.pt2`` path, ``file.py:Attr``, ``module:Attr`` or ``zoo:NAME``) with
    torch.export into a flat core-ATen :class:`~fxopt.ir.Program`. ``example_inputs`` is a tuple of positional
    inputs (default: the model's ``example_inputs()``); ``dynamic_shapes`` as for ``torch.export.export``.
    ``file.py:Attr`` and ``module:Attr`` import (run) that Python file; a ``.pt2`` whose parts need a full
    unpickler (which can run code) is refused unless ``trust_pickle``."""
    return _capture(model, example_inputs, dynamic_shapes=dynamic_shapes, trust_pickle=trust_pickle)


def optimize(program: Program, passes: str | Iterable[Any], *, target: str = "reference", verify: bool = True,
             bisect_limit: int | None = None, inplace: bool = False) -> Program:
    """Run a pass pipeline (``"dce,unroll{partition=25},dedupe"`` or a list) on a copy of ``program``;
    returns the optimized Program with ``reports`` and ``trace``. ``verify`` lints and numerically checks
    every pass that changed the graph; ``bisect_limit`` runs only the first N passes; ``inplace`` rewrites
    ``program`` itself instead of a copy (saves the graph copy on huge graphs)."""
    return _optimize(program, passes, target=target, verify=verify, bisect_limit=bisect_limit, inplace=inplace)


def compile(program: Program, backend: str = "reference") -> Compiled:  # noqa: A001 - public API name
    """Compile ``program`` with ``backend``; returns a :class:`Compiled` callable like the model, with
    ``.save(dir)``."""
    return compile_program(program, backend)


def load(directory: str) -> Compiled:
    """Load an artifact directory saved by ``Compiled.save``; returns a callable :class:`Compiled`."""
    return _load(directory)
