"""Modules that convert their own weights inside ``forward``, made capturable when the conversion changes
nothing.

Some models call ``self.sub = self.sub.to(dtype)`` on every forward (Switch Transformers' router keeps its
classifier in float32 so). In eager mode that is a no-op when the weights already have that dtype; under
torch.export it is not: ``Module.to`` runs ``_apply``, which tries to swap the traced parameters and raises
``_apply(): Couldn't swap Linear.weight``. :func:`no_op_conversions` makes ``Module.to`` return the module
itself, untouched, while capturing, whenever every parameter and buffer already has the requested dtype and
device — exactly what eager mode computes. A conversion that would change a tensor still runs (and fails
under export, with the hint :data:`HINT`).
"""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch

HINT = ("a module converts its own weights with .to() inside forward; convert the model once before capture "
        "(model.to(dtype)) so that the call changes nothing")


def _changes_nothing(module: torch.nn.Module, args: tuple, kwargs: dict) -> bool:
    device, dtype, _non_blocking, memory_format = torch._C._nn._parse_to(*args, **kwargs)
    if memory_format is not None:
        return False
    for t in (*module.parameters(), *module.buffers()):
        if device is not None and t.device != torch.device(device):
            return False
        if dtype is not None and (t.is_floating_point() or t.is_complex()) and t.dtype != dtype:
            return False
    return True


@contextlib.contextmanager
def no_op_conversions() -> Iterator[None]:
    """While active, ``Module.to(...)`` on a module whose tensors already match returns the module without
    touching it; other calls run as usual. ``Module.to`` is restored on exit."""
    original = torch.nn.Module.to

    def to(self, *args, **kwargs):
        if _changes_nothing(self, args, kwargs):
            return self
        return original(self, *args, **kwargs)

    torch.nn.Module.to = to
    try:
        yield
    finally:
        torch.nn.Module.to = original
