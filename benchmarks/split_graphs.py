"""Synthetic branched graphs for the ``split`` benchmark and tests (built directly, not traced).

:func:`branched_program` makes a Program of ``num_nodes`` core-ATen nodes on [dim, dim] float tensors:
matmuls with a few shared weights, unary and binary elementwise ops reading recent values (so the graph has
branches and joins, not only a chain), and a fraction ``unsupported`` of ``aten.special_bessel_j0`` nodes, an op that
no split target supports (absent from the Neuron list, the ONNX map and the XLA lowering), scattered at random.
"""
from __future__ import annotations

import random

import torch
import torch.fx
from torch._subclasses.fake_tensor import FakeTensorMode

from fxopt.ir import cost, provenance
from fxopt.ir.program import Program

aten = torch.ops.aten

UNSUPPORTED_OP = aten.special_bessel_j0.default
_UNARY = (aten.relu.default, aten.tanh.default, aten.sigmoid.default, aten.neg.default)
_BINARY = (aten.add.Tensor, aten.mul.Tensor)


def branched_program(num_nodes: int, unsupported: float = 0.2, dim: int = 256, window: int = 12,
                     num_weights: int = 4, seed: int = 0, annotate: bool = True) -> Program:
    """A Program of about ``num_nodes`` nodes (see the module docstring) with ``val`` and provenance on every
    node, and cost too when ``annotate``. Values nothing reads are returned, so the graph has no dead code."""
    rng = random.Random(seed)
    mode = FakeTensorMode()
    graph = torch.fx.Graph()
    root = torch.nn.Module()
    gen = torch.Generator().manual_seed(seed)
    weights = []
    for k in range(num_weights):
        root.register_buffer(f"w{k}", torch.randn(dim, dim, generator=gen) / dim ** 0.5)
        w = graph.get_attr(f"w{k}")
        with mode:
            w.meta["val"] = torch.empty(dim, dim)
        weights.append(w)
    x = graph.placeholder("x")
    with mode:
        proto = torch.empty(dim, dim)
    x.meta["val"] = proto
    values = [x]
    used: set = set()
    count = num_weights + 2  # weights, input, output
    while count < num_nodes:
        recent = values[-window:]
        a = values[-1] if rng.random() < 0.5 else rng.choice(recent)
        r = rng.random()
        if r < unsupported:
            op, args = UNSUPPORTED_OP, (a,)
        elif r < unsupported + 0.15:
            op, args = aten.mm.default, (a, rng.choice(weights))
        elif r < unsupported + 0.40:
            op, args = rng.choice(_BINARY), (a, rng.choice(recent))
        else:
            op, args = rng.choice(_UNARY), (a,)
        node = graph.call_function(op, args)
        node.meta["val"] = proto  # every op maps [dim, dim] to [dim, dim]: share one FakeTensor
        used.update(arg for arg in args)
        values.append(node)
        count += 1
    outputs = [v for v in values[1:] if v not in used] or [values[-1]]
    graph.output(tuple(outputs))
    gm = torch.fx.GraphModule(root, graph)
    for node in graph.nodes:
        node.meta["provenance"] = provenance.from_export(node)
    if annotate:
        cost.annotate_costs(gm)
    example = (torch.randn(dim, dim, generator=gen),)
    return Program(graph_module=gm, example_inputs=example, name=f"branched{num_nodes}")
