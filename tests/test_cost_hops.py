"""Cost of torch.export loops (higher-order ops) in fxopt.ir.cost: ``scan`` = length x its combine graph,
``while_loop`` = one iteration (cond + body), a lower bound marked inexact.

Checked against independent figures: a GRU cell captured alone (one step), the same loop fully unrolled by
``unroll`` (every step as plain ATen ops), and the pass manager's FLOPs before/after unrolling.
"""
from __future__ import annotations

import pytest
import torch
from torch._higher_order_ops import scan, while_loop

import fxopt
from fxopt.ir import cost
from tests.test_unroll_hop import CountLoop

HOPS = (torch.ops.higher_order.scan, torch.ops.higher_order.while_loop)


class GRUScan(torch.nn.Module):
    """A GRU cell run over a sequence with ``scan``: (xs [T, B, 4], h0 [B, 8]) -> (h_T, hs [T, B, 8])."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.cell = torch.nn.GRUCell(4, 8)

    def forward(self, xs, h0):
        def combine(h, x):
            h2 = self.cell(x, h)
            return h2, h2.clone()

        return scan(combine, h0, xs)


class GRUStep(torch.nn.Module):
    """One step of :class:`GRUScan` (the same cell): (x [B, 4], h [B, 8]) -> h'."""

    def __init__(self, scanned: GRUScan):
        super().__init__()
        self.cell = scanned.cell

    def forward(self, x, h):
        return self.cell(x, h)


class RNNThreeTimes(torch.nn.Module):
    """A counted while_loop (3 iterations) whose body runs an RNN over xs with ``scan``: nested loops."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.w = torch.nn.Linear(4, 4)

    def forward(self, xs, h0):
        def cond(i, h):
            return i < 3

        def body(i, h):
            def combine(h, x):
                nxt = torch.relu(self.w(h) - x)
                return nxt, nxt * 2.0

            last, hs = scan(combine, h, xs)
            return i + 1, last + hs.sum(0)

        return while_loop(cond, body, (torch.tensor(0), h0))[1]


def _loop(program):
    """The program's one loop node."""
    (node,) = [n for n in program.graph.nodes if n.target in HOPS]
    return node


def _scan_program(steps: int, batch: int = 3):
    model = GRUScan()
    return model, fxopt.capture(model, (torch.randn(steps, batch, 4), torch.randn(batch, 8)))


def test_scan_costs_length_times_one_gru_step():
    model, program = _scan_program(6)
    step = fxopt.capture(GRUStep(model), (torch.randn(3, 4), torch.randn(3, 8)))
    one = cost.graph_cost(step.graph_module)
    loop = cost.node_cost(_loop(program))
    assert one.flops > 0 and loop.exact
    assert loop.flops == 6 * one.flops


def test_scan_cost_scales_with_length():
    short = cost.node_cost(_loop(_scan_program(3)[1]))
    long = cost.node_cost(_loop(_scan_program(9)[1]))
    assert long.flops == 3 * short.flops and long.bytes_written == 3 * short.bytes_written


def test_scan_flops_before_unroll_equal_flops_after():
    model, program = _scan_program(5)
    out = fxopt.optimize(program, "unroll")
    report = out.reports[0]
    assert report.modified and not [n for n in out.graph.nodes if n.target in HOPS]
    # The inlined copies are the same ATen ops (plus 0-FLOP selects and a stack), so the totals agree.
    assert report.flops_before == report.flops_after > 0
    assert cost.graph_cost(program.graph_module).flops == cost.graph_cost(out.graph_module).flops


def test_scan_nested_in_while_loop_is_costed_in_the_iteration():
    model = RNNThreeTimes()
    program = fxopt.capture(model, (torch.randn(6, 2, 4), torch.randn(2, 4)))
    node = _loop(program)
    body_gm = getattr(program.graph_module, node.args[1].target)
    (inner,) = [n for n in body_gm.graph.nodes if n.target is torch.ops.higher_order.scan]
    combine = cost.graph_cost(getattr(body_gm, inner.args[0].target)).flops
    assert cost.node_cost(inner).flops == 6 * combine > 0
    loop = cost.node_cost(node)
    assert not loop.exact and loop.flops >= 6 * combine
    out = fxopt.optimize(program, "unroll{mode=full}")            # 3 iterations x 6 steps inlined
    body = cost.graph_cost(body_gm).flops
    # 3 bodies, each with its 6 combine steps; only the counter's `i + 1` (1 FLOP each) is folded away.
    assert 3 * body - 3 <= out.reports[0].flops_after <= 3 * body and body >= 6 * combine


def test_while_loop_costs_one_iteration_as_a_lower_bound():
    model = CountLoop(5)
    program = fxopt.capture(model, (torch.randn(2, 8),))
    node = _loop(program)
    loop = cost.node_cost(node)
    cond_gm = getattr(program.graph_module, node.args[0].target)
    body_gm = getattr(program.graph_module, node.args[1].target)
    one = cost.graph_cost(cond_gm) + cost.graph_cost(body_gm)
    assert not loop.exact                                   # a lower bound: the trip count is not known
    assert loop.flops == one.flops > 2 * 8 * 8              # the body's linear is in it
    out = fxopt.optimize(program, "unroll{mode=full}")      # trip count 5 proven: 5 bodies inlined
    report = out.reports[0]
    body = cost.graph_cost(body_gm).flops
    assert loop.flops <= report.flops_before < loop.flops + 8       # the loop is (nearly) all of the graph
    assert 5 * body <= report.flops_after < 5 * body + 8             # unrolled: 5 bodies, the real work


@pytest.mark.parametrize("op", ["scan", "while_loop"])
def test_loop_cost_is_registered(op):
    assert cost.get_cost_fn(getattr(torch.ops.higher_order, op)) is not None
