"""ONNX signal ops: DFT, STFT, the window functions (HannWindow, HammingWindow, BlackmanWindow) and
MelWeightMatrix.

Transforms are explicit matmuls against cos/sin matrices (real tensors only, so every backend can run them),
computed in float64 and cast back: ONNX's reference computes them in float64 too, and outputs that cancel to
near zero must still meet an absolute tolerance. Lengths (``dft_length``, window ``size``, STFT's
``frame_step``/``frame_length``, the mel bin counts) must be known at trace time.
"""
from __future__ import annotations

import math

import torch

from fxopt.ir.capture.onnx_ops.base import DTYPES, Ctx, rule, scalar, tensor


def _present(inputs: list, i: int) -> bool:
    return len(inputs) > i and inputs[i] is not None


def _angles(n_in: int, n_out: int, length: int) -> torch.Tensor:
    """``2*pi*(n*k mod length)/length`` as an [n_in, n_out] float64 matrix (reduced exactly in integers)."""
    n = torch.arange(n_in, dtype=torch.int64).reshape(-1, 1)
    k = torch.arange(n_out, dtype=torch.int64).reshape(1, -1)
    return torch.remainder(n * k, length).to(torch.float64) * (2 * math.pi / length)


def _fit(v: torch.Tensor, length: int) -> torch.Tensor:
    """``v`` truncated or zero-padded along its last dim to ``length``."""
    have = v.shape[-1]
    if have >= length:
        return v[..., :length]
    return torch.cat([v, v.new_zeros(*v.shape[:-1], length - have)], dim=-1)


def _dft_last(re: torch.Tensor, im: torch.Tensor | None, length: int, inverse: bool, onesided: bool) -> list:
    """The DFT of ``re + i*im`` (float64, transformed dim last) of ``length`` points: [real, imag] parts, or
    [real] for a one-sided inverse (the Hermitian-symmetric spectrum's real signal)."""
    if inverse and onesided:
        bins = length // 2 + 1
        re, im = _fit(re, bins), _fit(im, bins) if im is not None else None
        weight = torch.full((bins,), 2.0, dtype=torch.float64)
        weight[0] = 1.0
        if length % 2 == 0:
            weight[-1] = 1.0
        ang = _angles(bins, length, length)  # [k, n]
        cos, sin = torch.cos(ang) * weight.reshape(-1, 1), torch.sin(ang) * weight.reshape(-1, 1)
        sin[0] = 0.0  # the imaginary parts of the DC (and Nyquist) bins do not contribute
        if length % 2 == 0:
            sin[-1] = 0.0
        out = re @ cos - (im @ sin if im is not None else 0.0)
        return [out / length]
    n_out = length // 2 + 1 if onesided and not inverse else length
    ang = _angles(length, n_out, length)  # [n, k]
    cos, sin = torch.cos(ang), torch.sin(ang)
    re = _fit(re, length)
    im = _fit(im, length) if im is not None else None
    sign = 1.0 if inverse else -1.0
    out_re = re @ cos - sign * (im @ sin) if im is not None else re @ cos
    out_im = sign * (re @ sin) + (im @ cos if im is not None else 0.0)
    if inverse:
        out_re, out_im = out_re / length, out_im / length
    return [out_re, out_im]


def _dft(x: torch.Tensor, axis: int, length: int | None, inverse: bool, onesided: bool) -> torch.Tensor:
    """ONNX DFT of ``x`` ([..., 1] real or [..., 2] complex) along ``axis``; the output keeps x's dtype."""
    rank = x.dim()
    axis = axis % rank
    if axis == rank - 1:
        raise ValueError("DFT along the last (real/imaginary) dim is not possible")
    if x.shape[-1] not in (1, 2):
        raise ValueError(f"DFT input's last dim must be 1 (real) or 2 (complex), got {x.shape[-1]}")
    if length is None:
        length = 2 * (x.shape[axis] - 1) if inverse and onesided else x.shape[axis]
    v = x.to(torch.float64).movedim(axis, -2)  # [..., L, 1|2]
    re = v[..., 0]
    im = v[..., 1] if x.shape[-1] == 2 else None
    parts = _dft_last(re, im, length, inverse, onesided)
    return torch.stack(parts, dim=-1).movedim(-2, axis).to(x.dtype)


@rule("DFT")
def _dft_rule(ctx: Ctx, inputs: list, attrs: dict) -> list:
    """ONNX DFT: forward/inverse (1/n scaled) discrete Fourier transform along one axis, optionally
    one-sided (real-to-complex, or for the inverse complex-to-real); ``dft_length`` pads or truncates."""
    x = tensor(inputs[0])
    length = int(scalar(inputs[1], "dft_length")) if _present(inputs, 1) else None
    if ctx.opset >= 20:
        axis = int(scalar(inputs[2], "axis")) if _present(inputs, 2) else -2
    else:
        axis = attrs.get("axis", 1)
    return [_dft(x, axis, length, bool(attrs.get("inverse", 0)), bool(attrs.get("onesided", 0)))]


@rule("STFT")
def _stft(ctx: Ctx, inputs: list, attrs: dict) -> list:
    """ONNX STFT: frames of ``frame_length`` every ``frame_step`` samples, times the window (default ones),
    each transformed by a ``frame_length``-point DFT: [batch, frames, bins, 2]."""
    x = tensor(inputs[0])
    step = int(scalar(inputs[1], "frame_step"))
    window = tensor(inputs[2]) if _present(inputs, 2) else None
    if _present(inputs, 3):
        length = int(scalar(inputs[3], "frame_length"))
    elif window is not None:
        length = window.shape[0]
    else:
        raise ValueError("STFT needs a window or a frame_length")
    n_frames = 1 + (x.shape[1] - length) // step
    idx = (torch.arange(n_frames).reshape(-1, 1) * step + torch.arange(length).reshape(1, -1))
    frames = x[:, idx]  # [batch, frames, length, 1|2]
    if window is not None:
        frames = frames * window.to(x.dtype).reshape(1, 1, -1, 1)
    return [_dft(frames, 2, length, False, bool(attrs.get("onesided", 1)))]


def _window_positions(inputs: list, attrs: dict) -> tuple[torch.Tensor, int, torch.dtype]:
    """(n = 0..size-1 as float64, the period N (size, or size - 1 when not periodic), the output dtype)."""
    size = int(scalar(inputs[0], "size"))
    period = size if attrs.get("periodic", 1) else size - 1
    code = attrs.get("output_datatype", 1)
    if code not in DTYPES:
        raise ValueError(f"window output_datatype {code} is not supported")
    return torch.arange(size, dtype=torch.float64), period, DTYPES[code]


@rule("HannWindow")
def _hann(ctx: Ctx, inputs: list, attrs: dict) -> list:
    """ONNX HannWindow: sin(pi n / N)^2."""
    n, period, dtype = _window_positions(inputs, attrs)
    return [(torch.sin(n * (math.pi / period)) ** 2).to(dtype)]


@rule("HammingWindow")
def _hamming(ctx: Ctx, inputs: list, attrs: dict) -> list:
    """ONNX HammingWindow: 25/46 - 21/46 cos(2 pi n / N)."""
    n, period, dtype = _window_positions(inputs, attrs)
    alpha = 25.0 / 46.0
    return [(alpha - (1 - alpha) * torch.cos(n * (2 * math.pi / period))).to(dtype)]


@rule("BlackmanWindow")
def _blackman(ctx: Ctx, inputs: list, attrs: dict) -> list:
    """ONNX BlackmanWindow: 0.42 - 0.5 cos(2 pi n / N) + 0.08 cos(4 pi n / N)."""
    n, period, dtype = _window_positions(inputs, attrs)
    w = 0.42 - 0.5 * torch.cos(n * (2 * math.pi / period)) + 0.08 * torch.cos(n * (4 * math.pi / period))
    return [w.to(dtype)]


def _hz_to_mel(hz: torch.Tensor) -> torch.Tensor:
    """2595 log10(1 + hz / 700), the log taken in hz's own type as ONNX's reference does (the band edges
    are floored to bins, so the rounding matters)."""
    return (2595.0 * torch.log1p(hz / 700.0)).to(torch.float64) / math.log(10.0)


@rule("MelWeightMatrix")
def _mel_weight_matrix(ctx: Ctx, inputs: list, attrs: dict) -> list:
    """ONNX MelWeightMatrix: [dft_length // 2 + 1, num_mel_bins] triangular filters whose edges are
    ``num_mel_bins + 2`` points evenly spaced in mel between the edge frequencies, as spectrogram bins
    ``floor((dft_length + 1) * hz / sample_rate)``."""
    n_mel = int(scalar(inputs[0], "num_mel_bins"))
    dft_length = int(scalar(inputs[1], "dft_length"))
    rate = tensor(inputs[2]).to(torch.float64)
    low, high = (tensor(v) for v in inputs[3:5])
    low_mel, high_mel = _hz_to_mel(low), _hz_to_mel(high)
    points = torch.arange(n_mel + 2, dtype=torch.float64) * ((high_mel - low_mel) / (n_mel + 2)) + low_mel
    hz = 700.0 * (torch.pow(10.0, points / 2595.0) - 1.0)
    edges = torch.div((dft_length + 1) * hz, rate, rounding_mode="floor")
    left, center, right = edges[:-2], edges[1:-1], edges[2:]  # [n_mel]
    j = torch.arange(dft_length // 2 + 1, dtype=torch.float64).reshape(-1, 1)
    rise_width = center - left
    rise = torch.where(rise_width > 0, (j - left) / rise_width.clamp(min=1.0), (j == center).to(torch.float64))
    rise = torch.where((j >= left) & (j <= center), rise, torch.zeros_like(rise))
    fall_width = right - center
    fall = (right - j) / fall_width.clamp(min=1.0)
    on_fall = (j >= center) & (j < right) & (fall_width > 0)
    out = torch.where(on_fall, fall, rise)
    code = attrs.get("output_datatype", 1)
    if code not in DTYPES:
        raise ValueError(f"MelWeightMatrix output_datatype {code} is not supported")
    return [out.to(DTYPES[code])]
