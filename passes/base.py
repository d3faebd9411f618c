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

from fxopt import options
from fxopt.ir.program import Program
from fxopt.options import format_value, type_text


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


def from_options(cls: type[Pass], raw_options: dict[str, Any]) -> Pass:
    """Instantiate pass class ``cls`` from ``{option: raw value}``; unknown options and bad values raise
    :class:`InputError` naming the pass, the option and what is allowed (:func:`fxopt.options.from_options`)."""
    return options.from_options(cls, f"pass '{cls.name}'", raw_options)
