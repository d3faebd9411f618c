"""fxopt.zoo: built-in example models with deterministic random weights (pure torch, no downloads).

    model, example_inputs = fxopt.zoo.get("ranking", small=True, seed=0)
    model(*example_inputs)

Models (see each module's docstring): ``moderation`` (multi-modal classifier with duplicated text
towers), ``ocr`` (conformer encoder + autoregressive decoder, decode-loop protocol), ``ranking``
(EmbeddingBag tables + DCN-v2 cross + mixture of experts), ``resnet50``. Each module also exposes a
zero-argument factory of the same name (e.g. ``fxopt/zoo/ranking.py:ranking``) returning the
default-size model, for ``file.py:attr`` model specs.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from fxopt.errors import InputError
from fxopt.zoo import moderation, ocr, ranking, resnet50

_BUILDERS: dict[str, Callable[..., nn.Module]] = {
    "moderation": moderation.build,
    "ocr": ocr.build,
    "ranking": ranking.build,
    "resnet50": resnet50.build,
}


def names() -> list[str]:
    """Returns the sorted names of the built-in models."""
    return sorted(_BUILDERS)


def get(name: str, small: bool = False, seed: int = 0) -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    """Builds zoo model ``name``; returns ``(model, example_inputs)``.

    ``model`` is in eval mode with weights drawn deterministically from ``seed`` (the caller's global
    RNG state is left untouched); ``example_inputs`` is a tuple of tensors for ``model(*example_inputs)``.
    ``small=True`` gives a tiny variant of the same architecture for tests. Raises
    :class:`fxopt.errors.InputError` for an unknown ``name``.
    """
    if name not in _BUILDERS:
        raise InputError(f"unknown zoo model {name!r}: choose one of {', '.join(names())}")
    model = _BUILDERS[name](small=small, seed=seed)
    return model, model.example_inputs()


__all__ = ["names", "get"]
