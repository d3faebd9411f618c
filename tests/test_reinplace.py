"""backends/reinplace: the runtime copy of a graph writes dead scratch buffers in place, and only those."""
from __future__ import annotations

import operator

import pytest
import torch
from torch import nn

import fxopt
from fxopt.backends.fast_graph import fast_forward
from fxopt.backends.reinplace import inplace_plan, inplace_variant, reinplaced_graph

aten = torch.ops.aten


def _program(fn, *inputs):
    class Wrap(nn.Module):
        def forward(self, *args):
            return fn(*args)

    return fxopt.capture(Wrap().eval(), inputs)


def _targets(graph: torch.fx.Graph) -> list:
    return [n.target for n in graph.nodes if n.op == "call_function"]


def _check_same_and_inputs_kept(program, *inputs):
    """The reinplaced runtime's outputs equal the GraphModule's bit for bit; the inputs are unchanged."""
    gm = program.graph_module
    kept = [t.clone() for t in inputs]
    want = gm(*[t.clone() for t in inputs])
    got = fast_forward(gm)(*inputs)
    for a, b in zip(got if isinstance(got, (tuple, list)) else (got,),
                    want if isinstance(want, (tuple, list)) else (want,)):
        assert torch.equal(a, b)
    assert all(torch.equal(a, b) for a, b in zip(inputs, kept))


def test_op_on_a_dead_intermediate_runs_in_place_and_op_on_an_input_does_not():
    # Before: add(x, 1) -> relu -> mul(., 2); Expected: add (x is the caller's), relu_, mul_
    program = _program(lambda x: torch.relu(x + 1) * 2, torch.randn(3, 4))
    graph, changed = reinplaced_graph(program.graph)
    assert _targets(graph) == [aten.add.Tensor, aten.relu_.default, aten.mul_.Tensor]
    assert len(changed) == 2
    _check_same_and_inputs_kept(program, torch.randn(3, 4))


def test_the_functional_graph_is_left_unchanged():
    program = _program(lambda x: torch.relu(x + 1), torch.randn(3, 4))
    before = str(program.graph)
    reinplaced_graph(program.graph)
    assert str(program.graph) == before


def test_a_buffer_read_later_keeps_the_functional_op():
    # a = x + 1 is read again after relu: relu(a) must not overwrite it
    program = _program(lambda x: (lambda a: torch.relu(a) + a)(x + 1), torch.randn(3, 4))
    graph, _ = reinplaced_graph(program.graph)
    assert aten.relu.default in _targets(graph) and aten.relu_.default not in _targets(graph)
    _check_same_and_inputs_kept(program, torch.randn(3, 4))


def test_a_view_read_later_keeps_the_functional_op():
    # v views a; relu(a) happens before v is read
    def fn(x):
        a = x + 1
        v = a.view(-1)
        return torch.relu(a), v.sum()

    program = _program(fn, torch.randn(3, 4))
    graph, _ = reinplaced_graph(program.graph)
    assert aten.relu_.default not in _targets(graph)
    _check_same_and_inputs_kept(program, torch.randn(3, 4))


def test_graph_outputs_and_weights_are_never_written():
    lin = nn.Linear(4, 4)

    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = lin
            self.register_buffer("bias", torch.randn(4))

        def forward(self, x):
            a = x * 3
            return a, torch.relu(a), self.bias + 1

    program = fxopt.capture(M().eval(), (torch.randn(2, 4),))
    graph, _ = reinplaced_graph(program.graph)
    assert aten.relu_.default not in _targets(graph)     # a is an output
    bias = program.graph_module.bias.clone()
    _check_same_and_inputs_kept(program, torch.randn(2, 4))
    assert torch.equal(program.graph_module.bias, bias)


@pytest.mark.parametrize("fn, why", [
    (lambda x: torch.zeros(1, 4) + x, "the result is broadcast wider than the buffer"),
    (lambda x: torch.arange(12).view(3, 4) * x, "type promotion: an int buffer, a float result"),
    (lambda x: (x + 1).expand(2, 3, 4) + 1, "the buffer is an expanded view: the result is laid out densely"),
])
def test_a_result_laid_out_unlike_its_buffer_keeps_the_functional_op(fn, why):
    program = _program(fn, torch.randn(3, 4))
    graph, _ = reinplaced_graph(program.graph)
    assert _targets(graph)[-1] in (aten.add.Tensor, aten.mul.Tensor), why
    _check_same_and_inputs_kept(program, torch.randn(3, 4))


def test_storage_handed_to_an_opaque_callable_is_never_written():
    # identity() could return its argument itself: relu(a) afterwards must not overwrite b
    def identity(t):
        return t

    graph = torch.fx.Graph()
    x = graph.placeholder("x")
    a = graph.call_function(aten.add.Tensor, (x, 1.0))
    b = graph.call_function(identity, (a,))
    c = graph.call_function(aten.relu.default, (a,))
    graph.output((b, c))
    example = torch.randn(3)
    for node, value in ((x, example), (a, example + 1), (b, example + 1), (c, torch.relu(example + 1))):
        node.meta["val"] = value
    new, changed = reinplaced_graph(graph)
    assert changed == []
    gm = torch.fx.GraphModule(nn.Module(), graph)
    got_b, got_c = fast_forward(gm)(example)
    assert torch.equal(got_b, example + 1)


def test_a_view_hidden_behind_a_fresh_schema_keeps_its_buffer_alive():
    # _unsafe_view's schema claims a fresh result, but it shares its input's storage: relu(a) must not
    # overwrite a while v (that storage) is read afterwards
    graph = torch.fx.Graph()
    x = graph.placeholder("x")
    a = graph.call_function(aten.add.Tensor, (x, 1.0))
    v = graph.call_function(aten._unsafe_view.default, (a, [12]))
    b = graph.call_function(aten.relu.default, (a,))
    w = graph.call_function(aten.mul.Tensor, (v, 2.0))
    graph.output((b, w))
    example = torch.randn(3, 4)
    values = {x: example, a: example + 1, v: (example + 1).view(12), b: torch.relu(example + 1),
              w: (example + 1).view(12) * 2}
    for node, value in values.items():
        node.meta["val"] = value
    new, changed = reinplaced_graph(graph)
    assert "relu" not in changed
    got_b, got_w = fast_forward(torch.fx.GraphModule(nn.Module(), graph))(example)
    assert torch.equal(got_w, (example + 1).view(12) * 2)


def test_random_ops_have_no_in_place_variant_here():
    assert inplace_variant(aten.bernoulli.p) is None
    assert inplace_variant(aten.add.Tensor) is aten.add_.Tensor
    assert inplace_variant(aten.view.default) is None              # a view: its result is not fresh
    assert inplace_variant(operator.add) is None


def test_routed_experts_run_in_place_and_match_the_functional_graph_bit_for_bit():
    from tests.test_moe import LoopMoE

    torch.manual_seed(0)
    model = LoopMoE(k=2, drop=0.3).eval()
    fused = fxopt.optimize(fxopt.capture(model, (torch.randn(7, 8),)), "moe", verify=False)
    plan = inplace_plan(fused.graph)
    assert any("index_add" in name for name in plan)           # the scatter back writes its fresh buffer
    for seed in range(3):
        x = torch.randn(7, 8, generator=torch.Generator().manual_seed(seed))
        _check_same_and_inputs_kept(fused, x)


def test_a_saved_artifact_runs_the_same_ops_in_place_after_loading(tmp_path):
    program = _program(lambda x: torch.relu(x @ x.t() + 1) * 2, torch.randn(3, 4))
    compiled = fxopt.compile(program, "reference")
    assert compiled.inplace_ops
    compiled.save(tmp_path / "a")
    loaded = fxopt.load(tmp_path / "a")
    assert loaded.inplace_ops == compiled.inplace_ops
    x = torch.randn(3, 4)
    assert torch.equal(loaded(x), compiled(x))
