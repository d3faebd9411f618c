"""fxopt: a graph-rewriting compiler for PyTorch inference models.

Public API (see docs/architecture.md):

    prog = fxopt.capture(model, example_inputs)        # -> fxopt.ir.Program
    prog = fxopt.optimize(prog, passes="dce,canonicalize")
    compiled = fxopt.compile(prog, backend="reference")
    compiled.save("out/"); fxopt.load("out/")(*inputs)
"""
from fxopt.version import __version__  # noqa: E402

from fxopt.errors import FxoptError, InputError, VerificationError  # noqa: E402
from fxopt.api import capture, optimize, compile, load  # noqa: E402
from fxopt import zoo  # noqa: E402
from fxopt.passes.dedupe import optimize_many  # noqa: E402

__all__ = [
    "capture", "optimize", "optimize_many", "compile", "load", "zoo",
    "FxoptError", "InputError", "VerificationError", "__version__",
]
