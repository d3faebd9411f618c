"""fxopt.passes: rewrite passes, their registry and the pass manager."""
from fxopt.passes.base import Pass, PassResult
from fxopt.passes.manager import PassManager, optimize
from fxopt.passes.registry import build_pipeline, get_pass_class, parse_pipeline, pass_names, register_pass

__all__ = ["Pass", "PassResult", "PassManager", "optimize", "build_pipeline", "get_pass_class",
           "parse_pipeline", "pass_names", "register_pass"]
