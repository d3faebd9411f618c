"""Node helpers every pass and backend shares: a node's recorded value, its call target's packet and names.

One definition each, so that passes agree (on ``getitem``, on non-ATen targets, on nodes without a value):

- :func:`val`: ``node.meta["val"]`` (a FakeTensor, a SymInt, a tuple of them...) or None;
- :func:`tensor_val`: the same when it is a single tensor, else None;
- :func:`packet`: the :class:`OpOverloadPacket` of an ATen-style target (``aten.addmm`` for
  ``aten.addmm.default``), None for Python callables and higher-order ops;
- :func:`packet_name`: ``"addmm"`` for ``aten.addmm.default``, ``"getitem"`` for ``operator.getitem``;
- :func:`op_name`: the readable full name: ``"aten.addmm.default"``, ``"operator.getitem"``, ``"cond"``;
- :func:`example_size` / :func:`example_numel`: a dim or a shape at the example size, never guarding
  (``int()`` of a symbolic dim would specialize the program's dynamic batch to the example's).
"""
from __future__ import annotations

from typing import Any

import torch
import torch.fx

__all__ = ["val", "tensor_val", "packet", "packet_name", "op_name", "example_size", "example_numel"]


def val(node: Any) -> Any:
    """``node.meta["val"]`` when ``node`` is an FX node that has one, else None."""
    return node.meta.get("val") if isinstance(node, torch.fx.Node) else None


def tensor_val(node: Any) -> torch.Tensor | None:
    """``node.meta["val"]`` when ``node`` is an FX node holding a single tensor, else None."""
    v = val(node)
    return v if isinstance(v, torch.Tensor) else None


def packet(target: Any) -> torch._ops.OpOverloadPacket | None:
    """The overload packet of an operator overload target (``aten.addmm`` for ``aten.addmm.default``), the
    packet itself for a packet, else None."""
    if isinstance(target, torch._ops.OpOverloadPacket):
        return target
    return getattr(target, "overloadpacket", None) if isinstance(target, torch._ops.OpOverload) else None


def packet_name(target: Any) -> str:
    """The op packet name of a call target: ``addmm`` for ``aten.addmm.default``, ``getitem`` for
    ``operator.getitem``, the function's ``__name__`` otherwise."""
    if isinstance(target, torch._ops.OpOverload):
        return target._opname
    if isinstance(target, torch._ops.OpOverloadPacket):
        return target._qualified_op_name.split("::")[-1]
    return getattr(target, "__name__", str(target))


def op_name(target: Any) -> str:
    """A readable name for a call target: ``"aten.addmm.default"``, ``"operator.getitem"``, ``"cond"``..."""
    if isinstance(target, (torch._ops.OpOverload, torch._ops.OpOverloadPacket)):
        return str(target)
    if isinstance(target, str):
        return target
    name = getattr(target, "__name__", None) or getattr(target, "name", None) or type(target).__name__
    if callable(name):
        name = name()
    mod = getattr(target, "__module__", None)
    return f"{mod}.{name}" if mod in ("operator", "math", "builtins") else str(name)


def example_size(d: Any) -> int | None:
    """An int dim as is, a symbolic one at its example size without guarding, None when it has none
    (an unbacked size, e.g. the row count of a ``nonzero``)."""
    if isinstance(d, torch.SymInt):
        return d.node.hint if isinstance(d.node.hint, int) else None
    return int(d)


def example_numel(shape: Any) -> int | None:
    """The product of ``shape``'s dims at their example sizes (see :func:`example_size`), None when one has
    no example size."""
    n = 1
    for d in shape:
        size = example_size(d)
        if size is None:
            return None
        n *= size
    return n
