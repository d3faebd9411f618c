"""ONNX graph inputs that give a node's axes / k / shape: capture specializes them to the example value and
guards them (the program, and every backend's artifact, refuse another value in one line); float
initializers that give attribute-like values (Resize's scales) are read while tracing."""
from __future__ import annotations

import numpy as np
import pytest
import torch

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper  # noqa: E402

import fxopt  # noqa: E402
from fxopt.errors import InputError  # noqa: E402


def _save(tmp_path, nodes, inputs, outputs, inits=(), opset=18, name="m.onnx"):
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(inits))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    path = str(tmp_path / name)
    onnx.save(model, path)
    return path


def _ort(path, inputs):
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    return sess.run(None, {i.name: x.numpy() for i, x in zip(sess.get_inputs(), inputs)})


def _reduce_sum_with_axes_input(tmp_path):
    node = helper.make_node("ReduceSum", ["x", "axes"], ["y"], keepdims=0)
    return _save(tmp_path, [node], [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 4]),
                                     helper.make_tensor_value_info("axes", TensorProto.INT64, [2])],
                 [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])


def test_axes_graph_input_is_specialized_and_matches_onnxruntime(tmp_path):
    path = _reduce_sum_with_axes_input(tmp_path)
    inputs = (torch.randn(2, 3, 4), torch.tensor([0, 2]))
    program = fxopt.capture(path, inputs)
    np.testing.assert_allclose(program(*inputs).numpy(), _ort(path, inputs)[0], rtol=1e-5, atol=1e-6)
    assert program.placeholders()[1].meta["input_value"] == [0, 2]
    assert "aten.sum.dim_IntList" in program.op_histogram()


def test_specialized_input_with_another_value_is_a_one_line_error(tmp_path):
    path = _reduce_sum_with_axes_input(tmp_path)
    program = fxopt.capture(path, (torch.randn(2, 3, 4), torch.tensor([0, 2])))
    with pytest.raises(InputError, match=r"input 'axes': the model was captured for the value \[0, 2\].*got "
                                         r"\[1, 2\]; capture again") as err:
        program(torch.randn(2, 3, 4), torch.tensor([1, 2]))
    assert "\n" not in str(err.value)


def test_saved_artifact_keeps_the_guard(tmp_path):
    path = _reduce_sum_with_axes_input(tmp_path)
    x, axes = torch.randn(2, 3, 4), torch.tensor([0, 2])
    fxopt.compile(fxopt.capture(path, (x, axes)), "reference").save(str(tmp_path / "art"))
    loaded = fxopt.load(str(tmp_path / "art"))
    torch.testing.assert_close(loaded(x, axes), x.sum((0, 2)))
    with pytest.raises(InputError, match=r"the model was captured for the value \[0, 2\]"):
        loaded(x, torch.tensor([0, 1]))


def test_k_and_shape_inputs_specialize_together(tmp_path):
    nodes = [helper.make_node("TopK", ["x", "k"], ["v", "i"], axis=1),
             helper.make_node("Reshape", ["v", "shape"], ["y"])]
    path = _save(tmp_path, nodes,
                 [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 5]),
                  helper.make_tensor_value_info("k", TensorProto.INT64, [1]),
                  helper.make_tensor_value_info("shape", TensorProto.INT64, [1])],
                 [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    inputs = (torch.randn(3, 5), torch.tensor([2]), torch.tensor([6]))
    program = fxopt.capture(path, inputs)
    np.testing.assert_allclose(program(*inputs).numpy(), _ort(path, inputs)[0], rtol=1e-6)
    assert [p.meta.get("input_value") for p in program.placeholders()] == [None, [2], [6]]


def test_data_input_used_as_data_is_not_specialized(tmp_path):
    nodes = [helper.make_node("Gather", ["table", "ids"], ["y"], axis=0)]
    path = _save(tmp_path, nodes, [helper.make_tensor_value_info("table", TensorProto.FLOAT, [6, 2]),
                                   helper.make_tensor_value_info("ids", TensorProto.INT64, [3])],
                 [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    table = torch.randn(6, 2)
    program = fxopt.capture(path, (table, torch.tensor([0, 1, 2])))
    assert all("input_value" not in p.meta for p in program.placeholders())
    torch.testing.assert_close(program(table, torch.tensor([5, 4, 3])), table[[5, 4, 3]])


def test_too_large_value_input_names_the_input(tmp_path):
    node = helper.make_node("Reshape", ["x", "shape"], ["y"])
    path = _save(tmp_path, [node], [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3]),
                                    helper.make_tensor_value_info("shape", TensorProto.INT64, [1, 2])],
                 [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    with pytest.raises(InputError, match=r"graph input 'shape' \(\[1, 2\]\) gives a node's shape.*initializer"):
        fxopt.capture(path, (torch.randn(2, 3), torch.tensor([[3, 2]])))


def test_float_initializer_is_read_while_tracing(tmp_path):
    """A small float constant that gives an attribute-like value (Pad's constant_value here) is readable by
    the rule while tracing, though it is a parameter like every float initializer."""
    pads = helper.make_tensor("pads", TensorProto.INT64, [4], [0, 1, 0, 2])
    value = helper.make_tensor("value", TensorProto.FLOAT, [], [-3.5])
    node = helper.make_node("Pad", ["x", "pads", "value"], ["y"], mode="constant")
    path = _save(tmp_path, [node], [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
                 [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [pads, value])
    x = torch.randn(2, 3)
    program = fxopt.capture(path, (x,))
    np.testing.assert_allclose(program(x).numpy(), _ort(path, (x,))[0])
    assert program(x)[0, 0].item() == -3.5


def test_if_on_a_tensor_condition_selects_between_both_branches(tmp_path):
    then_g = helper.make_graph([helper.make_node("Mul", ["x", "two"], ["y"])], "then", [],
                               [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3])],
                               [helper.make_tensor("two", TensorProto.FLOAT, [], [2.0])])
    else_g = helper.make_graph([helper.make_node("Neg", ["x"], ["y2"])], "else", [],
                               [helper.make_tensor_value_info("y2", TensorProto.FLOAT, [3])])
    nodes = [helper.make_node("ReduceSum", ["x"], ["s"], keepdims=0),
             helper.make_node("Greater", ["s", "zero"], ["c"]),
             helper.make_node("If", ["c"], ["out"], then_branch=then_g, else_branch=else_g)]
    path = _save(tmp_path, nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3])],
                 [helper.make_tensor_value_info("out", TensorProto.FLOAT, [3])],
                 [helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0])])
    x = torch.tensor([1.0, 2.0, 3.0])
    program = fxopt.capture(path, (x,))
    assert program.op_histogram().get("aten.where.self") == 1
    for v in (x, -x):   # one program, both branches taken
        np.testing.assert_allclose(program(v).numpy(), _ort(path, (v,))[0])


def test_if_whose_branches_differ_in_shape_names_the_node(tmp_path):
    then_g = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "then", [],
                               [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    else_g = helper.make_graph([helper.make_node("ReduceSum", ["x"], ["y2"], keepdims=0)], "else", [],
                               [helper.make_tensor_value_info("y2", TensorProto.FLOAT, None)])
    nodes = [helper.make_node("ReduceSum", ["x"], ["s"], keepdims=0),
             helper.make_node("Greater", ["s", "zero"], ["c"]),
             helper.make_node("If", ["c"], ["out"], name="branchy", then_branch=then_g, else_branch=else_g)]
    path = _save(tmp_path, nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3])],
                 [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)],
                 [helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0])])
    with pytest.raises(InputError, match=r"node 'branchy' \(If\).*output 0 differs between the branches "
                                         r"\(float32\[3\] vs float32\[\]\)"):
        fxopt.capture(path, (torch.ones(3),))


def test_value_computed_from_a_graph_input_specializes_that_input(tmp_path):
    """Reshape's shape is computed (Add) from a graph input: the input it comes from is specialized, the data
    input next to it is not."""
    one = helper.make_tensor("one", TensorProto.INT64, [2], [1, 1])
    nodes = [helper.make_node("Add", ["dims", "one"], ["shape"]),
             helper.make_node("Reshape", ["x", "shape"], ["y"])]
    path = _save(tmp_path, nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [12]),
                                   helper.make_tensor_value_info("dims", TensorProto.INT64, [2])],
                 [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [one])
    x, dims = torch.randn(12), torch.tensor([2, 3])
    program = fxopt.capture(path, (x, dims))
    assert tuple(program(x, dims).shape) == (3, 4)
    assert [p.meta.get("input_value") for p in program.placeholders()] == [None, [2, 3]]
    with pytest.raises(InputError, match="input 'dims'"):
        program(x, torch.tensor([1, 5]))
