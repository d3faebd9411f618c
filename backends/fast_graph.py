"""A faster way to run an FX GraphModule eagerly: the same generated Python code, with every ATen op called
through its public Python binding where one dispatches exactly that overload (:mod:`fxopt.backends.public_ops`)
and through its C++ handle otherwise, instead of the ``OpOverload`` Python wrapper.

``torch.ops.aten.relu.default(x)`` walks four attribute lookups and a Python ``__call__`` frame before it
reaches the dispatcher; ``OpOverload.__call__`` is exactly ``self._op(*args, **kwargs)``, so binding ``_op``
once per op is the same call without the wrapper. On graphs of many small ops (routed experts, decoder
steps) that wrapper was ~25% of the run time on this machine (measured in docs/performance.md). The
graph's node order, frees and runtime asserts are unchanged: only the name an op is reached by differs, and
ops on dead scratch buffers write into them (``add`` -> ``add_``; see :mod:`fxopt.backends.reinplace`).
"""
from __future__ import annotations

import ast
from typing import Any, Callable, Iterable

import torch
import torch.fx

from fxopt.backends.public_ops import public_binding
from fxopt.backends.reinplace import reinplaced_graph


def _dotted(node: ast.AST) -> str | None:
    """``"torch.ops.aten.relu.default"`` for an Attribute chain rooted at a Name, else None."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    parts.append(node.id)
    return ".".join(reversed(parts))


def _resolve(dotted: str) -> Any:
    obj: Any = torch
    for part in dotted.split(".")[1:]:
        obj = getattr(obj, part)
    return obj


class _BindOps(ast.NodeTransformer):
    """Replaces ``torch.ops.<ns>.<op>.<overload>`` by a global bound to the overload's public binding (where
    one is listed) or its C++ handle."""

    def __init__(self):
        self.bound: dict[str, Callable] = {}
        self._names: dict[str, str] = {}

    def visit_Attribute(self, node: ast.Attribute) -> ast.AST:
        dotted = _dotted(node)
        if dotted is not None and dotted.startswith("torch.ops."):
            try:
                target = _resolve(dotted)
            except AttributeError:
                target = None
            if isinstance(target, torch._ops.OpOverload):
                name = self._names.setdefault(dotted, f"_fxopt_op{len(self._names)}")
                self.bound[name] = public_binding(target) or target._op
                return ast.copy_location(ast.Name(id=name, ctx=ast.Load()), node)
        return self.generic_visit(node)


def fast_forward(gm: torch.fx.GraphModule, inplace_ops: Iterable[str] | None = None) -> Callable[..., Any]:
    """Takes a GraphModule and optionally the names of its ops to run in place (``reinplace.inplace_plan``
    of it, saved with an artifact; None plans them from the graph's shape metadata). Returns
    ``run(*inputs)`` computing what ``gm(*inputs)`` computes, with dead scratch buffers reused in place
    (:mod:`fxopt.backends.reinplace`) and ATen ops bound to public bindings or C++ handles. Falls back to ``gm`` itself
    when its code cannot be rebuilt."""
    try:
        graph, _ = reinplaced_graph(gm.graph, inplace_ops)
        code = graph.python_code(root_module="self")
        tree = _BindOps()
        module = ast.fix_missing_locations(tree.visit(ast.parse(code.src)))
        namespace = dict(code.globals)
        namespace.update(tree.bound)
        exec(compile(module, f"<fxopt fast graph {type(gm).__name__}>", "exec"), namespace)  # noqa: S102
        forward = namespace["forward"]
    except Exception:  # noqa: BLE001 - a faster path only: the GraphModule itself always works
        return gm

    def run(*inputs):
        return forward(gm, *inputs)

    return run
