"""The XLA lowering computes float32 matmuls and convolutions at the precision PyTorch would use on a GPU,
read from PyTorch's own flags when the graph is traced (backends/xla/ops.py: matmul_precision,
conv_precision): matmuls full float32 unless ``torch.set_float32_matmul_precision`` says otherwise,
convolutions TF32-allowed while ``torch.backends.cudnn.allow_tf32`` is True (PyTorch's default)."""
from __future__ import annotations

import pytest
import torch

jax = pytest.importorskip("jax")

from fxopt.backends.xla import ops  # noqa: E402

x = jax.ShapeDtypeStruct((1, 3, 8, 8), jax.numpy.float32)
w = jax.ShapeDtypeStruct((4, 3, 3, 3), jax.numpy.float32)
a = jax.ShapeDtypeStruct((4, 8), jax.numpy.float32)


def _conv_hlo() -> str:
    conv = ops.RULES[torch.ops.aten.convolution]
    return jax.jit(lambda x, w: conv(x, w, None, [1, 1], [1, 1], [1, 1], False, [0, 0], 1)).lower(x, w).as_text()


def _matmul_hlo() -> str:
    return jax.jit(lambda p, q: ops._matmul(p, q.T)).lower(a, a).as_text()


@pytest.fixture
def torch_flags():
    """Restore PyTorch's precision flags after the test."""
    tf32, mm = torch.backends.cudnn.allow_tf32, torch.get_float32_matmul_precision()
    yield
    torch.backends.cudnn.allow_tf32 = tf32
    torch.set_float32_matmul_precision(mm)


def test_convolutions_allow_tf32_as_cudnn_does_by_default(torch_flags):
    torch.backends.cudnn.allow_tf32 = True
    text = _conv_hlo()
    assert "stablehlo.convolution" in text and "precision HIGH>" in text and "HIGHEST" not in text


def test_convolutions_are_full_float32_when_cudnn_tf32_is_off(torch_flags):
    torch.backends.cudnn.allow_tf32 = False
    assert "HIGHEST" in _conv_hlo()


def test_matmuls_are_full_float32_at_pytorchs_default(torch_flags):
    torch.set_float32_matmul_precision("highest")
    assert "HIGHEST" in _matmul_hlo()


def test_matmuls_follow_set_float32_matmul_precision(torch_flags):
    torch.set_float32_matmul_precision("medium")
    text = _matmul_hlo()
    assert "HIGHEST" not in text and "precision HIGH>" not in text


def test_the_module_setting_overrides_pytorchs_flags(torch_flags, monkeypatch):
    torch.backends.cudnn.allow_tf32 = True
    monkeypatch.setattr(ops, "MATMUL_PRECISION", "highest")
    assert "HIGHEST" in _conv_hlo()
