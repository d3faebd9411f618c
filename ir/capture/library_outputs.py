"""Model outputs torch.export cannot hold, made plain while capturing.

Hugging Face decoders return their KV cache (a ``DynamicCache`` object, ``use_cache=True`` by default) inside
the ``ModelOutput``; torch.export refuses outputs of classes pytree does not know. :func:`plain_outputs`
hooks the model's forward for the capture and replaces each such object by its tensors in plain containers —
a cache with ``layers`` becomes a tuple with one :class:`~fxopt.ir.fields.Fields` per layer (``keys``,
``values``; ``layer[0]``/``layer[1]`` read as the legacy ``(key, value)`` pair) — so the cache is an output
like any other, and says so in one line. Objects holding no tensors are left for torch.export to refuse.
"""
from __future__ import annotations

import contextlib
from typing import Any, Iterator

import torch
import torch.utils._pytree as pytree

from fxopt.ir.fields import Fields

_SCALARS = (torch.Tensor, int, float, bool, str, bytes, type(None), torch.dtype, torch.device, torch.SymInt,
            torch.SymFloat, torch.SymBool)


@contextlib.contextmanager
def plain_outputs(model: torch.nn.Module, notes: list[str]) -> Iterator[None]:
    """While active, ``model``'s outputs have their unknown objects replaced by plain containers of their
    tensors (see the module doc); appends one line per replaced kind of object to ``notes``. The hook is
    removed on exit: the user's model is left as it was."""
    seen: set[str] = set()

    def hook(_module, _args, output):
        def plain_leaf(leaf):
            if isinstance(leaf, _SCALARS) or not _holds_tensors(leaf):
                return leaf
            kind = type(leaf).__name__
            if kind not in seen:
                seen.add(kind)
                names = [k for k, v in output.items() if v is leaf] if isinstance(output, dict) else []
                where = f"'{names[0]}'" if names else "value"
                notes.append(f"output {where} ({kind}) is returned as plain tensors: "
                             + ("a tuple with keys and values per layer" if _layers(leaf) is not None
                                else "a Fields of its tensor attributes"))
            return plain_value(leaf)

        return pytree.tree_map(plain_leaf, output)

    handle = model.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def plain_tree(output: Any) -> Any:
    """``output`` with each pytree leaf that is an object holding tensors replaced by :func:`plain_value`:
    what the captured program returns for a model's eager ``output``."""
    return pytree.tree_map(lambda leaf: leaf if isinstance(leaf, _SCALARS) or not _holds_tensors(leaf)
                           else plain_value(leaf), output)


def plain_value(value: Any) -> Any:
    """``value`` with every object that is not a tensor, scalar or pytree container rebuilt from its tensors:
    an object with a ``layers`` list as a tuple of its layers, any other as a :class:`Fields` of its
    attributes that hold tensors (in attribute order). Takes any value; returns plain containers."""
    if isinstance(value, _SCALARS):
        return value
    if isinstance(value, (tuple, list)):
        return type(value)(plain_value(v) for v in value)
    if isinstance(value, dict):
        return {k: plain_value(v) for k, v in value.items()}
    layers = _layers(value)
    if layers is not None:
        return tuple(plain_value(layer) for layer in layers)
    attrs = getattr(value, "__dict__", None) or {}
    return Fields(((k, plain_value(v)) for k, v in attrs.items() if _holds_tensors(v)),
                  type_name=type(value).__name__)


def _layers(value: Any) -> list | None:
    layers = getattr(value, "layers", None) if not isinstance(value, torch.nn.Module) else None
    return layers if isinstance(layers, (list, tuple)) else None


def _holds_tensors(value: Any, depth: int = 0) -> bool:
    if isinstance(value, torch.Tensor):
        return True
    if depth > 4 or isinstance(value, (_SCALARS, torch.nn.Module)):
        return False
    if isinstance(value, (tuple, list)):
        return any(_holds_tensors(v, depth + 1) for v in value)
    if isinstance(value, dict):
        return any(_holds_tensors(v, depth + 1) for v in value.values())
    return any(_holds_tensors(v, depth + 1) for v in (getattr(value, "__dict__", None) or {}).values())
