"""A symbolic batch for decode loops: which tensors carry the batch, the ``dynamic_shapes`` that export
``encode`` / ``init_state`` / ``step`` with one batch :class:`torch.export.Dim`, the checks that export did not
specialise it, and the symbolic-batch fake mode the ``unroll`` graph builders propagate shapes in.

``fxopt.capture(model, inputs, dynamic_shapes="batch")`` on a decode-loop protocol module
(:func:`fxopt.ir.capture.decoder.capture_decoder` with ``dynamic_batch=True``) uses this module. The batch is dim 0 of
every input, memory and state tensor whose dim 0 equals the example's batch (dim 0 of the first memory
tensor), and of the token. All pieces share one named ``Dim("batch", min=1)``, so a model whose code fixes
the batch (a reshape to the example's size, a tensor created with it) fails export with a one-line
:class:`InputError` instead of producing a graph that only accepts one batch. An example batch of 1 is
refused: torch.export specialises size-1 dims.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.utils._pytree as pytree

from fxopt.errors import InputError
import re

BATCH_DIM_NAME = "batch"


@dataclass
class BatchSpec:
    """Where the batch lives in a decode loop's tensors.

    ``batch``: the example's batch size; ``memory_dims`` / ``state_dims``: per flat memory / state tensor,
    whether its dim 0 is the batch; ``name``: the model's display name (for errors); ``dim``: the shared
    ``torch.export.Dim``.
    """

    batch: int
    memory_dims: list
    state_dims: list
    name: str
    dim: Any = None

    def __post_init__(self) -> None:
        if self.dim is None:
            self.dim = torch.export.Dim(BATCH_DIM_NAME, min=1)

    def _of(self, x: Any) -> Any:
        return {0: self.dim} if isinstance(x, torch.Tensor) and x.dim() > 0 and x.shape[0] == self.batch \
            else None

    def encode_shapes(self, inputs: tuple) -> tuple:
        """``dynamic_shapes`` for ``encode(*inputs)`` (exported through a ``forward(*args)`` wrapper)."""
        return (tuple(pytree.tree_map(self._of, x) for x in inputs),)

    def init_shapes(self, memory: Any) -> tuple:
        """``dynamic_shapes`` for ``init_state(memory)`` (through a ``forward(*args)`` wrapper)."""
        return ((pytree.tree_map(self._of, memory),),)

    def step_shapes(self, state_shapes: list, memory: Any) -> tuple:
        """``dynamic_shapes`` for ``step(token, state, memory)``: the batch Dim on the token and on dim 0 of
        the batched state/memory tensors, merged with ``state_shapes`` (per state tensor the cache Dims)."""
        state = []
        for spec, batched in zip(state_shapes, self.state_dims):
            merged = dict(spec or {})
            if batched:
                merged[0] = self.dim
            state.append(merged or None)
        return ({0: self.dim}, tuple(state), pytree.tree_map(self._of, memory))

    def check(self, piece, label: str) -> None:
        """Raise InputError when captured piece ``label`` (``encode``, ``init_state`` or ``step``) returns a
        batched tensor whose batch export fixed (the model's code created it with the example's size, e.g.
        ``torch.zeros(8, ...)``)."""
        batched, what = {"encode": (self.memory_dims, "memory"), "init_state": (self.state_dims, "state"),
                         "step": ([True] + list(self.state_dims), "output")}[label]
        _check_outputs(piece, batched, label, what, self.name)

    def record(self, region: dict, step) -> None:
        """Mark ``region`` as dynamic-batch: ``dynamic_batch``, ``batch_symbol`` (the step graph's symbol) and
        per memory/state layout ``batch_dim`` (0 or None)."""
        region["dynamic_batch"] = True
        token = step.placeholders()[0].meta["val"]
        region["batch_symbol"] = str(token.shape[0].node.expr)
        for layout, batched in zip(region["memory"], self.memory_dims):
            layout["batch_dim"] = 0 if batched else None
        for layout, batched in zip(region["state"], self.state_dims):
            layout["batch_dim"] = 0 if batched else None


def batch_spec(info: dict, inputs: tuple, name: str) -> BatchSpec:
    """The :class:`BatchSpec` of a probed decode loop (``info`` from :func:`fxopt.ir.capture.decoder.probe`). Raises
    InputError when the example batch is 1 or no input tensor carries the batch."""
    batch = int(info["batch"])
    if batch < 2:
        raise InputError(f"{name}: dynamic batch needs an example batch >= 2 (got 1; torch.export specialises "
                         "size-1 dims); capture with a batch-2 example, it then decodes batch 1 too")
    flat_inputs = [x for x in pytree.tree_leaves(inputs) if isinstance(x, torch.Tensor)]
    if not any(x.dim() > 0 and x.shape[0] == batch for x in flat_inputs):
        raise InputError(f"{name}: dynamic batch: no input tensor has the batch ({batch}) as dim 0")

    def dims(tensors: list) -> list:
        return [bool(x.dim() > 0 and x.shape[0] == batch) for x in tensors]

    return BatchSpec(batch, dims(info["memory"]), dims(info["states"][0]), name)


def _check_outputs(piece, batched: list, label: str, what: str, name: str) -> None:
    out = next(n for n in piece.graph.nodes if n.op == "output")
    flat = [a for a in pytree.tree_leaves(out.args[0]) if isinstance(a, torch.fx.Node)]
    for i, (node, is_batched) in enumerate(zip(flat, batched)):
        val = node.meta.get("val")
        if is_batched and isinstance(val, torch.Tensor) and not isinstance(val.shape[0], torch.SymInt):
            raise InputError(f"{name}: {label} returns {what}[{i}] with its batch fixed at {int(val.shape[0])} "
                             f"by torch.export (the code builds it with the example's batch size); derive "
                             f"its size from an input's shape, or capture without dynamic_shapes='batch'")


def is_specialization(exc: BaseException) -> bool:
    """True when an export failure says a dynamic dim was specialised / constrained."""
    text = str(exc)
    return "specialized" in text or "specialised" in text or "Constraints violated" in text \
        or "dynamic dim" in text


def specialized_error(name: str, label: str, exc: BaseException) -> InputError:
    """The one-line InputError for a ``label`` piece whose batch torch.export could not keep symbolic."""
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if not is_specialization(exc):
        return InputError(f"{name}: capturing {label} with a symbolic batch failed: {first}")

    violated = re.search(r"Constraints violated \([^)]*\)", first)
    at = re.search(r" at (\S+:\d+)", first)
    why = (violated.group(0) if violated else first) + (f" at {at.group(1)}" if at else "")
    return InputError(f"{name}: torch.export specialised the batch of {label} (the model's code fixes the "
                      f"batch size; {why}); make {label} batch-generic or capture without "
                      "dynamic_shapes='batch'")


def input_dims(program) -> dict:
    """``{symbol: [[input name, dim], ...]}`` for the symbolic dims of ``program``'s placeholders (the
    ``Program.dynamic_dims`` of a decode-loop program's current graph)."""
    dims: dict = {}
    for node in program.placeholders():
        val = node.meta.get("val")
        for i, d in enumerate(getattr(val, "shape", ()) if isinstance(val, torch.Tensor) else ()):
            if isinstance(d, torch.SymInt) and not d.node.expr.is_number:
                dims.setdefault(str(d.node.expr), []).append([node.name, i])
    return dims


# ------------------------------------------------------------------------------------------ graph building
def symbolic_mode(hint: int) -> tuple:
    """A FakeTensorMode with a ShapeEnv and one backed batch symbol (example value ``hint``); returns
    ``(mode, batch SymInt)``."""
    # local: torch._dynamo costs ~1 s to import; only dynamic-batch decode capture needs it
    from torch._dynamo.source import ConstantSource
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.fx.experimental.symbolic_shapes import DimDynamic, ShapeEnv

    env = ShapeEnv()
    mode = FakeTensorMode(shape_env=env, allow_non_fake_inputs=True)
    source = ConstantSource(BATCH_DIM_NAME)
    symbol = env.create_symbol(int(hint), source, dynamic_dim=DimDynamic.DYNAMIC)
    return mode, env.create_symintnode(symbol, hint=int(hint), source=source)


def check_symbolic(sym: torch.SymInt, graph_module: torch.fx.GraphModule, what: str) -> None:
    """Raise InputError when building ``what`` specialised the batch symbol ``sym`` (an op's shape
    inference fixed it to the example's size), so the graph would silently accept one batch only."""
    env = sym.node.shape_env
    expr = env.replace(sym.node.expr)
    out = next(n for n in graph_module.graph.nodes if n.op == "output")
    vals = [a.meta.get("val") for a in pytree.tree_leaves(out.args[0]) if isinstance(a, torch.fx.Node)]
    fixed = expr.is_number or any(isinstance(v, torch.Tensor) and v.dim() and not isinstance(v.shape[0], torch.SymInt)
                                  for v in vals[:1])
    if fixed:
        raise InputError(f"unroll: building {what} fixed the symbolic batch to {int(sym.node.hint)} (an op's "
                         "shape rule specialised it); capture without dynamic_shapes='batch' for this model")


__all__ = ["BatchSpec", "batch_spec", "is_specialization", "specialized_error", "input_dims", "symbolic_mode",
           "check_symbolic"]
