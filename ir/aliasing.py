"""Memory facts about nodes: which results share memory with their input, which reach the graph output,
and which layouts are dense. Rewrites that replace a fresh result by an existing tensor consult these so
they never make an output alias an input or a weight, and never hand a view a layout it cannot take."""
from __future__ import annotations

import operator

import torch
import torch.fx

# Ops whose schema claims a fresh result but which return a view of their input.
HIDDEN_ALIASES = {torch.ops.aten._unsafe_view, torch.ops.aten.lift_fresh}
# The reshape family (a view with a new shape, the same elements in the same order), one set for every rewrite.
RESHAPES = frozenset({torch.ops.aten.view, torch.ops.aten._unsafe_view, torch.ops.aten.reshape})


def aliases_input(node: torch.fx.Node) -> bool:
    """True when ``node``'s result may share memory with its first input (a view, ``getitem``, or an op
    in :data:`HIDDEN_ALIASES`)."""
    target = node.target
    if not isinstance(target, torch._ops.OpOverload):
        return target is operator.getitem
    if target.overloadpacket in HIDDEN_ALIASES:
        return True
    return any(r.alias_info is not None for r in target._schema.returns)


def reaches_output(node: torch.fx.Node) -> bool:
    """True when the graph returns ``node``'s memory: ``node`` itself or a view / alias chain of it feeds the
    output node."""
    stack, seen = [node], set()
    while stack:
        n = stack.pop()
        if n in seen:
            continue
        seen.add(n)
        for user in n.users:
            if user.op == "output":
                return True
            if user.op == "call_function" and user.args and user.args[0] is n and aliases_input(user):
                stack.append(user)
    return False


def alias_root(node: torch.fx.Node) -> torch.fx.Node:
    """The node whose memory ``node`` views (``node`` itself when it is not a view)."""
    while node.op == "call_function" and aliases_input(node) and node.args and isinstance(node.args[0], torch.fx.Node):
        node = node.args[0]
    return node


def is_dense(val) -> bool:
    """True when tensor ``val``'s elements fill its memory exactly once (some permutation of a contiguous
    layout); False when that cannot be decided without guarding on a symbolic dim."""
    if any(not isinstance(d, int) for d in (*val.shape, *val.stride())):
        try:  # torch's symbolic-safe check (answers False rather than adding a guard)
            from torch._prims_common import is_non_overlapping_and_dense_or_false  # local: a torch-internal helper, absent from older torch
        except ImportError:
            return False
        try:
            return bool(is_non_overlapping_and_dense_or_false(val))
        except Exception:  # noqa: BLE001 - undecidable: not dense
            return False
    expected = 1
    for stride, size in sorted((st, sz) for sz, st in zip(val.shape, val.stride()) if sz != 1):
        if stride != expected:
            return False
        expected *= size
    return True


def is_fresh(node: torch.fx.Node) -> bool:
    """True when ``node`` is a newly allocated result (not an input, a weight, or a view of another value)."""
    if node.op != "call_function":
        return False
    target = node.target
    if target is operator.getitem:
        return isinstance(node.args[0], torch.fx.Node) and is_fresh(node.args[0])
    if not isinstance(target, torch._ops.OpOverload) or target._schema.is_mutable:
        return False
    return not aliases_input(node)
