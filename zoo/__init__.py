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
from fxopt.options import parse_specs
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


def resolve(spec: str) -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    """The model and inputs named by ``NAME`` or ``NAME{small=true,seed=N}`` (what follows ``zoo:`` in a
    model spec, so a small variant can be named anywhere a model is); raises InputError for an unknown name
    or option."""
    items = parse_specs(spec, "zoo model") if "{" in spec else [(spec.strip(), {})]
    if len(items) != 1:
        raise InputError(f"zoo:{spec}: name one model, e.g. zoo:ranking or zoo:ranking{{small=true}}")
    name, raw = items[0]
    if name not in _BUILDERS:   # before the options: the unknown name is the likelier mistake
        get(name)
    unknown = sorted(set(raw) - {"small", "seed"})
    if unknown:
        raise InputError(f"zoo:{spec}: unknown option {unknown[0]!r} (zoo models take small=true|false, seed=N)")
    small = raw.get("small", "false").lower()
    if small not in ("true", "false"):
        raise InputError(f"zoo:{spec}: small must be true or false, not {raw['small']!r}")
    try:
        seed = int(raw.get("seed", "0"))
    except ValueError:
        raise InputError(f"zoo:{spec}: seed must be an integer, not {raw['seed']!r}") from None
    return get(name, small=small == "true", seed=seed)


__all__ = ["names", "get", "resolve"]
