"""Run-time reinplacing: a copy of a functional graph in which an op whose first input is a dead scratch
buffer writes its result into that buffer (``add`` -> ``add_``, ``relu`` -> ``relu_``, ``index_copy`` ->
``index_copy_`` ...), for the backends that execute graphs eagerly.

The IR stays functional — every pass, exporter and serializer sees pure ops. Only the code a runtime runs is
changed, and only where nothing can tell: an op ``f(a, ...)`` becomes ``f_(a, ...)`` when

* ``f`` returns a new tensor (its schema aliases nothing) and ATen has ``f_`` with the same overload, whose
  first argument is written (``Tensor(a!) self``), and ``f`` is not random;
* ``a``'s storage was allocated inside this graph by an op that returns a new tensor (never an input, a
  weight or a constant), followed through views (any op whose schema says its result aliases an argument);
* no tensor sharing that storage is read after this op, and no other argument of the op shares it;
* the result has ``a``'s dtype, shape and strides (so type promotion, broadcasting of ``a`` and layout
  changes all keep the functional op).

Where a node lacks a ``val`` (a graph loaded without shape metadata) it is left as it is. On the routed
mixture-of-experts graph this removes the copy of a fresh buffer from ``index_copy``/``index_add`` and the
allocations of the [E, capacity, hidden] intermediates (docs/performance.md has the measurement).
"""
from __future__ import annotations

import operator
from typing import Any, Iterable

import torch
import torch.fx
from torch.fx.experimental.symbolic_shapes import statically_known_true

from fxopt.ir.aliasing import HIDDEN_ALIASES

_NO_VARIANT = object()


def _returns_fresh(target: Any) -> bool:
    """True when ``target`` is an operator overload whose results alias none of its arguments (by its
    schema, less the ops whose schema hides a view: ``ir.aliasing.HIDDEN_ALIASES``)."""
    if not isinstance(target, torch._ops.OpOverload) or target.overloadpacket in HIDDEN_ALIASES:
        return False
    return all(r.alias_info is None for r in target._schema.returns)


def _aliased_argument(node: torch.fx.Node) -> torch.fx.Node | None:
    """The argument ``node``'s result is a view of (schema alias sets, read-only), else None."""
    target = node.target
    if not isinstance(target, torch._ops.OpOverload):
        return None
    if target.overloadpacket in HIDDEN_ALIASES:       # `_unsafe_view(a)` shares a's storage
        return node.args[0] if node.args and isinstance(node.args[0], torch.fx.Node) else None
    sets = {s for r in target._schema.returns if r.alias_info is not None and not r.alias_info.is_write
            for s in r.alias_info.before_set}
    if not sets:
        return None
    for i, arg in enumerate(target._schema.arguments):
        if arg.alias_info is not None and set(arg.alias_info.before_set) & sets:
            value = node.args[i] if i < len(node.args) else node.kwargs.get(arg.name)
            return value if isinstance(value, torch.fx.Node) else None
    return None


_variants: dict[Any, Any] = {}


def inplace_variant(target: Any) -> Any:
    """The in-place overload (same namespace) computing what ``target`` computes into its first argument,
    or None."""
    cached = _variants.get(target, _NO_VARIANT)
    if cached is not _NO_VARIANT:
        return cached
    variant = None
    if _returns_fresh(target) and torch.Tag.nondeterministic_seeded not in target.tags:
        namespace = getattr(torch.ops, target.namespace)
        packet = getattr(namespace, target._schema.name.split("::")[-1] + "_", None)
        candidate = getattr(packet, target._overloadname, None) if packet is not None else None
        if isinstance(candidate, torch._ops.OpOverload):
            same_args = [(a.name, str(a.type)) for a in candidate._schema.arguments] == [
                (a.name, str(a.type)) for a in target._schema.arguments]
            first = candidate._schema.arguments[0] if candidate._schema.arguments else None
            returns = candidate._schema.returns
            writes_self = (first is not None and first.alias_info is not None and first.alias_info.is_write
                           and len(returns) == 1 and returns[0].alias_info is not None
                           and returns[0].alias_info.is_write)
            if same_args and writes_self:
                variant = candidate
    _variants[target] = variant
    return variant


def _same_layout(a: Any, b: Any) -> bool:
    """True when tensors ``a`` and ``b`` (fake values) provably have one dtype, shape and stride."""
    if not isinstance(a, torch.Tensor) or not isinstance(b, torch.Tensor):
        return False
    if a.dtype != b.dtype or a.device != b.device or a.dim() != b.dim():
        return False
    try:
        pairs = list(zip(a.shape, b.shape)) + list(zip(a.stride(), b.stride()))
        return all(statically_known_true(x == y) for x, y in pairs)
    except Exception:  # noqa: BLE001 - a layout we cannot prove equal keeps the functional op
        return False


def _storage_roots(graph: torch.fx.Graph) -> dict[torch.fx.Node, torch.fx.Node | None]:
    """Each node -> the node that allocated its storage when that happened inside the graph (a fresh
    result), following views; None when the storage may be an input's, a weight's or unknown."""
    root: dict[torch.fx.Node, torch.fx.Node | None] = {}
    for node in graph.nodes:
        if node.op != "call_function":
            root[node] = None
        elif node.target is operator.getitem and isinstance(node.args[0], torch.fx.Node):
            producer = node.args[0]
            base = _aliased_argument(producer)
            if base is not None:
                root[node] = root.get(base)
            else:
                root[node] = node if _returns_fresh(producer.target) else None
        elif _returns_fresh(node.target):
            root[node] = node
        else:
            base = _aliased_argument(node)
            root[node] = root.get(base) if base is not None else None
    escaped = set()
    for node in graph.nodes:
        # a higher-order op, submodule or Python callable may hand back (an alias of) what it was given,
        # which the schemas above cannot see: storage that reaches one is never written in place
        if node.op in ("call_module", "call_method") or (
                node.op == "call_function" and not isinstance(node.target, torch._ops.OpOverload)
                and node.target is not operator.getitem):
            escaped.update(root.get(arg) for arg in node.all_input_nodes)
    escaped.discard(None)
    for node, r in root.items():
        if r in escaped:
            root[node] = None
    return root


def reinplaced_graph(graph: torch.fx.Graph, names: Iterable[str] | None = None
                     ) -> tuple[torch.fx.Graph, list[str]]:
    """Takes a functional graph (left unchanged) and optionally the names of the ops to write in place (as
    an earlier call returned them, for a graph loaded without shape metadata: their layouts were proven
    then; every other condition is checked again). Returns a copy in which those ops on dead scratch
    buffers write in place, and the names of the ops changed."""
    allowed = None if names is None else set(names)
    new = torch.fx.Graph()
    env: dict[torch.fx.Node, torch.fx.Node] = {}
    out = new.graph_copy(graph, env)
    new.output(out)
    nodes = list(new.nodes)
    position = {n: i for i, n in enumerate(nodes)}
    last_use = {n: max((position[u] for u in n.users), default=position[n]) for n in nodes}
    root = _storage_roots(new)
    members: dict[torch.fx.Node, list[torch.fx.Node]] = {}
    for n, r in root.items():
        if r is not None:
            members.setdefault(r, []).append(n)
    changed = []
    for node in nodes:
        if node.op != "call_function" or not node.args or not isinstance(node.args[0], torch.fx.Node):
            continue
        if allowed is not None and node.name not in allowed:
            continue
        variant = inplace_variant(node.target)
        buffer = node.args[0]
        r = root.get(buffer)
        if variant is None or r is None:
            continue
        here = position[node]
        if any(last_use[m] > here for m in members[r] if m is not node):
            continue
        others = [a for a in node.all_input_nodes if a is not buffer]
        if any(root.get(a) is r for a in others) or buffer in node.args[1:] or buffer in node.kwargs.values():
            continue
        if allowed is None and not _same_layout(buffer.meta.get("val"), node.meta.get("val")):
            continue
        node.target = variant
        for m in members.pop(node, [node]):  # the result and its views now share the buffer's storage
            root[m] = r
            members[r].append(m)
        changed.append(node.name)
    new.lint()
    return new, changed


def inplace_plan(graph: torch.fx.Graph) -> list[str]:
    """Names of the ops of ``graph`` (with shape metadata) that its runtime copy writes in place."""
    return reinplaced_graph(graph)[1]
