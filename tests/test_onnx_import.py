"""ONNX in: fxopt.capture("model.onnx") on exported zoo models, conftest's transformer models and hand-built
graphs; numerics against onnxruntime and the original PyTorch model; passes, the reference backend and
the CLI on the result; one-line errors."""
from __future__ import annotations

import dataclasses
import os
import warnings

import numpy as np
import pytest
import torch

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper  # noqa: E402

import fxopt  # noqa: E402
from fxopt.ir.numerics import assert_outputs_close  # noqa: E402
from fxopt.errors import InputError  # noqa: E402
from fxopt.zoo import ocr as zoo_ocr  # noqa: E402

from conftest import AttentionBlock, TinyEncoder  # noqa: E402

pytestmark = pytest.mark.numerics   # cross-runtime numerics: CI re-runs these on another vector path


# ---------------------------------------------------------------------------------------------- helpers
def export_legacy(model, inputs, path, **kw):
    """torch.onnx.export with the TorchScript-based exporter (opset 17)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, inputs, str(path), dynamo=False, opset_version=17, **kw)
    return str(path)


def run_ort(path, inputs):
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {i.name: x.numpy() for i, x in zip(sess.get_inputs(), inputs)})


def as_list(out):
    return list(out) if isinstance(out, (tuple, list)) else [out]


def assert_close(actual, expected, program):
    """fxopt's outputs against onnxruntime's or the model's (numpy arrays or tensors) under the shared
    cross-runtime rule (fxopt.ir.numerics), with the rounding depths of ``program``'s graph."""
    def tensors(out):
        return [x.detach() if isinstance(x, torch.Tensor) else torch.from_numpy(np.asarray(x)) for x in as_list(out)]

    assert_outputs_close(tensors(actual), tensors(expected), program)


def mini_ocr():
    """The zoo's OCR architecture (conformer encoder + greedy decoder) at its smallest: 1 block, 1 layer,
    2 decode steps; the zoo's small=True variant exports to ~950 ONNX nodes, too slow for this file."""
    config = dataclasses.replace(zoo_ocr.SMALL, encoder_blocks=1, decoder_layers=1, max_len=2)
    torch.manual_seed(0)
    model = zoo_ocr.OCRModel(config).eval()
    return model, model.example_inputs()


class BagAttention(torch.nn.Module):
    """EmbeddingBag features added to a transformer block's output: the dynamo exporter turns the bag
    into Loop + If + Sequence ops."""

    def __init__(self):
        super().__init__()
        self.bag = torch.nn.EmbeddingBag(20, 32, mode="sum")
        self.block = AttentionBlock()

    def forward(self, ids, x):
        return self.block(x) + self.bag(ids).unsqueeze(1)


MODELS = {
    "resnet50": lambda: fxopt.zoo.get("resnet50", small=True),
    "moderation": lambda: fxopt.zoo.get("moderation", small=True),
    "ranking": lambda: fxopt.zoo.get("ranking", small=True),
    "ocr": mini_ocr,
}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """name -> (model, inputs, onnx path, captured Program); each model exported and captured once."""
    cache = {}
    root = tmp_path_factory.mktemp("onnx")

    def get(name):
        if name not in cache:
            if name == "tiny":
                torch.manual_seed(0)
                model = TinyEncoder().eval()
                inputs = model.example_inputs()
                path = export_legacy(model, inputs, root / "tiny.onnx", input_names=["ids"],
                                     dynamic_axes={"ids": {0: "batch", 1: "seq"}})
            elif name == "bag_attention":
                torch.manual_seed(0)
                model = BagAttention().eval()
                inputs = (torch.randint(0, 20, (2, 3)), torch.randn(2, 8, 32))
                path = str(root / "bag_attention.onnx")
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    torch.onnx.export(model, inputs, path, dynamo=True, opset_version=18)
            else:
                model, inputs = MODELS[name]()
                path = export_legacy(model, inputs, root / f"{name}.onnx")
            cache[name] = (model, inputs, path, fxopt.capture(path, inputs))
        return cache[name]

    return get


# ---------------------------------------------------------------------------------------------- round trips
@pytest.mark.parametrize("name", ["resnet50", "moderation", "ranking", "ocr", "tiny", "bag_attention"])
def test_captured_onnx_matches_onnxruntime_and_torch(exported, name):
    model, inputs, path, program = exported(name)
    out = program(*inputs)
    assert_close(out, run_ort(path, inputs), program)
    with torch.no_grad():
        assert_close(out, model(*inputs), program)


@pytest.mark.parametrize("name", ["resnet50", "moderation", "ranking", "ocr", "tiny"])
def test_onnx_program_optimizes_compiles_saves_and_loads(exported, tmp_path, name):
    model, inputs, path, program = exported(name)
    optimized = fxopt.optimize(program, "canonicalize,dedupe,moe,dce", verify=True)
    compiled = fxopt.compile(optimized, "reference")
    loaded = fxopt.load(compiled.save(str(tmp_path / "art")))
    with torch.no_grad():
        assert_close(loaded(*inputs), model(*inputs), optimized)


def test_onnx_capture_is_core_aten(exported):
    program = exported("resnet50")[3]
    targets = {str(n.target) for n in program.graph.nodes if n.op == "call_function"}
    assert "aten.convolution.default" in targets
    assert all(t.startswith("aten.") or t.startswith("<built-in") for t in targets)


def test_loop_of_embedding_bag_unrolls_to_static_slices(exported):
    program = exported("ranking")[3]
    ops = program.op_histogram()
    assert not any("while_loop" in op or "cond" == op for op in ops)
    assert ops.get("aten.embedding.default", 0) + ops.get("aten.index_select.default", 0) >= 8


def test_symbolic_onnx_dims_become_dynamic_dims(exported):
    model, inputs, path, program = exported("tiny")
    assert sorted(dim for dims in program.dynamic_dims.values() for _, dim in dims) == [0, 1]
    other = torch.randint(0, 100, (3, 5))
    with torch.no_grad():
        assert_close(program(other), model(other), program)


def test_default_example_inputs_come_from_onnx_types(exported):
    from fxopt.ir.capture.onnx_import import make_example_inputs

    (ids,) = make_example_inputs(onnx.load(exported("tiny")[2]))
    assert ids.shape == (2, 2) and ids.dtype == torch.int64      # symbolic dims -> 2
    assert int(ids.min()) >= 0 and int(ids.max()) < 4


def test_provenance_names_the_onnx_node_and_module(exported):
    program = exported("tiny")[3]
    emb = next(n for n in program.graph.nodes if n.target is torch.ops.aten.embedding.default)
    assert emb.meta["provenance"]["source"] == "tiny.onnx:node '/emb/Gather' (Gather)"
    assert emb.meta["provenance"]["module"] == "emb"
    placeholders = [n.name for n in program.placeholders()]
    assert placeholders == ["ids"]


def test_provenance_uses_dynamo_name_scopes(exported):
    program = exported("bag_attention")[3]
    modules = {n.meta["provenance"]["module"] for n in program.graph.nodes if n.op == "call_function"}
    assert {"block.ln1", "block.q", "bag"} <= modules


def test_cli_runs_an_onnx_file(tmp_path, capsys):
    from fxopt.backends.base import read_manifest
    from fxopt.tools.cli import main

    w = onnx.numpy_helper.from_array(np.random.randn(4, 3).astype(np.float32), "w")
    nodes = [helper.make_node("Gemm", ["x", "w"], ["h"], transB=1), helper.make_node("Relu", ["h"], ["y"])]
    path = str(tmp_path / "mlp.onnx")
    onnx.save(make_model(nodes, [vi("x", ["batch", 3])], [vi("y", ["batch", 4])], [w]), path)
    out = tmp_path / "out"
    assert main(["run", path, "--passes", "canonicalize,dce", "-o", str(out)]) == 0
    manifest = read_manifest(str(out))
    assert manifest["source"] == path and manifest["program"] == "mlp"
    loaded = fxopt.load(str(out))
    x = torch.randn(3, 3)
    assert_close(loaded(x), run_ort(path, (x,)), fxopt.capture(path, (x,)))


# ---------------------------------------------------------------------------------------------- op rules
def make_model(nodes, inputs, outputs, initializers=(), opset=18):
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(initializers))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def vi(name, shape, dtype=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, dtype, shape)


def ints_init(name, values):
    return helper.make_tensor(name, TensorProto.INT64, [len(values)], values)


def check_against_ort(model, tmp_path, inputs):
    path = str(tmp_path / "m.onnx")
    onnx.save(model, path)
    program = fxopt.capture(path, inputs)
    assert_close(program(*inputs), run_ort(path, inputs), program)
    return program


def test_gemm_attributes(tmp_path):
    c = helper.make_tensor("c", TensorProto.FLOAT, [4], [0.5, -1.0, 2.0, 0.0])
    node = helper.make_node("Gemm", ["a", "b", "c"], ["y"], transA=1, transB=1, alpha=0.5, beta=2.0)
    model = make_model([node], [vi("a", [3, 2]), vi("b", [4, 3])], [vi("y", [2, 4])], [c])
    check_against_ort(model, tmp_path, (torch.randn(3, 2), torch.randn(4, 3)))


def test_gemm_linear_form_becomes_addmm(tmp_path):
    w = helper.make_tensor("w", TensorProto.FLOAT, [4, 3], np.random.randn(12).astype(np.float32))
    b = helper.make_tensor("b", TensorProto.FLOAT, [4], np.random.randn(4).astype(np.float32))
    node = helper.make_node("Gemm", ["x", "w", "b"], ["y"], transB=1)
    model = make_model([node], [vi("x", [2, 3])], [vi("y", [2, 4])], [w, b])
    program = check_against_ort(model, tmp_path, (torch.randn(2, 3),))
    assert "aten.addmm.default" in program.op_histogram()


def test_reshape_zero_copies_and_minus_one_infers(tmp_path):
    node = helper.make_node("Reshape", ["x", "s"], ["y"])
    model = make_model([node], [vi("x", [2, 3, 4])], [vi("y", [2, 12])], [ints_init("s", [0, -1])])
    program = check_against_ort(model, tmp_path, (torch.randn(2, 3, 4),))
    assert tuple(program(torch.randn(2, 3, 4)).shape) == (2, 12)


def test_slice_negative_steps_and_axes_input(tmp_path):
    node = helper.make_node("Slice", ["x", "st", "en", "ax", "sp"], ["y"])
    inits = [ints_init("st", [-1, 4]), ints_init("en", [-100, 0]), ints_init("ax", [2, 1]),
             ints_init("sp", [-2, -1])]
    model = make_model([node], [vi("x", [2, 6, 7])], [vi("y", None)], inits)
    check_against_ort(model, tmp_path, (torch.randn(2, 6, 7),))


@pytest.mark.parametrize("opset,keepdims", [(18, 0), (13, 1)])
def test_reduce_axes_input_or_attribute(tmp_path, opset, keepdims):
    if opset >= 18:
        node = helper.make_node("ReduceMean", ["x", "axes"], ["y"], keepdims=keepdims)
        inits = [ints_init("axes", [0, -1])]
    else:
        node = helper.make_node("ReduceMean", ["x"], ["y"], axes=[0, -1], keepdims=keepdims)
        inits = []
    model = make_model([node], [vi("x", [2, 3, 4])], [vi("y", None)], inits, opset=opset)
    check_against_ort(model, tmp_path, (torch.randn(2, 3, 4),))


def test_reduce_empty_axes_noop(tmp_path):
    node = helper.make_node("ReduceSum", ["x"], ["y"], noop_with_empty_axes=1)
    model = make_model([node], [vi("x", [2, 3])], [vi("y", [2, 3])])
    check_against_ort(model, tmp_path, (torch.randn(2, 3),))


def test_shape_arithmetic_feeds_reshape_and_expand(tmp_path):
    nodes = [
        helper.make_node("Shape", ["x"], ["s"]),
        helper.make_node("Gather", ["s", "zero"], ["b"], axis=0),
        helper.make_node("Unsqueeze", ["b", "zero1"], ["b1"]),
        helper.make_node("Concat", ["b1", "minus1"], ["shape"], axis=0),
        helper.make_node("Reshape", ["x", "shape"], ["flat"]),
        helper.make_node("Expand", ["v", "s"], ["e"]),
        helper.make_node("Split", ["flat", "sp"], ["p", "q"], axis=1),
    ]
    inits = [helper.make_tensor("zero", TensorProto.INT64, [], [0]), ints_init("zero1", [0]),
             ints_init("minus1", [-1]), ints_init("sp", [5, 7])]
    model = make_model(nodes, [vi("x", ["n", 3, 4]), vi("v", [1, 4])],
                       [vi("p", None), vi("q", None), vi("e", None)], inits)
    check_against_ort(model, tmp_path, (torch.randn(2, 3, 4), torch.randn(1, 4)))


def test_conv_groups_and_same_upper_padding(tmp_path):
    w = helper.make_tensor("w", TensorProto.FLOAT, [4, 2, 3, 2], np.random.randn(48).astype(np.float32))
    node = helper.make_node("Conv", ["x", "w"], ["y"], group=2, strides=[2, 1], auto_pad="SAME_UPPER")
    model = make_model([node], [vi("x", [1, 4, 7, 5])], [vi("y", None)], [w])
    check_against_ort(model, tmp_path, (torch.randn(1, 4, 7, 5),))


def test_where_cast_and_topk(tmp_path):
    nodes = [helper.make_node("Greater", ["x", "zero"], ["m"]),
             helper.make_node("Where", ["m", "x", "zero"], ["r"]),
             helper.make_node("Cast", ["r"], ["h"], to=TensorProto.FLOAT16),
             helper.make_node("TopK", ["x", "k"], ["vals", "idx"], axis=-1)]
    inits = [helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0]), ints_init("k", [2])]
    model = make_model(nodes, [vi("x", [3, 5])], [vi("h", None, TensorProto.FLOAT16), vi("vals", None),
                                                    vi("idx", None, TensorProto.INT64)], inits)
    check_against_ort(model, tmp_path, (torch.randn(3, 5),))


# ---------------------------------------------------------------------------------------------- errors
def test_missing_file_is_one_line(tmp_path):
    with pytest.raises(InputError, match=r"nope\.onnx: no such file$"):
        fxopt.capture(str(tmp_path / "nope.onnx"))


def test_corrupt_file_is_one_line(tmp_path):
    path = tmp_path / "bad.onnx"
    path.write_bytes(b"\x08\x07garbage that is not protobuf \xff\xff\xff")
    with pytest.raises(InputError, match="bad.onnx: not (a readable )?(an )?ONNX model") as info:
        fxopt.capture(str(path))
    assert "\n" not in str(info.value)


def test_unsupported_ops_are_listed_in_one_line(tmp_path):
    nodes = [helper.make_node("Relu", ["x"], ["a"]),
             helper.make_node("ImageDecoder", ["a"], ["b"], name="hm_1"),
             helper.make_node("MyOp", ["b"], ["y"], name="mine", domain="custom.ops")]
    model = helper.make_model(helper.make_graph(nodes, "g", [vi("x", [2, 3])], [vi("y", [2, 3])]),
                              opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("custom.ops", 1)])
    path = str(tmp_path / "u.onnx")
    onnx.save(model, path)
    with pytest.raises(InputError) as info:
        fxopt.capture(path)
    text = str(info.value)
    assert "unsupported ONNX ops: ImageDecoder, custom.ops.MyOp" in text and "node 'hm_1'" in text
    assert "\n" not in text


def test_missing_external_data_names_the_file(tmp_path):
    w = onnx.numpy_helper.from_array(np.ones((3, 3), dtype=np.float32), "w")  # raw_data: can go external
    model = make_model([helper.make_node("MatMul", ["x", "w"], ["y"])], [vi("x", [2, 3])], [vi("y", [2, 3])], [w])
    path = str(tmp_path / "ext.onnx")
    onnx.save_model(model, path, save_as_external_data=True, location="ext.weights", size_threshold=0)
    os.remove(tmp_path / "ext.weights")
    with pytest.raises(InputError, match=r"ext\.onnx: external-data weights file 'ext\.weights'"):
        fxopt.capture(path)


def test_wrong_example_input_shape_names_the_input(tmp_path):
    model = make_model([helper.make_node("Relu", ["x"], ["y"])], [vi("x", [2, 3])], [vi("y", [2, 3])])
    path = str(tmp_path / "r.onnx")
    onnx.save(model, path)
    with pytest.raises(InputError, match="example input 'x' has shape \\[4, 3\\]"):
        fxopt.capture(path, (torch.randn(4, 3),))


def test_data_dependent_shape_names_the_onnx_node(tmp_path):
    nodes = [helper.make_node("Cast", ["x"], ["s"], to=TensorProto.INT64),
             helper.make_node("Reshape", ["x", "s"], ["y"], name="the_reshape")]
    model = make_model(nodes, [vi("x", [2])], [vi("y", None)])
    path = str(tmp_path / "d.onnx")
    onnx.save(model, path)
    with pytest.raises(InputError, match="d.onnx: node 'the_reshape' \\(Reshape\\) cannot be converted"):
        fxopt.capture(path)


def test_onnx_program_round_trips_through_neuron(exported, tmp_path):
    pytest.importorskip("fxopt.backends.neuron")
    model, inputs, path, program = exported("ranking")
    optimized = fxopt.optimize(program, "canonicalize,dedupe,moe,split{target=neuron}")
    loaded = fxopt.load(fxopt.compile(optimized, "neuron").save(str(tmp_path / "neuron")))
    with torch.no_grad():
        assert_close(loaded(*inputs), model(*inputs), optimized)


def test_slice_backwards_to_the_int64_sentinel_reverses_the_whole_axis(tmp_path):
    """Exporters reverse an axis with Slice(start=-1, end=-INT64_MAX, step=-1) (the legacy exporter's
    F.pad); the sentinel end means "through the first element"."""
    node = helper.make_node("Slice", ["x", "st", "en", "ax", "sp"], ["y"])
    inits = [ints_init("st", [-1]), ints_init("en", [-(2 ** 63 - 1)]), ints_init("ax", [0]), ints_init("sp", [-1])]
    model = make_model([node], [vi("x", [4, 2])], [vi("y", None)], inits)
    x = torch.randn(4, 2)
    program = check_against_ort(model, tmp_path, (x,))
    torch.testing.assert_close(program(x), x.flip(0))
