"""ONNX image ops: Resize, Upsample, GridSample, AffineGrid, CenterCropPad, DepthToSpace, SpaceToDepth, Col2Im."""
from __future__ import annotations

import torch

from fxopt.ir.capture.onnx_ops.base import Ctx, rule, tensor  # noqa: F401 - rules land here
