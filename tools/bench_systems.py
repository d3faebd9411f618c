"""The systems ``fxopt bench`` times: the original model (eager), ``torch.compile``, fxopt artifacts.

Each builder returns a :class:`System` (a callable plus its setup time) or raises; ``fxopt bench`` turns a
failure into one "not available" line and goes on with the rest.

Batch sizes: fxopt captures every model with *static* shapes, once per batch size (:func:`resize_batch`
makes the inputs), because the accelerator backends compile for static shapes anyway (XLA specializes per
shape, Neuron needs static shapes, TensorRT wants a profile per range) and shape-specialized graphs are what
a deployment at that batch would run. ``torch.compile`` is given the same deal: a fresh
``torch.compile(model, dynamic=False)`` per batch (dynamo's caches reset first so no batch silently falls
back to eager after the recompile limit).
"""
from __future__ import annotations

# local imports: commands import torch and the compiler only when they run, so `fxopt --help` and argument errors answer without them (startup cost)
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
import torch.utils._pytree as pytree

from fxopt.errors import InputError


@dataclass
class System:
    """One thing being timed: ``name`` (``eager``, ``compile``, ``fxopt:<backend>``), ``fn`` (called as
    ``fn(*inputs)``), ``setup_s`` (capture/optimize/compile seconds, excluded from timings) and ``notes``."""

    name: str
    fn: Callable[..., Any]
    setup_s: float = 0.0
    notes: list[str] = field(default_factory=list)


def resize_batch(inputs: tuple, batch: int) -> tuple:
    """``inputs`` with every tensor whose dim 0 is the example batch cycled (rows 0, 1, ..., b-1, 0, ...)
    to ``batch`` rows; other leaves unchanged. Returns a new tuple (the given tensors are not modified);
    raises InputError when no input has a batch dim or ``batch`` < 1."""
    if batch < 1:
        raise InputError(f"batch size must be >= 1, got {batch}")
    leaves, spec = pytree.tree_flatten(tuple(inputs))
    tensors = [x for x in leaves if isinstance(x, torch.Tensor) and x.dim() > 0]
    if not tensors:
        raise InputError("the model's example inputs have no tensor with a batch dim (dim 0); "
                         "fxopt bench varies dim 0 of the inputs")
    base = int(tensors[0].shape[0])
    if base == batch:
        return tuple(inputs)
    index = torch.arange(batch) % base
    resized = [x.index_select(0, index).contiguous() if isinstance(x, torch.Tensor) and x.dim() > 0
               and x.shape[0] == base else x for x in leaves]
    return tuple(pytree.tree_unflatten(resized, spec))


def flat_outputs(value: Any) -> list:
    """The tensor leaves of a model output, in pytree order."""
    return [x for x in pytree.tree_flatten(value)[0]]


def eager_system(model: Any) -> System:
    """The original model called as is (``model(*inputs)``, autograd off)."""
    return System("eager", lambda *a: model(*a))


def compile_system(model: Any, inputs: tuple) -> System:
    """``torch.compile(model, dynamic=False)`` after resetting dynamo; the first call (compilation) is made
    here and its wall time is ``setup_s``. Raises whatever torch.compile raises."""
    import torch._dynamo

    torch._dynamo.reset()
    compiled = torch.compile(model, dynamic=False)
    start = time.perf_counter()
    with torch.no_grad():
        compiled(*inputs)
    return System("compile", lambda *a: compiled(*a), setup_s=time.perf_counter() - start,
                  notes=["inductor (default mode), one static-shape graph per batch"])


def capture_program(model: Any, inputs: tuple):
    """``fxopt.capture(model, inputs)`` with torch's stderr chatter hidden; returns ``(program, seconds)``."""
    from fxopt.tools.cli import _swallow_stderr
    import fxopt

    start = time.perf_counter()
    with _swallow_stderr(True):
        program = fxopt.capture(model, inputs)
    return program, time.perf_counter() - start


def backend_system(program: Any, backend: str, capture_s: float = 0.0, passes: str | None = None) -> System:
    """Optimize a copy of ``program`` with ``passes`` (default: the backend's default pipeline, target =
    the backend) and compile it with ``backend``; ``setup_s`` = capture + passes + compile seconds.
    Raises InputError/BackendError/... as those steps do."""
    import fxopt
    from fxopt.passes.registry import default_pipeline

    pipeline = passes if passes is not None else default_pipeline(backend)
    start = time.perf_counter()
    optimized = fxopt.optimize(program, pipeline, target=backend, verify=False)
    compiled = fxopt.compile(optimized, backend)
    setup = capture_s + time.perf_counter() - start
    return System(f"fxopt:{backend}", lambda *a: compiled(*a), setup_s=setup,
                  notes=[f"passes: {pipeline}"])


def artifact_system(directory: str) -> tuple[System, Any]:
    """``fxopt.load(directory)`` as a system named ``fxopt:<backend>``; returns ``(system, compiled)``."""
    import fxopt

    start = time.perf_counter()
    compiled = fxopt.load(directory)
    return System(f"fxopt:{compiled.backend}", lambda *a: compiled(*a),
                  setup_s=time.perf_counter() - start, notes=[f"artifact {directory}"]), compiled


def artifact_batch(manifest: dict) -> int | None:
    """The static batch (dim 0 of the first tensor input) of an artifact's manifest; ``None`` when that
    dim is symbolic (the artifact takes any batch) or there is no tensor input."""
    for spec in manifest.get("inputs") or []:
        shape = spec.get("shape")
        if shape:
            return shape[0] if isinstance(shape[0], int) else None
    return None


def synthetic_inputs(specs: list[dict], batch: int | None, in_spec: Any = None) -> tuple:
    """Inputs matching an artifact's input ``specs``: floats ~ N(0, 1), integers and bools zeros (valid
    indices for embeddings); symbolic dims become ``batch`` for dim 0 and 1 elsewhere (dims sharing a symbol
    agree). Returns a flat tuple, or the positional arguments under ``in_spec`` when given."""
    gen = torch.Generator().manual_seed(0)
    symbols: dict[str, int] = {}
    flat = []
    for spec in specs:
        shape = []
        for i, d in enumerate(spec.get("shape") or []):
            if isinstance(d, int):
                shape.append(d)
            else:
                shape.append(symbols.setdefault(d, batch if i == 0 and batch else 1))
        dtype = getattr(torch, spec.get("dtype") or "float32")
        if dtype.is_floating_point:
            flat.append(torch.randn(shape, generator=gen).to(dtype))
        else:
            flat.append(torch.zeros(shape, dtype=dtype))
    if in_spec is not None:
        args, _ = pytree.tree_unflatten(flat, in_spec)
        return tuple(args)
    return tuple(flat)
