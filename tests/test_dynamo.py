"""``torch.compile(model, backend="fxopt")`` (fxopt.dynamo) and ``fxopt.explain``.

Each test compiles a small model written as users write them (a data-dependent ``if`` that breaks dynamo's
graph, batch norm buffers, a weight updated in place) and compares with eager PyTorch.
"""
from __future__ import annotations

import logging
import os
import subprocess
import sys

import pytest
import torch
from torch import nn

import fxopt
from fxopt.dynamo import DynamoOptions, fxopt_backend
from fxopt.ir.numerics import assert_outputs_close

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class Branchy(nn.Module):
    """Linear + batch norm, a branch on a tensor's value (a graph break: two graphs), then a linear."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.a, self.bn, self.b = nn.Linear(16, 16), nn.BatchNorm1d(16), nn.Linear(16, 3)
        self.bn.running_mean.uniform_(-1, 1)
        self.bn.running_var.uniform_(0.5, 2)

    def forward(self, x):
        y = self.bn(self.a(x))
        if y.sum().item() > 0:    # .item(): dynamo breaks the graph here
            y = y * 2
        return self.b(torch.relu(y))


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def _spy(seen: list):
    """A backend that hands every graph to fxopt_backend and keeps what it returns."""
    def backend(gm, example_inputs, **kwargs):
        fn = fxopt_backend(gm, example_inputs, **kwargs)
        seen.append(fn)
        return fn
    return backend


def test_a_graph_break_gives_two_graphs_both_compiled_by_fxopt_and_equal_to_eager():
    model = Branchy().eval()
    x = torch.randn(8, 16, generator=torch.Generator().manual_seed(1))
    explanation = fxopt.explain(model, x)
    assert len(explanation.graphs) == 2 and len(explanation.compiled) == 2 and not explanation.left
    assert len(explanation.break_reasons) == 1 and "item" in explanation.break_reasons[0]
    compiled = torch.compile(model, backend="fxopt")
    with torch.no_grad():
        assert_outputs_close(compiled(x), model(x))


@pytest.mark.numerics
def test_options_choose_the_xla_backend():
    model = Branchy().eval()
    x = torch.randn(8, 16, generator=torch.Generator().manual_seed(2))
    seen: list = []
    compiled = torch.compile(model, backend=_spy(seen), options={"backend": "xla"})
    with torch.no_grad():
        assert_outputs_close(compiled(x), model(x))
    artifacts = [c for fn in seen for c, _ in fn.compiled.values()]
    assert len(artifacts) == 2 and {c.backend for c in artifacts} == {"xla"}


def test_weights_are_bound_as_weights_not_inputs():
    model = Branchy().eval()
    x = torch.randn(8, 16)
    seen: list = []
    with torch.no_grad():
        torch.compile(model, backend=_spy(seen))(x)
    first, positions = next(iter(seen[0].compiled.values()))
    assert len(first.input_specs) == 1 and len(positions) == 1   # x only: weight, bias, BN buffers are weights


def test_an_in_place_weight_update_recompiles_instead_of_using_stale_weights():
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2)).eval()
    x = torch.randn(3, 4)
    compiled = torch.compile(model, backend="fxopt")
    with torch.no_grad():
        compiled(x)
        model[0].weight.mul_(-2.0)       # what an optimizer step does
        assert_outputs_close(compiled(x), model(x))


def test_a_new_input_shape_is_compiled_again_and_stays_correct():
    model = Branchy().eval()
    compiled = torch.compile(model, backend="fxopt")
    with torch.no_grad():
        for batch in (8, 5, 3):
            x = torch.randn(batch, 16)
            assert_outputs_close(compiled(x), model(x))


def test_a_training_graph_falls_back_with_one_line_and_gradients_flow(caplog):
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 1))
    compiled = torch.compile(model, backend="fxopt", options={"fallback": "eager"})
    with caplog.at_level(logging.WARNING, logger="fxopt.dynamo"):
        compiled(torch.randn(3, 4)).sum().backward()
    assert model[0].weight.grad is not None
    lines = [r.getMessage() for r in caplog.records if r.name == "fxopt.dynamo"]
    assert len(lines) == 1 and "training graph" in lines[0] and "torch.no_grad()" in lines[0]
    assert "\n" not in lines[0]


def test_the_default_fallback_for_training_is_inductor():
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 1))
    x = torch.randn(3, 4)
    out = torch.compile(model, backend="fxopt")(x)
    assert out.requires_grad
    torch.testing.assert_close(out, model(x))


def test_a_graph_fxopt_cannot_compile_runs_with_the_fallback_and_says_why(wrong_pass, caplog):
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU()).eval()
    x = torch.randn(3, 4)
    explanation = fxopt.explain(model, x, passes=wrong_pass, fallback="eager")
    assert len(explanation.left) == 1 and explanation.left[0].runs_with == "eager"
    assert "changed the numerics" in explanation.left[0].reason and wrong_pass in explanation.left[0].reason
    with torch.no_grad(), caplog.at_level(logging.WARNING, logger="fxopt.dynamo"):
        out = torch.compile(model, backend="fxopt", options={"passes": wrong_pass, "fallback": "eager"})(x)
        torch.testing.assert_close(out, model(x))    # the eager fallback, not the wrong artifact
    assert any("left to eager" in r.getMessage() for r in caplog.records)


def test_compiling_never_writes_into_the_callers_inputs_and_the_artifact_writes_as_eager_does():
    class AddsInPlace(nn.Module):
        def forward(self, x):
            x.add_(1)
            return x * 2

    x = torch.zeros(3)
    with torch.no_grad():
        out = torch.compile(AddsInPlace(), backend="fxopt")(x)
    assert out.tolist() == [2.0] * 3 and x.tolist() == [1.0] * 3   # one write, as one eager call makes


def test_fallback_error_raises_instead():
    model = nn.Sequential(nn.Linear(4, 1))
    with pytest.raises(Exception, match="training graph"):
        torch.compile(model, backend="fxopt", options={"fallback": "error"})(torch.randn(2, 4))


@pytest.mark.parametrize("options, message", [
    ({"bakend": "xla"}, "unknown option 'bakend'"),
    ({"backend": "nope"}, "nope"),
    ({"passes": "dce,nosuchpass"}, "nosuchpass"),
    ({"fallback": "cuda"}, "fallback must be one of"),
])
def test_bad_options_are_one_line_errors(options, message):
    with pytest.raises(fxopt.InputError, match=message):
        DynamoOptions.from_dict(options)


def test_the_entry_point_resolves_in_a_fresh_process_without_importing_fxopt():
    code = ("import sys, torch\n"
            "from torch._dynamo.backends.registry import lookup_backend\n"
            "assert 'fxopt' not in sys.modules\n"
            "fn = lookup_backend('fxopt')\n"
            "print(fn.__module__, fn.__name__)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd="/")
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["fxopt.dynamo", "fxopt_backend"]
