"""ONNX round trips of real architectures: tiny random-weight Hugging Face transformers models (tests/corpus)
and a hand-written segmentation net, exported with torch.onnx, imported with fxopt.capture("m.onnx") and run;
outputs checked against onnxruntime on the same file and against the eager PyTorch model."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
pytest.importorskip("transformers")

import fxopt  # noqa: E402
from fxopt.ir.numerics import assert_outputs_close  # noqa: E402

from corpus import BUILDERS, NOT_ONNX_EXPORTABLE, randomize_batch_norm  # noqa: E402

pytestmark = [pytest.mark.numerics]   # cross-runtime numerics: CI re-runs these on another vector path

# Every corpus model goes through the dynamo exporter at its default opset, except these, where that
# exporter itself fails (torch 2.13): its decomposition step cannot `view` the transposed output of
# scaled_dot_product_attention ("Cannot view a tensor with shape ... and strides ..."). They use the
# TorchScript exporter at opset 17 instead.
LEGACY_ONLY = {"t5", "swin"}


def exporter_for(name: str) -> str:
    return "legacy" if name in LEGACY_ONLY else "dynamo"


# ---------------------------------------------------------------------------------------------- the user net
class TinyUNet(torch.nn.Module):
    """A user-style segmentation net: a conv encoder halving the resolution twice, a decoder doubling it back
    with F.interpolate (bilinear, then nearest) and skip connections, and per-pixel class logits."""

    def __init__(self, classes: int = 3):
        super().__init__()
        self.enc = block(3, 8)
        self.down1 = block(8, 16, stride=2)
        self.down2 = block(16, 32, stride=2)
        self.up1 = block(32 + 16, 16)
        self.up2 = block(16 + 8, 8)
        self.head = torch.nn.Conv2d(8, classes, 1)

    def forward(self, x):
        e1 = self.enc(x)
        e2 = self.down1(e1)
        e3 = self.down2(e2)
        d2 = F.interpolate(e3, scale_factor=2, mode="bilinear", align_corners=False)
        d2 = self.up1(torch.cat([d2, e2], dim=1))
        d1 = F.interpolate(d2, scale_factor=2, mode="nearest")
        return self.head(self.up2(torch.cat([d1, e1], dim=1)))


def block(cin: int, cout: int, stride: int = 1) -> torch.nn.Module:
    return torch.nn.Sequential(torch.nn.Conv2d(cin, cout, 3, stride=stride, padding=1),
                               torch.nn.BatchNorm2d(cout), torch.nn.ReLU())


def tiny_unet():
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = TinyUNet()
        randomize_batch_norm(model)
        return model.eval(), (torch.randn(1, 3, 32, 32),)


# ---------------------------------------------------------------------------------------------- helpers
def export(model, inputs, path, exporter: str) -> str:
    """torch.onnx.export with the dynamo exporter (its default opset) or the TorchScript one (opset 17)."""
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        if exporter == "dynamo":
            torch.onnx.export(model, inputs, str(path), dynamo=True, verbose=False)
        else:
            torch.onnx.export(model, inputs, str(path), dynamo=False, opset_version=17)
    return str(path)


def run_ort(path, inputs):
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    graph_inputs = sess.get_inputs()
    assert len(graph_inputs) == len(inputs), f"the export kept {len(graph_inputs)} of {len(inputs)} inputs"
    return sess.run(None, {i.name: x.numpy() for i, x in zip(graph_inputs, inputs)})


def tensors(out):
    out = list(out) if isinstance(out, (tuple, list)) else [out]
    return [x.detach() if isinstance(x, torch.Tensor) else torch.from_numpy(np.asarray(x)) for x in out]


def op_types(path) -> set[str]:
    return {node.op_type for node in onnx.load(path).graph.node}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """(name, exporter) -> (model, inputs, onnx path); each model built and exported once per module."""
    cache = {}
    root = tmp_path_factory.mktemp("onnx_corpus")

    def get(name, exporter):
        if (name, exporter) not in cache:
            model, inputs = tiny_unet() if name == "unet" else BUILDERS[name]()
            cache[name, exporter] = (model, inputs, export(model, inputs, root / f"{name}-{exporter}.onnx", exporter))
        return cache[name, exporter]

    return get


def check_round_trip(model, inputs, path):
    """Capture the ONNX file and compare its outputs with onnxruntime's and the eager model's."""
    program = fxopt.capture(path, inputs)
    out = tensors(program(*inputs))
    assert_outputs_close(out, tensors(run_ort(path, inputs)), program)
    with torch.no_grad():
        assert_outputs_close(out, tensors(model(*inputs)), program)


# ---------------------------------------------------------------------------------------------- tests
@pytest.mark.parametrize("name, exporter", [pytest.param(name, exporter_for(name), id=f"{name}-{exporter_for(name)}")
                                            for name in BUILDERS if name not in NOT_ONNX_EXPORTABLE])
def test_hf_model_onnx_round_trip(exported, name, exporter):
    check_round_trip(*exported(name, exporter))


def test_segformer_decode_head_exports_resize(exported):
    assert "Resize" in op_types(exported("segformer", exporter_for("segformer"))[2])


@pytest.mark.parametrize("exporter", ["dynamo", "legacy"])
def test_user_segmentation_net_onnx_round_trip(exported, exporter):
    model, inputs, path = exported("unet", exporter)
    assert "Resize" in op_types(path)
    check_round_trip(model, inputs, path)
