"""ONNX recurrent ops: LSTM, GRU, RNN (unrolled over the sequence)."""
from __future__ import annotations

import torch

from fxopt.ir.capture.onnx_ops.base import Ctx, rule, tensor  # noqa: F401 - rules land here
