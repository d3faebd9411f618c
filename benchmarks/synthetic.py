"""Synthetic programs of a chosen size, for benchmarks that need graphs larger than any zoo model."""
from __future__ import annotations

import torch
import torch.fx
from torch._subclasses.fake_tensor import FakeTensorMode

from fxopt.ir import cost, provenance
from fxopt.ir.program import Program

aten = torch.ops.aten


def chain_program(num_nodes: int, width: int = 16) -> Program:
    """A Program whose graph is a residual chain of ``num_nodes`` elementwise ATen ops on a [8, width]
    input, with ``val``, provenance and cost on every node (built directly, not traced: exporting a
    50k-node model takes minutes)."""
    mode = FakeTensorMode()
    graph = torch.fx.Graph()
    x = graph.placeholder("x")
    with mode:
        x.meta["val"] = torch.empty(8, width)
    ops = (aten.relu.default, aten.add.Tensor, aten.mul.Tensor, aten.tanh.default)
    prev, count = x, 1
    while count < num_nodes - 1:
        op = ops[count % len(ops)]
        args = (prev,) if op in (aten.relu.default, aten.tanh.default) else (prev, x)
        node = graph.call_function(op, args)
        with mode:
            node.meta["val"] = op(*(a.meta["val"] for a in args))
        prev = node
        count += 1
    graph.output((prev,))
    gm = torch.fx.GraphModule(torch.nn.Module(), graph)
    for node in graph.nodes:
        node.meta["provenance"] = provenance.from_export(node)
    cost.annotate_costs(gm)
    return Program(graph_module=gm, example_inputs=(torch.randn(8, width),), name=f"chain{num_nodes}")
