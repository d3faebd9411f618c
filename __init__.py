"""fxopt: a graph-rewriting compiler for PyTorch inference models.

Public API (see docs/architecture.md):

    prog = fxopt.capture(model, example_inputs)        # -> fxopt.ir.Program
    prog = fxopt.optimize(prog)                        # the target's default pipeline, verified per pass
    compiled = fxopt.compile(prog, backend="reference")
    compiled.save("out/"); fxopt.load("out/")(*inputs)

    compiled, report = fxopt.export(model, inputs, backend="xla", out="out/m")   # all of the above, checked
    torch.compile(model, backend="fxopt")              # the dynamo backend (fxopt.dynamo)
    print(fxopt.explain(model, *inputs))               # which dynamo subgraphs fxopt compiled

Importing fxopt imports no torch: the names below load their modules on first use (PEP 562), so the
``fxopt`` command answers ``--help`` and usage errors in well under a second.
"""
from __future__ import annotations

import importlib
import sys
from typing import Any

from fxopt.version import __version__
from fxopt.errors import FxoptError, InputError, VerificationError

# public name -> "module:attribute", imported when first asked for
_LAZY: dict[str, str] = {
    "capture": "fxopt.api:capture",
    "optimize": "fxopt.api:optimize",
    "compile": "fxopt.api:compile",
    "load": "fxopt.backends.base:load",   # not through api: loading an artifact imports no capture, no zoo
    "export": "fxopt.api:export",
    "ExportReport": "fxopt.api:ExportReport",
    "GenerationSpec": "fxopt.ir.capture.generation:GenerationSpec",   # capture(..., decode=GenerationSpec(...))
    "as_generate": "fxopt.ir.capture.generation:as_generate",
    "LoopSpec": "fxopt.ir.capture.loop_spec:LoopSpec",   # capture(..., decode=LoopSpec(step=model.step, ...))
    "Fields": "fxopt.ir.fields:Fields",   # what a loaded artifact returns for a model library's output class
    "optimize_many": "fxopt.passes.dedupe:optimize_many",
    "fleet": "fxopt.tools.fleet:fleet",
    "explain": "fxopt.dynamo:explain",
    "zoo": "fxopt.zoo",
}

# subpackages reachable as attributes after a bare `import fxopt` (fxopt.ir.Program), as before it was lazy
_SUBMODULES = frozenset({"api", "backends", "dynamo", "ir", "options", "passes", "tools"})

__all__ = ["FxoptError", "InputError", "VerificationError", "__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    """Import and return the public attribute ``name`` (see ``_LAZY``) or subpackage; AttributeError for
    anything else."""
    if name in _SUBMODULES:
        return importlib.import_module(f"fxopt.{name}")
    target = _LAZY.get(name)
    if target is None:
        raise AttributeError(f"module 'fxopt' has no attribute {name!r}")
    module_name, _, attr = target.partition(":")
    module = importlib.import_module(module_name)
    value = getattr(module, attr) if attr else module
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


# torch.compile(backend="fxopt") finds fxopt through its `torch_dynamo_backends` entry point in any process
# where fxopt is installed. When dynamo is already loaded (a checkout on sys.path, no entry point), register
# now; importing dynamo only for this would cost every CLI call a second.
if "torch._dynamo" in sys.modules:
    importlib.import_module("fxopt.dynamo").register()
