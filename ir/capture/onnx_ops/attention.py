"""Transformer ONNX ops (opset 23+): Attention, RotaryEmbedding, RMSNormalization, and the other attention-family ops."""
from __future__ import annotations

import torch

from fxopt.ir.capture.onnx_ops.base import Ctx, rule, tensor  # noqa: F401 - rules land here
