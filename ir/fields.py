"""Model input/output structures in a form that needs no model library.

A Hugging Face model returns a ``ModelOutput`` (``out.logits``, ``out["logits"]``, ``out[0]``); a pytree spec
of it names ``transformers.modeling_outputs.*``, which a process that has not imported transformers cannot
rebuild. :class:`Fields` is fxopt's own named-field container with the same three ways of access, and
:func:`neutral_spec` rewrites any pytree spec into one made only of tuples, lists, dicts and ``Fields``, so a
saved artifact loads anywhere (``backends/base.py`` stores both specs and uses the original one where its
classes are registered in the loading process).
"""
from __future__ import annotations

import collections
from typing import Any

import torch.utils._pytree as pytree

__all__ = ["Fields", "neutral_spec"]


class Fields(dict):
    """Named values in their order, read as ``f.name``, ``f["name"]`` or ``f[0]`` (a ModelOutput's ways);
    ``type_name`` is the class it stands for (``"CausalLMOutputWithPast"``), shown by ``repr``. A field is
    also an instance attribute, so one named like a dict method (a cache layer's ``keys``/``values``) reads
    as the field, as on the dataclass it stands for."""

    def __init__(self, items: Any = (), type_name: str = "Fields"):
        super().__init__(items)
        self.__dict__["type_name"] = type_name
        for key, value in dict.items(self):
            self._mirror(key, value)

    def _mirror(self, key: Any, value: Any) -> None:
        if isinstance(key, str) and key.isidentifier() and key != "type_name":
            self.__dict__[key] = value

    def __setitem__(self, key: Any, value: Any) -> None:
        super().__setitem__(key, value)
        self._mirror(key, value)

    def __delitem__(self, key: Any) -> None:
        super().__delitem__(key)
        self.__dict__.pop(key, None)

    def __getattr__(self, name: str) -> Any:   # only reached for names that are not fields
        raise AttributeError(f"{self.__dict__.get('type_name', 'Fields')} has no field {name!r} "
                             f"(fields: {', '.join(map(str, self))})")

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, (int, slice)):
            return self.to_tuple()[key]
        return super().__getitem__(key)

    def to_tuple(self) -> tuple:
        """The values in field order (as ``ModelOutput.to_tuple``)."""
        return tuple(dict.values(self))

    def __repr__(self) -> str:
        return f"{self.type_name}({', '.join(f'{k}={v!r}' for k, v in dict.items(self))})"

    def __reduce__(self):
        return (Fields, (list(dict.items(self)), self.type_name))


pytree.register_pytree_node(
    Fields,
    lambda f: (list(dict.values(f)), (f.type_name, tuple(dict.keys(f)))),
    lambda values, context: Fields(zip(context[1], values), type_name=context[0]),
    serialized_type_name="fxopt.Fields",
    to_dumpable_context=lambda context: [context[0], list(context[1])],
    from_dumpable_context=lambda dumped: (str(dumped[0]), tuple(dumped[1])),
    flatten_with_keys_fn=lambda f: ([(pytree.MappingKey(k), v) for k, v in dict.items(f)],
                                    (f.type_name, tuple(dict.keys(f)))),
)

# Containers every process can rebuild: pytree's own, kept as they are.
_PLAIN = (tuple, list, dict, collections.OrderedDict, collections.defaultdict, collections.deque, Fields)


def neutral_spec(spec: pytree.TreeSpec) -> pytree.TreeSpec:
    """``spec`` with every node of another class (a library's output class, a namedtuple, a registered
    dataclass) replaced by a :class:`Fields` of the same leaves in the same order, named by the node's keys
    when the node names one per child (ModelOutput, namedtuple and registered dataclass specs do), else
    ``"0"``, ``"1"``, ...; tuples, lists, dicts and leaves stay. Takes and returns a TreeSpec."""
    if spec.is_leaf():
        return spec
    children = [neutral_spec(c) for c in (spec.children() if hasattr(spec, "children") else spec.children_specs)]
    if spec.type in _PLAIN:
        return pytree.TreeSpec(spec.type, spec.context, children)
    if spec.type is collections.namedtuple:   # pytree's namedtuple node: the context is the class
        cls = spec.context
        return pytree.TreeSpec(Fields, (cls.__name__, _names(getattr(cls, "_fields", None), len(children))),
                               children)
    return pytree.TreeSpec(Fields, (spec.type.__name__, _field_names(spec)), children)


def _field_names(spec: pytree.TreeSpec) -> tuple[str, ...]:
    n = spec.num_children
    context = spec.context
    if _is_names(context, n):                 # ModelOutput: the keys of its set fields
        return tuple(context)
    if isinstance(context, (list, tuple)) and context and _is_names(context[0], n):
        return tuple(context[0])              # a registered dataclass: [field names, names of None fields]
    return _names(None, n)


def _is_names(value: Any, n: int) -> bool:
    return isinstance(value, (list, tuple)) and len(value) == n and all(isinstance(k, str) for k in value)


def _names(names: Any, n: int) -> tuple[str, ...]:
    return tuple(names) if _is_names(names, n) else tuple(str(i) for i in range(n))
