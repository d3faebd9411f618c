"""Provenance: where each node came from — the model's source line and module, the node it was derived
from, and the pass that made it.

``node.meta["provenance"]`` is a plain JSON-able dict::

    {"source": "models/ocr.py:88", "module": "decoder.layers.0.attn", "origin": None, "pass": "capture"}

Capture fills it from torch.export's ``stack_trace`` and ``nn_module_stack``. A pass that creates a node
calls :func:`derive` (or the pass manager marks any node left without provenance with the pass's name).
"""
from __future__ import annotations

import os
import re
import sys

import torch
import torch.fx

_FRAME = re.compile(r'File "(?P<file>[^"]+)", line (?P<line>\d+), in (?P<func>\S+)')
_TORCH_DIR = os.path.dirname(torch.__file__)
_FXOPT_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def user_frame(stack_trace: str | None) -> str | None:
    """The innermost ``file:line`` of ``stack_trace`` that is the model's own code (not torch's, not fxopt's
    own runtime), falling back to the innermost frame; None when there is no trace."""
    if not stack_trace:
        return None
    frames = [(m["file"], m["line"]) for m in _FRAME.finditer(stack_trace)]
    if not frames:
        return None
    for file, line in reversed(frames):
        if not file.startswith(_TORCH_DIR) and not _is_fxopt_runtime(file):
            return f"{portable_path(file)}:{line}"
    file, line = frames[-1]
    return f"{portable_path(file)}:{line}"


def portable_path(file: str) -> str:
    """``file`` as a path that is the same in every checkout and install: ``fxopt/...`` inside fxopt's own
    tree (the zoo, the tests), else relative to the longest of the working directory and the ``sys.path``
    entries that holds it (``transformers/models/bert/modeling_bert.py``, ``models/ocr.py``), else as is."""
    if file.startswith("<"):
        return file   # <string>, <frozen ...>
    path = os.path.abspath(file)
    if path.startswith(_FXOPT_DIR + os.sep):
        return "fxopt/" + os.path.relpath(path, _FXOPT_DIR).replace(os.sep, "/")
    best = ""
    for root in (os.getcwd(), *sys.path):
        root = os.path.abspath(root or ".")
        if len(root) > len(best) and path.startswith(root.rstrip(os.sep) + os.sep):
            best = root
    return os.path.relpath(path, best).replace(os.sep, "/") if best else path


def source_of(node: torch.fx.Node, default: str = "unknown source line") -> str:
    """The model source line ``node`` came from (``file.py:42``): its provenance's ``source``, else the
    user's frame of its ``stack_trace``, else ``default``. For error messages that point at the model."""
    prov = node.meta.get("provenance")
    src = prov.get("source") if isinstance(prov, dict) else None
    return str(src) if src else (user_frame(node.meta.get("stack_trace")) or default)


_RUNTIME_DIRS = tuple(os.path.join(_FXOPT_DIR, d) + os.sep for d in ("ir", "passes", "backends", "tools"))
_RUNTIME_FILES = tuple(os.path.join(_FXOPT_DIR, f) for f in ("api.py", "errors.py", "__init__.py"))


def _is_fxopt_runtime(file: str) -> bool:
    """True for fxopt's own compiler code; the zoo models (and anything else) count as the user's code."""
    return file.startswith(_RUNTIME_DIRS) or file in _RUNTIME_FILES


def module_path(node: torch.fx.Node) -> str:
    """The dotted path of the innermost nn.Module that produced ``node`` ('' for the top level)."""
    stack = node.meta.get("nn_module_stack")
    if not stack:
        return ""
    path, _type = list(stack.values())[-1]
    path = str(path)
    # export's placeholder for nodes it creates itself (e.g. sym_size), not a module of the model
    return "" if path.startswith("_empty_nn_module_stack") else path


def from_export(node: torch.fx.Node) -> dict:
    """Provenance for a node straight out of torch.export."""
    return {
        "source": user_frame(node.meta.get("stack_trace")),
        "module": module_path(node) if node.op != "get_attr" else str(node.target).rpartition(".")[0],
        "origin": None,
        "pass": "capture",
    }


def derive(new: torch.fx.Node, origin: torch.fx.Node | None, pass_name: str) -> None:
    """Record that ``new`` was made by ``pass_name`` from ``origin`` (source line and module inherited)."""
    base = dict(origin.meta.get("provenance") or {}) if origin is not None else {}
    new.meta["provenance"] = {
        "source": base.get("source"),
        "module": base.get("module", ""),
        "origin": origin.name if origin is not None else None,
        "pass": pass_name,
    }
    if origin is not None:
        for key in ("nn_module_stack", "stack_trace"):
            if key in origin.meta and key not in new.meta:
                new.meta[key] = origin.meta[key]


def mark_unowned(graph: torch.fx.Graph, pass_name: str) -> int:
    """Give every node without provenance one saying ``pass_name`` created it; returns how many."""
    count = 0
    for node in graph.nodes:
        if "provenance" not in node.meta:
            node.meta["provenance"] = {"source": None, "module": "", "origin": None, "pass": pass_name}
            count += 1
    return count
