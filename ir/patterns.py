"""A small pattern language for FX graphs: what a rewrite looks for, written as data.

Patterns match node arguments (FX nodes or plain values) and bind names, as tinygrad's ``UPat`` and xDSL's
rewrite patterns do::

    COLUMN = Any(
        Op(aten.squeeze, Op(aten.slice, Var("nz"), 1, Var("j", int), Var("stop", int)), OneOf([1], [-1]),
           where=lambda b: b["stop"] == b["j"] + 1),
        Op(aten.select, Var("nz"), 1, Var("j", int)),
    )
    match(COLUMN, node)   # -> {"nz": <nonzero node>, "j": 0, ...} or None

- :class:`Op`: a call_function node whose target is one of ``targets`` (operator packets match every
  overload, overloads only themselves) with positional arguments matching ``args`` (a trailing argument the
  node does not pass must match the pattern's default: give ``Var`` or ``Opt``), keyword arguments matching
  ``kwargs``; ``commutative=True`` also tries the first two arguments swapped; ``name`` binds the node;
  ``where`` checks the bindings.
- :class:`Var`: anything (or an instance of ``kind``: ``int`` never takes a ``bool``, ``Node`` takes FX nodes
  only), bound to a name; the same name twice must bind the same value.
- :class:`OneOf`: one of some literal values. A plain value in a pattern matches an equal value (a list
  matches a list or tuple of equal items).
- :class:`Any`: the first of several patterns that matches.
- :class:`Opt`: matches ``pattern`` or an absent argument (then binds nothing).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any as _Any, Callable

import torch
import torch.fx

__all__ = ["Op", "Var", "OneOf", "Any", "Opt", "match", "Node"]

Node = torch.fx.Node
_ABSENT = object()


@dataclass(frozen=True)
class Var:
    """Binds whatever it matches to ``name`` (an instance of ``kind`` when given)."""

    name: str
    kind: type | tuple | None = None


@dataclass(frozen=True)
class OneOf:
    """One of the literal ``values``."""

    values: tuple

    def __init__(self, *values):
        object.__setattr__(self, "values", values)


@dataclass(frozen=True)
class Any:
    """The first of ``patterns`` that matches."""

    patterns: tuple

    def __init__(self, *patterns):
        object.__setattr__(self, "patterns", patterns)


@dataclass(frozen=True)
class Opt:
    """``pattern``, or an argument the node does not pass."""

    pattern: _Any


@dataclass(frozen=True)
class Op:
    """A call_function node of one of ``targets`` whose arguments match ``args``/``kwargs``."""

    targets: tuple
    args: tuple = ()
    kwargs: dict = field(default_factory=dict)
    commutative: bool = False
    name: str | None = None
    where: Callable[[dict], bool] | None = None

    def __init__(self, targets, *args, kwargs=None, commutative=False, name=None, where=None):
        object.__setattr__(self, "targets", tuple(targets) if isinstance(targets, (tuple, list)) else (targets,))
        object.__setattr__(self, "args", args)
        object.__setattr__(self, "kwargs", dict(kwargs or {}))
        object.__setattr__(self, "commutative", commutative)
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "where", where)

    def target_matches(self, target: _Any) -> bool:
        """True when ``target`` is one of ``targets`` or an overload of one of the packets among them."""
        packet = getattr(target, "overloadpacket", None)
        return any(t is target or (packet is not None and t is packet) for t in self.targets)


def match(pattern: _Any, value: _Any, bindings: dict | None = None) -> dict | None:
    """The bindings (a new dict, extending ``bindings``) under which ``pattern`` matches ``value``, or None."""
    return _match(pattern, value, dict(bindings or {}))


def _bind(bindings: dict, name: str, value: _Any) -> dict | None:
    if name in bindings:
        old = bindings[name]
        same = old is value if isinstance(old, torch.fx.Node) or isinstance(value, torch.fx.Node) else old == value
        return bindings if same else None
    bindings[name] = value
    return bindings


def _match(pattern: _Any, value: _Any, b: dict) -> dict | None:
    if isinstance(pattern, Var):
        if pattern.kind is not None and (not isinstance(value, pattern.kind) or (
                isinstance(value, bool) and pattern.kind in (int, (int,)))):
            return None
        return _bind(b, pattern.name, value)
    if isinstance(pattern, Opt):
        return b if value is _ABSENT else _match(pattern.pattern, value, b)
    if value is _ABSENT:
        return None
    if isinstance(pattern, OneOf):
        return b if any(_match(v, value, dict(b)) is not None for v in pattern.values) else None
    if isinstance(pattern, Any):
        for p in pattern.patterns:
            found = _match(p, value, dict(b))
            if found is not None:
                return found
        return None
    if isinstance(pattern, Op):
        return _match_op(pattern, value, b)
    if isinstance(pattern, (list, tuple)):
        if not isinstance(value, (list, tuple)) or len(value) != len(pattern):
            return None
        for p, v in zip(pattern, value):
            b = _match(p, v, b)
            if b is None:
                return None
        return b
    if isinstance(value, torch.fx.Node) or isinstance(value, bool) != isinstance(pattern, bool):
        return None
    return b if value == pattern else None


def _match_op(pattern: Op, node: _Any, b: dict) -> dict | None:
    if not (isinstance(node, torch.fx.Node) and node.op == "call_function" and pattern.target_matches(node.target)):
        return None
    args = list(node.args)
    if len(args) > len(pattern.args):
        return None
    orders = [args]
    if pattern.commutative and len(args) >= 2:
        orders.append([args[1], args[0], *args[2:]])
    for order in orders:
        found = _match_args(pattern, node, order, dict(b))
        if found is not None:
            return found
    return None


def _match_args(pattern: Op, node: torch.fx.Node, args: list, b: dict) -> dict | None:
    for i, p in enumerate(pattern.args):
        b = _match(p, args[i] if i < len(args) else _ABSENT, b)
        if b is None:
            return None
    for key, p in pattern.kwargs.items():
        b = _match(p, node.kwargs.get(key, _ABSENT), b)
        if b is None:
            return None
    if pattern.name is not None and _bind(b, pattern.name, node) is None:
        return None
    if pattern.where is not None and not pattern.where(b):
        return None
    return b
