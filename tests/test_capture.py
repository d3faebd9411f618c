"""Capture: every kind of model spec becomes a flat core-ATen Program that computes what the model does."""
from __future__ import annotations

import os
import textwrap

import pytest
import sympy
import torch

import fxopt
from fxopt.ir.numerics import assert_outputs_close
from fxopt.errors import InputError

from rewriting import op_set
from conftest import captured


def test_capture_module_matches_model():
    model, inputs, program = captured("encoder")
    torch.testing.assert_close(program(*inputs), model(*inputs))


def test_capture_gives_core_aten_ops():
    model, inputs, program = captured("block")
    ops = op_set(program)
    assert "aten.addmm.default" in ops or "aten.mm.default" in ops
    assert not any("linear" in op for op in ops)  # decomposed to core ATen


def test_every_node_has_shape_provenance_and_cost():
    model, inputs, program = captured("block")
    for node in program.graph.nodes:
        assert "provenance" in node.meta
        assert "cost" in node.meta
        if node.op in ("placeholder", "call_function", "get_attr"):
            assert "val" in node.meta, node.name


def test_provenance_points_at_model_source_line():
    model, inputs, program = captured("block")
    softmax = next(n for n in program.graph.nodes if "softmax" in str(n.target))
    source = softmax.meta["provenance"]["source"]
    assert source.startswith("fxopt/tests/conftest.py:")   # the same in every checkout (provenance.portable_path)
    line = int(source.rsplit(":", 1)[1])
    with open(os.path.join(os.path.dirname(__file__), "conftest.py")) as f:
        assert "softmax" in f.read().splitlines()[line - 1]


def test_provenance_records_module_path():
    model, inputs, program = captured("encoder")
    modules = {n.meta["provenance"]["module"] for n in program.graph.nodes}
    assert "blocks.1.fc1" in modules


def test_user_model_is_not_modified(encoder):
    model, inputs = encoder
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    program = fxopt.capture(model, inputs)
    fxopt.optimize(program, "canonicalize,fold-constants,dce")
    assert model.training and all(m.training for m in model.modules())
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key])
    weights = {t.untyped_storage().data_ptr() for t in program.parameters().values()}
    assert not weights & {p.untyped_storage().data_ptr() for p in model.parameters()}


def test_dynamic_dim_stays_symbolic(block):
    model, inputs = block
    batch = torch.export.Dim("batch", min=1, max=64)
    program = fxopt.capture(model, inputs, dynamic_shapes=({0: batch},))
    (symbol, where), = program.dynamic_dims.items()
    assert where == [["x", 0]]
    addmm = next(n for n in program.graph.nodes if "addmm" in str(n.target))
    flops = addmm.meta["cost"].flops
    assert isinstance(flops, sympy.Expr) and symbol in {str(s) for s in flops.free_symbols}
    bigger = (torch.randn(5, 8, 32),)
    torch.testing.assert_close(program(*bigger), model(*bigger))


def test_capture_pt2_file(tmp_path, block):
    model, inputs = block
    path = tmp_path / "block.pt2"
    torch.export.save(torch.export.export(model, inputs, strict=False), str(path))
    program = fxopt.capture(str(path))  # no inputs given: made from the recorded signature
    assert program.example_inputs[0].shape == inputs[0].shape
    torch.testing.assert_close(program(*inputs), model(*inputs))


def test_capture_file_spec_uses_example_inputs_method(tmp_path):
    src = tmp_path / "my_model.py"
    src.write_text(textwrap.dedent("""
        import torch
        class Net(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.fc = torch.nn.Linear(6, 2)
            def forward(self, x):
                return self.fc(x).relu()
            def example_inputs(self):
                return (torch.ones(3, 6),)
    """))
    program = fxopt.capture(f"{src}:Net")
    assert program.example_inputs[0].shape == (3, 6)
    assert program(torch.ones(3, 6)).shape == (3, 2)


def test_capture_module_spec(monkeypatch, tmp_path):
    (tmp_path / "pkg_models.py").write_text(
        "import torch\ndef make():\n    return torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Tanh())\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    program = fxopt.capture("pkg_models:make", (torch.randn(2, 4),))
    assert "aten.tanh.default" in op_set(program)


def test_capture_zoo_spec():
    model, inputs = fxopt.zoo.get("ranking", small=True)
    program = fxopt.capture(model, inputs)
    torch.testing.assert_close(program(*inputs), model(*inputs))


def test_nested_inputs_and_outputs_keep_their_structure():
    class Net(torch.nn.Module):
        def forward(self, x, extra):
            return {"sum": x + extra["bias"], "max": x.amax(-1)}

    inputs = (torch.randn(2, 3), {"bias": torch.randn(3)})
    out = fxopt.capture(Net(), inputs)(*inputs)
    assert set(out) == {"sum", "max"}
    torch.testing.assert_close(out["sum"], inputs[0] + inputs[1]["bias"])


def test_data_dependent_control_flow_is_a_clear_error():
    class Branchy(torch.nn.Module):
        def forward(self, x):
            if x.sum() > 0:
                return x * 2
            return x

    with pytest.raises(InputError) as info:
        fxopt.capture(Branchy(), (torch.randn(3),))
    message = str(info.value)
    assert "torch.cond" in message and "decode-loop" in message
    assert "test_capture.py" in message and "\n" not in message


def test_model_that_raises_names_the_line():
    class Broken(torch.nn.Module):
        def forward(self, x):
            return x @ torch.ones(5, 5)  # wrong inner dim

    with pytest.raises(InputError) as info:
        fxopt.capture(Broken(), (torch.randn(2, 3),))
    assert "test_capture.py:" in str(info.value)


@pytest.mark.parametrize("spec, words", [
    ("missing.pt2", "no such file"),
    ("nowhere/model.py:Net", "no such file"),
    ("zoo:nope", "unknown zoo model"),
    ("os:sep", "not a torch.nn.Module"),
    ("not_a_module_xyz:Net", "cannot import"),
])
def test_bad_specs_are_one_line_errors(spec, words):
    with pytest.raises(InputError) as info:
        fxopt.capture(spec)
    assert words in str(info.value) and "\n" not in str(info.value)


def test_corrupt_pt2_is_a_clear_error(tmp_path):
    path = tmp_path / "broken.pt2"
    path.write_bytes(b"this is not a zip archive")
    with pytest.raises(InputError, match="broken.pt2"):
        fxopt.capture(str(path))


def test_networkx_view_mirrors_the_graph():
    model, inputs, program = captured("block")
    g = program.to_networkx()
    assert g.number_of_nodes() == program.num_nodes()
    assert g.number_of_edges() == sum(len(n.users) for n in program.graph.nodes)
    import networkx as nx

    assert nx.is_directed_acyclic_graph(g)


@pytest.mark.parametrize("name", fxopt.zoo.names())
def test_capture_every_zoo_model(name):
    model, inputs, program = captured(name)
    expected, got = model(*inputs), program(*inputs)
    assert_outputs_close(got, expected, program)  # the shared rule; integer outputs (ocr tokens): exact
    assert all("cost" in n.meta and "provenance" in n.meta for n in program.graph.nodes)
