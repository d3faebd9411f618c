"""Before/Expected rewrite tests (as TVM Relax's tests state them): a test writes the model before the pass
and the model it should become, and :func:`assert_rewrites` checks the pass turns one into the other."""
from __future__ import annotations

import torch

import fxopt
from fxopt.ir.numerics import assert_outputs_close
from fxopt.ir.structure import graph_key


class Fn(torch.nn.Module):
    """A module whose forward is ``fn`` (a lambda or function of the inputs): a model written in one line."""

    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, *args):
        return self.fn(*args)


def op_list(program) -> list[str]:
    """The call targets of ``program``'s graph in order, short (``addmm``, ``mul``, ``view``)."""
    return [str(n.target).replace("aten.", "").replace(".default", "").replace(".Tensor", "")
            for n in program.graph.nodes if n.op == "call_function"]


def op_set(program) -> set[str]:
    """The distinct call targets of ``program``'s graph, in full (``aten.addmm.default``)."""
    return {str(n.target) for n in program.graph.nodes if n.op == "call_function"}


def _graph_text(program) -> str:
    return "\n".join(f"  {n.op} {n.target}" for n in program.graph.nodes if n.op != "placeholder")


def assert_rewrites(passes: str, before: torch.nn.Module, expected: torch.nn.Module, inputs: tuple,
                    other_inputs: tuple | None = None) -> fxopt.ir.Program:
    """Capture ``before`` and ``expected`` (modules computing the same thing), run ``passes`` on ``before``'s
    program and check that the result is structurally ``expected``'s graph (``graph_key``: same ops, same
    arguments, same weights, up to node names), that it computes what ``before`` does on ``inputs`` (and
    ``other_inputs``) under the shared numerics rule, and that running ``passes`` again changes nothing.
    Returns the rewritten program."""
    program = fxopt.capture(before.eval(), inputs)
    want = fxopt.capture(expected.eval(), inputs)
    after = fxopt.optimize(program, passes)
    assert graph_key(after.graph_module) == graph_key(want.graph_module), (
        f"after {passes}:\n{_graph_text(after)}\nexpected:\n{_graph_text(want)}")
    for args in (inputs,) + ((other_inputs,) if other_inputs is not None else ()):
        with torch.no_grad():
            assert_outputs_close(after(*args), before(*args), program)
    again = fxopt.optimize(after, passes)
    assert not any(r.modified for r in again.reports), f"{passes} is not idempotent"
    return after
