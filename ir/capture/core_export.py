"""One trace to core ATen: torch.export's ATen-IR path plus node-local decompositions of the few non-core ops
it leaves, instead of a training-IR export followed by ``run_decompositions`` (a second whole-graph trace).

``torch.export.export`` records the training IR (``conv2d``, ``linear``, ``batch_norm``, in-place ``relu_``) and
``run_decompositions()`` traces the whole program again to reach core ATen. Tracing once with
``pre_dispatch=False`` gives a functional, autograd-decomposed graph that is core ATen except for a few view
ops (``t``, ``transpose.int``, ``_unsafe_view``) and the odd composite (``silu``, ``glu``, ``stack``). Those are
decomposed here one node at a time, with torch's own table (``torch.export.default_decompositions``), one
``make_fx`` per distinct (op, argument shapes) and the result inlined in place. Measured 2026-12-04, one
thread: exporting zoo:resnet50 to core ATen took 1.27 s the public way and 0.67 s this way (docs/capture.md).

:func:`export_to_core` returns None, and the caller takes the public export + ``run_decompositions``, when:

- the caller did not allow it (:func:`allowing`): only block-wise capture does, because it checks every
  graph against eager outputs and falls back to whole-model export on any difference;
- shapes are dynamic: decompositions run during the trace add guards of their own, which can contradict
  the dynamic dims (seen on zoo:ocr's decoder step: "Constraints violated (cache0)"), after the trace's
  cost was paid;
- ``FXOPT_CORE_EXPORT=0``, or this torch has no ``torch.export._trace._export`` with ``pre_dispatch`` (a
  private API) or it raises;
- the model is known to call scaled-dot-product attention (:func:`watch_attention` saw it in an eager run),
  or the graph calls an attention kernel: their fake kernels give another memory layout than the CPU
  kernels, so a ``view`` traced after one can fail at run time (seen on Llama). The public path decomposes
  them in the layout eager recorded (``attention_layout.py``);
- the graph holds a higher-order op (``cond``, ``while_loop``, ...), whose subgraphs would need the same;
- a decomposition needs a constant (``get_attr``) or leaves a non-core op.
"""
from __future__ import annotations

import contextlib
import functools
import importlib
import operator
import os
import weakref
from typing import Any, Callable, Iterator

import torch
from torch._guards import detect_fake_mode
from torch.fx.experimental.proxy_tensor import make_fx
from torch.utils import _pytree as pytree

ENV_SWITCH = "FXOPT_CORE_EXPORT"
_ATTENTION = "scaled_dot_product"


_calls_attention: "weakref.WeakSet[torch.nn.Module]" = weakref.WeakSet()
_allowed = 0


def enabled() -> bool:
    """Whether the one-trace path may run now: inside :func:`allowing`, unless ``FXOPT_CORE_EXPORT=0``."""
    return _allowed > 0 and os.environ.get(ENV_SWITCH, "1") != "0"


def allowing(export: Callable) -> Callable:
    """``export`` run with the one-trace path allowed. Only callers that check every graph against eager
    outputs use it (block-wise capture): this path skips checks the public one makes (a ``Module.to()``
    inside forward that changes weights is an error there, a wrong graph here) and has given wrong values
    once (an ONNX-imported bidirectional GRU, 2026-12-04)."""
    def allowed(*args: Any, **kwargs: Any) -> Any:
        global _allowed
        _allowed += 1
        try:
            return export(*args, **kwargs)
        finally:
            _allowed -= 1
    return allowed


class _AttentionWatch(torch.overrides.TorchFunctionMode):
    def __init__(self) -> None:
        super().__init__()
        self.seen = False

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func is torch.nn.functional.scaled_dot_product_attention:
            self.seen = True
        return func(*args, **(kwargs or {}))


@contextlib.contextmanager
def watch_attention(model: torch.nn.Module) -> Iterator[None]:
    """Run an eager call of ``model`` inside: when it calls scaled-dot-product attention, ``model`` and its
    submodules take the public export path from then on (see the module docstring)."""
    watch = _AttentionWatch()
    with watch:
        yield
    if watch.seen:
        _calls_attention.update(model.modules())


def export_to_core(model: torch.nn.Module, inputs: tuple, kwargs: dict | None,
                   dynamic_shapes: Any) -> torch.export.ExportedProgram | None:
    """``model`` traced once to core ATen (non-strict, the caller's modes apply), or None when this path does
    not apply (see the module docstring); the caller then exports the public way, which reports errors."""
    if not enabled() or dynamic_shapes is not None or model in _calls_attention:
        return None
    try:
        private = importlib.import_module("torch.export._trace")._export
    except (ImportError, AttributeError):
        return None
    try:
        ep = private(model, inputs, kwargs or None, dynamic_shapes=dynamic_shapes, strict=False,
                     pre_dispatch=False)
    except Exception:  # noqa: BLE001 - the public path re-raises what matters, with fxopt's one-line error
        return None
    return ep if decompose_locally(ep) else None


@functools.cache
def _decompositions() -> dict:
    """torch's core-ATen decomposition table (built once: it is the same for every export)."""
    return torch.export.default_decompositions()


def needs_decomposition(target: Any) -> bool:
    """True for an ATen op that is not core and that torch's export table decomposes."""
    return (isinstance(target, torch._ops.OpOverload) and target.namespace == "aten"
            and torch.Tag.core not in target.tags and target in _decompositions())


def _unsupported(graph: torch.fx.Graph) -> bool:
    for node in graph.nodes:
        if node.op != "call_function":
            continue
        if isinstance(node.target, torch._ops.HigherOrderOperator):
            return True
        if isinstance(node.target, torch._ops.OpOverload) and _ATTENTION in node.target.name():
            return True
    return False


def _signature(value: Any) -> Any:
    if isinstance(value, torch.fx.Node):
        val = value.meta.get("val")
        if isinstance(val, torch.Tensor):
            return ("T", str(val.dtype), tuple(map(str, val.shape)), tuple(map(str, val.stride())),
                    str(val.device))
        return ("N", str(val))
    return ("C", repr(value))


def decompose_locally(ep: torch.export.ExportedProgram) -> bool:
    """Replace, in ``ep``'s graph, every op :func:`needs_decomposition` by its core-ATen decomposition;
    returns False (the graph may be half rewritten: discard ``ep``) when the graph is one this path leaves to
    ``run_decompositions``."""
    gm = ep.graph_module
    graph = gm.graph
    if _unsupported(graph):
        return False
    todo = [n for n in graph.nodes if n.op == "call_function" and needs_decomposition(n.target)]
    if not todo:
        return True
    fake_mode = detect_fake_mode([n.meta.get("val") for n in graph.nodes if n.op == "placeholder"])
    if fake_mode is None:
        return False
    table = _decompositions()
    traced: dict[tuple, torch.fx.GraphModule] = {}
    renamed: dict[str, str] = {}
    for node in todo:
        flat, spec = pytree.tree_flatten((node.args, node.kwargs))
        slots = [i for i, a in enumerate(flat) if isinstance(a, torch.fx.Node)]
        key = (node.target, spec, tuple(_signature(a) for a in flat))
        sub = traced.get(key)
        if sub is None:
            def call(*values, flat=flat, slots=slots, spec=spec, target=node.target):
                leaves = list(flat)
                for i, v in zip(slots, values):
                    leaves[i] = v
                args, kwargs = pytree.tree_unflatten(leaves, spec)
                return target(*args, **kwargs)
            try:
                with fake_mode:
                    sub = make_fx(call, decomposition_table=table)(*[flat[i].meta["val"] for i in slots])
            except Exception:  # noqa: BLE001 - an op this path cannot take: the caller decomposes the usual way
                return False
            traced[key] = sub
        if not _inline(graph, node, sub, [flat[i] for i in slots], renamed):
            return False
    _rename_outputs(ep, renamed)
    gm.recompile()
    return True


def _inline(graph: torch.fx.Graph, node: torch.fx.Node, sub: torch.fx.GraphModule, args: list,
            renamed: dict[str, str]) -> bool:
    """Put ``sub``'s nodes before ``node`` (its placeholders bound to ``args``), route ``node``'s users to its
    result and erase ``node``, recording in ``renamed`` which node took over each erased node's name; False
    when ``sub`` holds something this path does not inline."""
    env: dict[torch.fx.Node, Any] = {}
    placeholders = [p for p in sub.graph.nodes if p.op == "placeholder"]
    if len(placeholders) != len(args):   # e.g. a number input traced as a constant: binding would misalign
        return False
    env.update(zip(placeholders, args))
    result: Any = None
    with graph.inserting_before(node):
        for s in sub.graph.nodes:
            if s.op == "placeholder":
                continue
            if s.op == "output":
                result = torch.fx.map_arg(s.args[0], env.__getitem__)
                continue
            if s.op != "call_function" or needs_decomposition(s.target):
                return False
            new = graph.call_function(s.target, torch.fx.map_arg(s.args, env.__getitem__),
                                      torch.fx.map_arg(s.kwargs, env.__getitem__))
            new.meta = {k: v for k, v in node.meta.items() if k not in ("val", "tensor_meta")}
            new.meta["val"] = s.meta.get("val")
            env[s] = new
    if isinstance(result, (list, tuple)):   # a multi-output op: its users are getitems
        if not all(u.target is operator.getitem for u in node.users):
            return False
        replacements = {user: result[user.args[1]] for user in node.users}
    elif isinstance(result, torch.fx.Node):
        replacements = {node: result}
    else:
        return False
    for old, new in replacements.items():
        if not isinstance(new, torch.fx.Node):
            return False
        old.replace_all_uses_with(new)
        renamed[old.name] = new.name
    for old in replacements:
        if old is not node:
            graph.erase_node(old)
    graph.erase_node(node)
    return True


def _rename_outputs(ep: torch.export.ExportedProgram, renamed: dict[str, str]) -> None:
    """Point ``ep``'s output specs (user outputs, buffer mutations) at the nodes that replaced their nodes."""
    for spec in ep.graph_signature.output_specs:
        name = getattr(spec.arg, "name", None)
        while name in renamed:
            name = renamed[name]
        if name is not None and name != spec.arg.name:
            spec.arg = type(spec.arg)(name=name)
