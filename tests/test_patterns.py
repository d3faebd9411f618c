"""The pattern language of fxopt.ir.patterns on real captured graphs."""
from __future__ import annotations

import torch

import fxopt
from fxopt.ir.patterns import Any, Node, OneOf, Op, Opt, Var, match
from rewriting import Fn

aten = torch.ops.aten


def _nodes(fn, *inputs):
    program = fxopt.capture(Fn(fn).eval(), inputs)
    return {str(n.target).split(".")[1] if n.op == "call_function" else n.name: n for n in program.graph.nodes}


def test_op_binds_arguments_and_the_node():
    nodes = _nodes(lambda x: (x * 3).relu(), torch.randn(4))
    found = match(Op(aten.relu, Op(aten.mul, Var("x", Node), Var("k", int), name="prod")), nodes["relu"])
    assert found["x"].op == "placeholder" and found["k"] == 3 and found["prod"] is nodes["mul"]


def test_packet_matches_any_overload_and_an_overload_only_itself():
    mul = _nodes(lambda x: x * 3, torch.randn(4))["mul"]
    assert match(Op(aten.mul, Var("a"), Var("b")), mul) is not None
    assert match(Op(aten.mul.Tensor, Var("a"), Var("b")), mul) is not None
    assert match(Op(aten.mul.Scalar, Var("a"), Var("b")), mul) is None


def test_a_name_bound_twice_must_bind_the_same_value():
    nodes = _nodes(lambda x, y: x + x, torch.randn(4), torch.randn(4))
    assert match(Op(aten.add, Var("a"), Var("a")), nodes["add"]) is not None
    other = _nodes(lambda x, y: x + y, torch.randn(4), torch.randn(4))
    assert match(Op(aten.add, Var("a"), Var("a")), other["add"]) is None


def test_commutative_matching_tries_both_argument_orders():
    sub = _nodes(lambda x, y: y * x.relu(), torch.randn(4), torch.randn(4))["mul"]   # mul(y, relu(x))
    pattern = Op(aten.mul, Op(aten.relu, Var("x")), Var("k"), commutative=True)
    assert match(pattern, sub) is not None
    assert match(Op(aten.mul, Op(aten.relu, Var("x")), Var("k")), sub) is None


def test_kinds_literals_one_of_any_opt_and_where():
    s = _nodes(lambda x: x.sum(1), torch.randn(2, 3))["sum"]
    assert match(Op(aten.sum, Var("x"), OneOf([1], [-1])), s) is not None
    assert match(Op(aten.sum, Var("x"), [0]), s) is None
    assert match(Op(aten.sum, Var("x"), Var("dims"), Opt(True)), s)["dims"] == [1]
    assert match(Op(aten.sum, Var("x"), Var("dims", int)), s) is None            # a list is not an int
    assert match(Any(Op(aten.mean, Var("x")), Op(aten.sum, Var("x"), Var("d"))), s)["d"] == [1]
    assert match(Op(aten.sum, Var("x"), Var("d"), where=lambda b: b["d"] == [2]), s) is None
    assert match(Var("b", int), True) is None and match(Var("i", int), 1) == {"i": 1}
