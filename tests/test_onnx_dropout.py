"""ONNX Dropout through fxopt.capture: training mode draws a random keep mask and scales the kept elements by
1 / (1 - ratio); inference mode (training_mode false or absent, or ratio 0) is the identity with an all-true
mask. The ratio and training_mode come as constants or as graph inputs."""
from __future__ import annotations

import numpy as np
import pytest
import torch

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper  # noqa: E402

import fxopt  # noqa: E402

SHAPE = [64, 64]


def dropout_model(ratio=None, training=None, graph_inputs=False, opset=18):
    """A one-node Dropout model with outputs y and mask; ``ratio`` / ``training`` become initializers, or
    graph inputs ``r`` / ``t`` with ``graph_inputs``; None leaves the input out."""
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, SHAPE)]
    inits, names = [], ["x"]
    for name, value, dtype in (("r", ratio, TensorProto.FLOAT), ("t", training, TensorProto.BOOL)):
        if value is None:
            names.append("")
            continue
        names.append(name)
        if graph_inputs:
            inputs.append(helper.make_tensor_value_info(name, dtype, []))
        else:
            inits.append(helper.make_tensor(name, dtype, [], [value]))
    while names and names[-1] == "":
        names.pop()
    node = helper.make_node("Dropout", names, ["y", "mask"])
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, SHAPE),
               helper.make_tensor_value_info("mask", TensorProto.BOOL, SHAPE)]
    graph = helper.make_graph([node], "g", inputs, outputs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def capture(model, tmp_path, inputs):
    path = str(tmp_path / "dropout.onnx")
    onnx.save(model, path)
    return fxopt.capture(path, inputs)


def x_input():
    return torch.rand(*SHAPE) + 0.5  # no zeros: a zero output then means a dropped element


def check_training(y, mask, x, ratio):
    """y is x / (1 - ratio) where the mask keeps and 0 where it drops; about 1 - ratio of it is kept."""
    assert y.dtype == torch.float32 and mask.dtype == torch.bool and mask.shape == x.shape
    torch.testing.assert_close(y[mask], x[mask] / (1 - ratio))
    assert torch.all(y[~mask] == 0)
    keep = mask.float().mean().item()
    assert abs(keep - (1 - ratio)) < 0.1, keep  # 4096 draws: the standard deviation is under 0.01


@pytest.mark.parametrize("ratio", [0.25, 0.5, 0.75])
def test_training_mode_drops_and_scales(tmp_path, ratio):
    x = x_input()
    program = capture(dropout_model(ratio, True), tmp_path, (x,))
    y, mask = program(x)
    check_training(y, mask, x, ratio)


def test_training_mode_mask_is_drawn_anew_each_run(tmp_path):
    x = x_input()
    program = capture(dropout_model(0.5, True), tmp_path, (x,))
    assert not torch.equal(program(x)[1], program(x)[1])


def test_ratio_and_training_mode_as_graph_inputs(tmp_path):
    x, r = x_input(), torch.tensor(0.5)
    program = capture(dropout_model(0.5, True, graph_inputs=True), tmp_path, (x, r, torch.tensor(True)))
    check_training(*program(x, r, torch.tensor(True)), x, 0.5)
    y, mask = program(x, r, torch.tensor(False))
    assert torch.equal(y, x) and bool(mask.all())


@pytest.mark.parametrize("ratio, training", [(None, None), (0.5, None), (0.5, False), (0.0, True)])
def test_inference_mode_and_zero_ratio_are_the_identity(tmp_path, ratio, training):
    x = x_input()
    program = capture(dropout_model(ratio, training), tmp_path, (x,))
    y, mask = program(x)
    assert torch.equal(y, x)
    assert mask.dtype == torch.bool and bool(mask.all())


def test_old_opset_dropout_is_the_identity(tmp_path):
    node = helper.make_node("Dropout", ["x"], ["y"], ratio=0.5)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, SHAPE)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, SHAPE)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 10)])
    x = x_input()
    y = capture(model, tmp_path, (x,))(x)
    np.testing.assert_array_equal((y[0] if isinstance(y, (tuple, list)) else y).numpy(), x.numpy())
