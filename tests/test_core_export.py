"""One trace to core ATen (fxopt/ir/capture/core_export.py): torch.export's ATen-IR path with the few non-core
ops it leaves decomposed node by node must give the graph the public export + run_decompositions gives (the
same op multiset, the same numbers). Only block-wise capture allows it (it checks every graph against eager
outputs); it steps aside for attention, dynamic shapes and the off switch."""
from __future__ import annotations

import collections

import pytest
import torch
import torch.nn.functional as F

import fxopt
from fxopt.ir.capture import core_export


def _ops(program) -> collections.Counter:
    return collections.Counter(str(n.target) for n in program.graph_module.graph.nodes if n.op == "call_function")


@pytest.fixture
def count_decompositions(monkeypatch):
    """How many times run_decompositions ran (the public path) during the test."""
    calls = []
    original = torch.export.ExportedProgram.run_decompositions

    def counted(self, *args, **kwargs):
        calls.append(1)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(torch.export.ExportedProgram, "run_decompositions", counted)
    return calls


class Stack(torch.nn.Module):
    """Six repeated MLP blocks (block-wise capture applies) with a non-core op (``t``) at the output."""

    def __init__(self) -> None:
        super().__init__()
        self.blocks = torch.nn.ModuleList(
            torch.nn.Sequential(torch.nn.LayerNorm(16), torch.nn.Linear(16, 16), torch.nn.SiLU()) for _ in range(6))

    def forward(self, x):
        for block in self.blocks:
            x = x + block(x)
        return x.t()


class Cnn(torch.nn.Module):
    """A small CNN as users write it: conv, batch norm, in-place ReLU, pooling, flatten, linear."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.bn = torch.nn.BatchNorm2d(8)
        self.fc = torch.nn.Linear(8 * 4 * 4, 5)

    def forward(self, x):
        x = F.relu_(self.bn(self.conv(x)))
        x = F.adaptive_avg_pool2d(x, 4)
        return self.fc(torch.flatten(x, 1))


class TransposedOutputs(torch.nn.Module):
    """Outputs that are themselves non-core ops (``t``, ``transpose``) over a ``stack``."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(4, 3)

    def forward(self, x):
        return self.lin(x).t(), torch.stack([x, x]).transpose(0, 1), F.silu(x)


class Attention(torch.nn.Module):
    """Scaled-dot-product attention followed by the transpose + view users write after it."""

    def __init__(self) -> None:
        super().__init__()
        self.qkv = torch.nn.Linear(16, 48)
        self.out = torch.nn.Linear(16, 16)

    def forward(self, x):
        b, n, _ = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, 2, 8).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v)
        return self.out(y.transpose(1, 2).reshape(b, n, 16))


def _ops_both(model, inputs, monkeypatch):
    monkeypatch.setenv(core_export.ENV_SWITCH, "0")
    public = fxopt.capture(model, inputs)
    monkeypatch.setenv(core_export.ENV_SWITCH, "1")
    return public, fxopt.capture(model, inputs)


def test_block_wise_capture_exports_in_one_trace_without_run_decompositions(count_decompositions):
    model, x = Stack().eval(), torch.randn(4, 16)
    program = fxopt.capture(model, (x,))
    assert program.capture_summary.startswith("captured block-wise")
    assert count_decompositions == []
    torch.testing.assert_close(program(x), model(x))


def test_the_one_trace_graph_equals_the_public_one(monkeypatch):
    model, x = Stack().eval(), torch.randn(4, 16)
    public, one = _ops_both(model, (x,), monkeypatch)
    assert _ops(one) == _ops(public)
    torch.testing.assert_close(one(x), public(x), rtol=0, atol=0)


def test_a_whole_model_export_takes_the_public_path(count_decompositions):
    # nothing would check its graph against the model: the one-trace path is not allowed there
    model, x = Cnn().eval(), torch.randn(2, 3, 8, 8)
    program = fxopt.capture(model, (x,))
    assert count_decompositions == [1]
    torch.testing.assert_close(program(x), model(x))


def test_no_op_with_a_core_decomposition_is_left():
    model, x = TransposedOutputs().eval(), torch.randn(5, 4)
    ep = core_export.allowing(core_export.export_to_core)(model, (x,), {}, None)
    left = [str(n.target) for n in ep.graph.nodes if n.op == "call_function" and
            core_export.needs_decomposition(n.target)]
    assert left == []
    assert {"aten.t.default", "aten.transpose.int", "aten.silu.default"}.isdisjoint(
        str(n.target) for n in ep.graph.nodes)


def test_outputs_that_were_decomposed_keep_their_place_in_the_signature():
    model, x = TransposedOutputs().eval(), torch.randn(5, 4)
    ep = core_export.allowing(core_export.export_to_core)(model, (x,), {}, None)
    for got, want in zip(ep.module()(x), model(x)):
        torch.testing.assert_close(got, want)


def test_nothing_is_exported_the_one_trace_way_unless_allowed():
    model, x = Cnn().eval(), (torch.randn(2, 3, 8, 8),)
    assert core_export.export_to_core(model, x, {}, None) is None
    assert core_export.allowing(core_export.export_to_core)(model, x, {}, None) is not None


def test_the_off_switch_wins_over_allowing(monkeypatch):
    monkeypatch.setenv(core_export.ENV_SWITCH, "0")
    assert core_export.allowing(core_export.export_to_core)(Cnn().eval(), (torch.randn(2, 3, 8, 8),), {}, None) is None


def test_a_model_seen_calling_attention_is_not_traced_the_one_trace_way():
    model = Attention().eval()
    with core_export.watch_attention(model):
        model(torch.randn(2, 6, 16))
    assert core_export.allowing(core_export.export_to_core)(model, (torch.randn(2, 6, 16),), {}, None) is None


def test_an_attention_kernel_in_the_graph_sends_it_to_the_public_path():
    # not seen beforehand (no eager run): found in the traced graph
    ep = core_export.allowing(core_export.export_to_core)(Attention().eval(), (torch.randn(2, 6, 16),), {}, None)
    assert ep is None


def test_dynamic_shapes_take_the_public_path():
    batch = torch.export.Dim("batch", min=2, max=64)
    export = core_export.allowing(core_export.export_to_core)
    assert export(Cnn().eval(), (torch.randn(2, 3, 8, 8),), {}, ({0: batch},)) is None
