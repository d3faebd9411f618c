"""One trace to core ATen (fxopt/ir/capture/core_export.py): torch.export's ATen-IR path with the few non-core
ops it leaves decomposed node by node must give the graph the public export + run_decompositions gives (the
same op multiset, the same numbers), and must step aside where it cannot (attention, the off switch)."""
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


def _both(model, inputs, monkeypatch):
    monkeypatch.setenv(core_export.ENV_SWITCH, "0")
    public = fxopt.capture(model, inputs)
    monkeypatch.setenv(core_export.ENV_SWITCH, "1")
    one = fxopt.capture(model, inputs)
    return public, one


def test_a_cnn_is_captured_in_one_trace_without_run_decompositions(count_decompositions):
    model, x = Cnn().eval(), torch.randn(2, 3, 8, 8)
    program = fxopt.capture(model, (x,))
    assert count_decompositions == []
    torch.testing.assert_close(program(x), model(x))


def test_the_one_trace_graph_equals_the_public_one_on_a_cnn(monkeypatch):
    model, x = Cnn().eval(), torch.randn(2, 3, 8, 8)
    public, one = _both(model, (x,), monkeypatch)
    assert _ops(one) == _ops(public)
    torch.testing.assert_close(one(x), public(x), rtol=0, atol=0)


def test_the_one_trace_graph_equals_the_public_one_on_the_ranking_model(monkeypatch):
    model, inputs = fxopt.zoo.get("ranking", small=True)
    public, one = _both(model, inputs, monkeypatch)
    assert _ops(one) == _ops(public)
    torch.testing.assert_close(one(*inputs), public(*inputs), rtol=0, atol=0)


def test_no_op_with_a_core_decomposition_is_left(monkeypatch):
    monkeypatch.setenv(core_export.ENV_SWITCH, "1")
    model, x = TransposedOutputs().eval(), torch.randn(5, 4)
    program = fxopt.capture(model, (x,))
    left = [str(t) for t in _ops(program) if t.startswith("aten.")
            and core_export.needs_decomposition(eval("torch.ops." + t))]
    assert left == []
    assert {"aten.t.default", "aten.transpose.int", "aten.silu.default"}.isdisjoint(_ops(program))


def test_outputs_that_were_decomposed_keep_their_place_in_the_signature(monkeypatch, count_decompositions):
    monkeypatch.setenv(core_export.ENV_SWITCH, "1")
    model, x = TransposedOutputs().eval(), torch.randn(5, 4)
    program = fxopt.capture(model, (x,))
    assert count_decompositions == []
    for got, want in zip(program(x), model(x)):
        torch.testing.assert_close(got, want)


def test_a_model_calling_attention_takes_the_public_path_and_runs(count_decompositions):
    model, x = Attention().eval(), torch.randn(2, 6, 16)
    program = fxopt.capture(model, (x,))
    assert count_decompositions == [1]
    torch.testing.assert_close(program(x), model(x))


def test_the_off_switch_takes_the_public_path(monkeypatch, count_decompositions):
    monkeypatch.setenv(core_export.ENV_SWITCH, "0")
    fxopt.capture(Cnn().eval(), (torch.randn(2, 3, 8, 8),))
    assert count_decompositions == [1]


def test_a_model_seen_calling_attention_is_not_traced_the_one_trace_way():
    model = Attention().eval()
    with core_export.watch_attention(model):
        model(torch.randn(2, 6, 16))
    assert core_export.export_to_core(model, (torch.randn(2, 6, 16),), {}, None) is None
    assert core_export.export_to_core(Cnn().eval(), (torch.randn(2, 3, 8, 8),), {}, None) is not None


def test_dynamic_shapes_take_the_public_path():
    batch = torch.export.Dim("batch", min=2, max=64)
    assert core_export.export_to_core(Cnn().eval(), (torch.randn(2, 3, 8, 8),), {}, ({0: batch},)) is None
