"""What a pass is.

A pass is a frozen dataclass subclassing :class:`Pass`:

- ``name`` (class attribute): kebab-case, the name used in pipelines (``fold-constants``);
- its dataclass fields are its options, typed (bool, int, float, str, or a ``Literal[...]`` of choices) and
  parsed from the ``name{key=value,...}`` pipeline syntax by :func:`from_options`;
- ``requires`` / ``ensures`` (class attributes): properties of the program, e.g. ``"shapes"`` (every node has
  ``meta["val"]``, which the manager always maintains) or ``"placement"`` (set by ``split``);
- ``run(program) -> PassResult``: rewrites ``program.graph_module`` in place and says whether it changed
  anything plus pass-specific figures. It never touches another pass's internals and never modifies a
  weight tensor in place (bind a new tensor instead: programs share weights with their copies).

The manager (:mod:`fxopt.passes.manager`) adds the generic report: nodes, FLOPs and bytes before/after, time,
verification.
"""
from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from typing import Any, ClassVar

from fxopt.errors import InputError
from fxopt.ir.program import Program


@dataclass
class PassResult:
    """What a pass returns: whether it changed the graph, figures it wants reported, and notes."""

    modified: bool
    details: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Pass:
    """Base class of all passes; subclasses are frozen dataclasses whose fields are their options."""

    name: ClassVar[str] = ""
    requires: ClassVar[frozenset] = frozenset({"shapes"})
    ensures: ClassVar[frozenset] = frozenset({"shapes"})

    def run(self, program: Program) -> PassResult:  # pragma: no cover - abstract
        """Rewrite ``program`` in place and return a :class:`PassResult`."""
        raise NotImplementedError

    def spec(self) -> str:
        """This pass with its non-default options, in pipeline syntax: ``unroll{partition=25}``."""
        changed = []
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.default is not dataclasses.MISSING and value == f.default:
                continue
            changed.append(f"{f.name}={format_value(value)}")
        return f"{self.name}{{{','.join(changed)}}}" if changed else self.name

    @classmethod
    def options(cls) -> list[tuple[str, str, Any]]:
        """``[(option, type text, default), ...]`` for help output."""
        hints = typing.get_type_hints(cls)
        out = []
        for f in dataclasses.fields(cls):
            out.append((f.name, type_text(hints.get(f.name, str)), f.default))
        return out


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


_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


def convert(pass_name: str, option: str, tp: Any, raw: Any) -> Any:
    """Convert ``raw`` (usually a string from the pipeline text) to the option's type, or raise InputError."""
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
                return convert(pass_name, option, a, raw)
            except InputError as exc:
                errors.append(str(exc))
        raise InputError(errors[-1])
    if origin is typing.Literal:
        choices = typing.get_args(tp)
        for c in choices:
            if str(c) == str(raw):
                return c
        raise InputError(f"pass '{pass_name}': option {option}={raw!r} is not one of "
                         f"{', '.join(str(c) for c in choices)}")
    if not isinstance(raw, str):
        if tp is float and isinstance(raw, int) and not isinstance(raw, bool):
            return float(raw)
        if isinstance(raw, tp) and not (tp is int and isinstance(raw, bool)):
            return raw
        raise InputError(f"pass '{pass_name}': option {option} must be {type_text(tp)}, got {raw!r}")
    text = raw.strip()
    if tp is bool:
        if text.lower() in _TRUE:
            return True
        if text.lower() in _FALSE:
            return False
        raise InputError(f"pass '{pass_name}': option {option}={text!r} must be true or false")
    if tp is int:
        try:
            return int(text)
        except ValueError:
            raise InputError(f"pass '{pass_name}': option {option}={text!r} must be an integer") from None
    if tp is float:
        try:
            return float(text)
        except ValueError:
            raise InputError(f"pass '{pass_name}': option {option}={text!r} must be a number") from None
    if tp is str:
        return text
    raise InputError(f"pass '{pass_name}': option {option} has an unsupported type {tp!r}")


def from_options(cls: type[Pass], raw_options: dict[str, Any]) -> Pass:
    """Instantiate pass class ``cls`` from ``{option: raw value}``; unknown options and bad values raise
    :class:`InputError` naming the pass, the option and what is allowed."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, raw in raw_options.items():
        if key not in fields:
            known = ", ".join(fields) or "none"
            raise InputError(f"pass '{cls.name}' has no option '{key}' (options: {known})")
        kwargs[key] = convert(cls.name, key, hints.get(key, str), raw)
    try:
        instance = cls(**kwargs)
    except InputError:
        raise
    except (TypeError, ValueError) as exc:
        raise InputError(f"pass '{cls.name}': {exc}") from exc
    return instance
