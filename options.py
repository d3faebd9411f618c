"""Named, typed options and lazily imported registries: what passes and backends share.

A pass or a backend is named in text as ``name`` or ``name{key=value,...}`` (``unroll{partition=25}``,
``neuron{buckets=1;8}``); a pipeline is a comma-separated list of them. Options are the fields of a
dataclass, typed ``bool``, ``int``, ``float``, ``str``, a ``Literal[...]`` of choices or an ``Optional`` of
one of these, converted from their text by :func:`convert` with one-line errors naming the owner ("pass
'moe'", "backend 'xla'"). A :class:`Registry` maps names to ``"module:Class"`` strings imported on first
use, so listing or validating a name imports nothing heavy.

This module sits below ``ir``, ``passes`` and ``backends`` (docs/architecture.md, "Layers"): it imports
only :mod:`fxopt.errors`.
"""
from __future__ import annotations

import dataclasses
import importlib
import re
import typing
from typing import Any

from fxopt.errors import InputError

NAME = re.compile(r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$")
_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


def parse_specs(text: str, kind: str = "pass") -> list[tuple[str, dict[str, str]]]:
    """Split ``"a,b{k=v,...},c"`` into ``[(name, {option: raw value}), ...]`` (``kind`` names what the items
    are in errors: "pass", "backend"); raises InputError when malformed."""
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
            for part in filter(None, (p.strip() for p in text[i + 1:close].split(","))):
                key, eq, value = part.partition("=")
                if not eq or not key.strip():
                    raise InputError(f"pipeline '{text}': option '{part}' of {kind} '{name}' must be key=value")
                if key.strip() in options:
                    raise InputError(f"pipeline '{text}': option '{key.strip()}' given twice for '{name}'")
                options[key.strip()] = value.strip()
            i = close + 1
            rest = text[i:].lstrip()
            if rest and not rest.startswith(","):
                raise InputError(f"pipeline '{text}': expected ',' after '{name}{{...}}'")
        if not name:
            raise InputError(f"pipeline '{text}': empty {kind} name")
        if not NAME.match(name):
            raise InputError(f"pipeline '{text}': '{name}' is not a {kind} name (kebab-case, e.g. fold-constants)")
        items.append((name, options))
    return items


def format_value(value: Any) -> str:
    """An option value as written in pipeline syntax (``true``, ``25``, ``auto``)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def type_text(tp: Any) -> str:
    """Readable text of an option's type: ``int``, ``bool``, ``one of full|partitioned``."""
    if typing.get_origin(tp) is typing.Literal:
        return "one of " + "|".join(str(a) for a in typing.get_args(tp))
    if typing.get_origin(tp) is typing.Union:
        return " or ".join(type_text(a) for a in typing.get_args(tp))
    return getattr(tp, "__name__", str(tp))


def convert(owner: str, option: str, tp: Any, raw: Any) -> Any:
    """Convert ``raw`` (usually a string from the pipeline text) to the option's type ``tp``; InputError
    starting with ``owner`` (e.g. "pass 'moe'") when it does not fit."""
    origin = typing.get_origin(tp)
    if origin is typing.Union:
        args = typing.get_args(tp)
        is_none = raw is None or (isinstance(raw, str) and raw.strip().lower() == "none")
        if is_none and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return convert(owner, option, a, raw)
            except InputError as exc:
                errors.append(str(exc))
        raise InputError(errors[-1])
    if origin is typing.Literal:
        choices = typing.get_args(tp)
        for c in choices:
            if str(c) == str(raw):
                return c
        raise InputError(f"{owner}: option {option}={raw!r} is not one of {', '.join(str(c) for c in choices)}")
    if not isinstance(raw, str):
        if tp is float and isinstance(raw, int) and not isinstance(raw, bool):
            return float(raw)
        if isinstance(raw, tp) and not (tp is int and isinstance(raw, bool)):
            return raw
        raise InputError(f"{owner}: option {option} must be {type_text(tp)}, got {raw!r}")
    text = raw.strip()
    if tp is bool:
        if text.lower() in _TRUE:
            return True
        if text.lower() in _FALSE:
            return False
        raise InputError(f"{owner}: option {option}={text!r} must be true or false")
    if tp is int:
        try:
            return int(text)
        except ValueError:
            raise InputError(f"{owner}: option {option}={text!r} must be an integer") from None
    if tp is float:
        try:
            return float(text)
        except ValueError:
            raise InputError(f"{owner}: option {option}={text!r} must be a number") from None
    if tp is str:
        return text
    raise InputError(f"{owner}: option {option} has an unsupported type {tp!r}")


def from_options(cls: type, owner: str, raw_options: dict[str, Any]) -> Any:
    """Instantiate dataclass ``cls`` from ``{option: raw value}`` (its init fields are the options);
    unknown options and bad values raise InputError starting with ``owner``."""
    hints = typing.get_type_hints(cls)
    fields = [f.name for f in dataclasses.fields(cls) if f.init]
    kwargs = {}
    for key, raw in raw_options.items():
        if key not in fields:
            raise InputError(f"{owner} has no option '{key}' (options: {', '.join(fields) or 'none'})")
        kwargs[key] = convert(owner, key, hints.get(key, str), raw)
    try:
        return cls(**kwargs)
    except InputError:
        raise
    except (TypeError, ValueError) as exc:
        raise InputError(f"{owner}: {exc}") from exc


class Registry:
    """Names -> classes, given as ``"module:Class"`` (imported on first use) or as the class itself.
    ``kind`` ("pass", "backend") words the errors."""

    def __init__(self, kind: str, entries: dict[str, Any],
                 unknown: str = "unknown {kind} '{name}' (available: {names})") -> None:
        """``entries``: the built-in names; ``unknown``: the error for an unknown name, formatted with
        ``kind``, ``name`` and ``names`` (the known ones, comma-separated)."""
        self.kind = kind
        self._entries: dict[str, Any] = dict(entries)
        self._unknown = unknown

    def register(self, name: str, entry: Any) -> None:
        """Register ``entry`` (a class, or ``"module:Class"``) under ``name``, replacing any earlier one."""
        self._entries[name] = entry

    def unregister(self, name: str) -> None:
        """Remove ``name`` (used by tests)."""
        self._entries.pop(name, None)

    def names(self) -> list[str]:
        """Every registered name, sorted."""
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def get(self, name: str) -> type:
        """The class registered as ``name`` (imported now if it was a string); InputError listing the
        known names for an unknown one."""
        entry = self._entries.get(name)
        if entry is None:
            raise InputError(self._unknown.format(kind=self.kind, name=name, names=", ".join(self.names())))
        if isinstance(entry, str):
            module_name, _, attr = entry.partition(":")
            entry = getattr(importlib.import_module(module_name), attr)
            self._entries[name] = entry
        return entry
