"""The pass registry and the pipeline syntax.

Passes are registered by name → ``"module:Class"`` and imported only when used (listing them imports each
one, which is fine for ``fxopt passes``). Third-party passes register with :func:`register_pass`.

Pipeline syntax: comma-separated pass names, each optionally followed by ``{key=value,...}``::

    dce,unroll{partition=25,max_len=75},dedupe
"""
from __future__ import annotations

import importlib
import re
from typing import Any, Iterable

from fxopt.errors import InputError
from fxopt.passes.base import Pass, from_options

# name -> "module:Class" (lazy) or the class itself (registered at run time)
_REGISTRY: dict[str, Any] = {
    "dce": "fxopt.passes.dce:DeadCodeElimination",
    "fold-constants": "fxopt.passes.fold_constants:FoldConstants",
    "canonicalize": "fxopt.passes.canonicalize:Canonicalize",
    "unroll": "fxopt.passes.unroll:Unroll",
    "split": "fxopt.passes.split:Split",
    "moe": "fxopt.passes.moe:FuseExperts",
    "dedupe": "fxopt.passes.dedupe:Dedupe",
    "decompose-embedding-bag": "fxopt.passes.decompose_embedding_bag:DecomposeEmbeddingBag",
}

# The pipeline `fxopt run` uses when no --passes is given, per target.
DEFAULT_PIPELINES: dict[str, str] = {
    "reference": "canonicalize,fold-constants,dedupe,moe,dce",
    # split last: it records partitions that later passes would invalidate. policy=support: XLA here runs on
    # the same CPU (no transfer cost), and torch_neuron.trace itself sends every supported op to Neuron.
    "xla": "canonicalize,fold-constants,dedupe,moe,dce,split{target=xla,policy=support}",
    "neuron": "canonicalize,fold-constants,dedupe,moe,dce,split{target=neuron,policy=support}",
    # TensorRT runs on a separate GPU: the cost policy weighs transfers; embedding bags become gathers + sums
    # first (their ONNX export is a Loop TensorRT rejects).
    "tensorrt": "canonicalize,fold-constants,dedupe,moe,decompose-embedding-bag,dce,split{target=tensorrt}",
}

_NAME = re.compile(r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$")


def register_pass(cls: type[Pass]) -> type[Pass]:
    """Register a Pass subclass under its ``name`` (usable as a class decorator); returns the class."""
    if not _NAME.match(cls.name or ""):
        raise ValueError(f"pass name {cls.name!r} must be kebab-case, e.g. 'fold-constants'")
    _REGISTRY[cls.name] = cls
    return cls


def unregister_pass(name: str) -> None:
    """Remove a pass registered at run time (used by tests)."""
    _REGISTRY.pop(name, None)


def pass_names() -> list[str]:
    """All registered pass names, sorted."""
    return sorted(_REGISTRY)


def get_pass_class(name: str) -> type[Pass]:
    """The Pass class registered as ``name``; unknown names raise InputError listing the known ones."""
    entry = _REGISTRY.get(name)
    if entry is None:
        raise InputError(f"unknown pass '{name}' (known passes: {', '.join(pass_names())}); "
                         "see `fxopt passes`")
    if isinstance(entry, str):
        module_name, _, attr = entry.partition(":")
        entry = getattr(importlib.import_module(module_name), attr)
        _REGISTRY[name] = entry
    return entry


def parse_pipeline(text: str) -> list[tuple[str, dict[str, str]]]:
    """Split pipeline text into ``[(pass name, {option: raw value}), ...]``; raises InputError when malformed."""
    items: list[tuple[str, dict[str, str]]] = []
    i, n = 0, len(text)
    while i < n:
        while i < n and text[i] in " \t,":
            i += 1
        if i >= n:
            break
        start = i
        while i < n and text[i] not in "{,":
            i += 1
        name = text[start:i].strip()
        options: dict[str, str] = {}
        if i < n and text[i] == "{":
            close = text.find("}", i)
            if close < 0:
                raise InputError(f"pipeline '{text}': '{{' after '{name}' is never closed")
            body = text[i + 1:close]
            for part in filter(None, (p.strip() for p in body.split(","))):
                key, eq, value = part.partition("=")
                if not eq or not key.strip():
                    raise InputError(f"pipeline '{text}': option '{part}' of pass '{name}' must be key=value")
                if key.strip() in options:
                    raise InputError(f"pipeline '{text}': option '{key.strip()}' given twice for '{name}'")
                options[key.strip()] = value.strip()
            i = close + 1
            rest = text[i:].lstrip()
            if rest and not rest.startswith(","):
                raise InputError(f"pipeline '{text}': expected ',' after '{name}{{...}}'")
        if not name:
            raise InputError(f"pipeline '{text}': empty pass name")
        if not _NAME.match(name):
            raise InputError(f"pipeline '{text}': '{name}' is not a pass name (kebab-case, e.g. fold-constants)")
        items.append((name, options))
    return items


def build_pipeline(passes: str | Iterable[Any]) -> list[Pass]:
    """Pass instances from pipeline text, or a list of names / ``name{k=v}`` strings / Pass instances."""
    if isinstance(passes, str):
        specs: list[Any] = [passes]
    else:
        specs = list(passes)
    pipeline: list[Pass] = []
    for spec in specs:
        if isinstance(spec, Pass):
            pipeline.append(spec)
            continue
        if isinstance(spec, type) and issubclass(spec, Pass):
            pipeline.append(spec())
            continue
        if not isinstance(spec, str):
            raise InputError(f"cannot use {spec!r} as a pass: give a name, 'name{{k=v}}' or a Pass instance")
        for name, options in parse_pipeline(spec):
            pipeline.append(from_options(get_pass_class(name), options))
    return pipeline


def default_pipeline(target: str) -> str:
    """The default pipeline text for ``target`` (the reference pipeline for targets without their own)."""
    return DEFAULT_PIPELINES.get(target, DEFAULT_PIPELINES["reference"])
