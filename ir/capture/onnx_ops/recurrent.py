"""ONNX recurrent ops: LSTM, GRU, RNN, unrolled over the (static) sequence length with torch ops.

All attributes are read: ``direction`` (forward/reverse/bidirectional), ``activations`` with
``activation_alpha``/``activation_beta``, ``clip`` (of every gate's pre-activation), ``layout``, GRU's
``linear_before_reset``, LSTM's ``input_forget`` and peepholes, and the optional ``sequence_lens``,
``initial_h`` and ``initial_c`` inputs. With ``sequence_lens``, steps past a batch entry's length leave its
state unchanged and write zeros to ``Y`` (a reverse direction starts at the entry's last valid step).
"""
from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from fxopt.ir.capture.onnx_ops.base import Ctx, as_str, optional_input, rule, tensor

# name (lower case) -> (alpha default or None when unused, beta default or None, fn(x, alpha, beta))
_ACTIVATIONS: dict[str, tuple] = {
    "relu": (None, None, lambda x, a, b: torch.relu(x)),
    "tanh": (None, None, lambda x, a, b: torch.tanh(x)),
    "sigmoid": (None, None, lambda x, a, b: torch.sigmoid(x)),
    "softsign": (None, None, lambda x, a, b: x / (1 + x.abs())),
    "softplus": (None, None, lambda x, a, b: F.softplus(x)),
    "affine": (1.0, 0.0, lambda x, a, b: x * a + b),
    "leakyrelu": (0.01, None, lambda x, a, b: F.leaky_relu(x, a)),
    "thresholdedrelu": (1.0, None, lambda x, a, b: torch.where(x > a, x, torch.zeros_like(x))),
    "scaledtanh": (1.0, 1.0, lambda x, a, b: a * torch.tanh(b * x)),
    "hardsigmoid": (0.2, 0.5, lambda x, a, b: torch.clamp(a * x + b, 0.0, 1.0)),
    "elu": (1.0, None, lambda x, a, b: F.elu(x, a)),
}
_DEFAULT_ACTIVATIONS = {"LSTM": ["Sigmoid", "Tanh", "Tanh"], "GRU": ["Sigmoid", "Tanh"], "RNN": ["Tanh"]}


def _activations(op: str, attrs: dict, n_dirs: int) -> list[list[Callable]]:
    """Per direction, the op's activation functions; ``activation_alpha``/``activation_beta`` values are
    consumed in order by the functions that take an alpha (a beta), the others use the ONNX defaults."""
    names = [as_str(n) for n in attrs.get("activations", [])] or _DEFAULT_ACTIVATIONS[op] * n_dirs
    per_dir = len(_DEFAULT_ACTIVATIONS[op])
    if len(names) == per_dir and n_dirs == 2:
        names = names * 2
    if len(names) != per_dir * n_dirs:
        raise ValueError(f"{op} needs {per_dir * n_dirs} activations, got {len(names)}")
    alphas, betas = list(attrs.get("activation_alpha", [])), list(attrs.get("activation_beta", []))
    fns = []
    for name in names:
        if name.lower() not in _ACTIVATIONS:
            raise ValueError(f"{op} activation '{name}' is not supported")
        a_def, b_def, fn = _ACTIVATIONS[name.lower()]
        a = (alphas.pop(0) if alphas else a_def) if a_def is not None else None
        b = (betas.pop(0) if betas else b_def) if b_def is not None else None
        fns.append(lambda x, fn=fn, a=a, b=b: fn(x, a, b))
    return [fns[d * per_dir:(d + 1) * per_dir] for d in range(n_dirs)]


class _Setup:
    """What every recurrent op reads the same way: X as [T, B, I], W, R, B, lengths, initial states as
    [num_directions, B, H], the directions and the per-direction activations and clip."""

    def __init__(self, ctx: Ctx, inputs: list, attrs: dict, n_gates: int):
        self.layout = attrs.get("layout", 0)
        x = tensor(inputs[0])
        self.x = x.transpose(0, 1) if self.layout else x
        self.w, self.r = tensor(inputs[1]), tensor(inputs[2])
        self.hidden = self.r.shape[-1]
        direction = as_str(attrs.get("direction", "forward"))
        if direction not in ("forward", "reverse", "bidirectional"):
            raise ValueError(f"{ctx.op} direction '{direction}' is not supported")
        self.reverse = [False, True] if direction == "bidirectional" else [direction == "reverse"]
        n_dirs = len(self.reverse)
        bias = optional_input(inputs, 3)
        if bias is None:
            bias = torch.zeros(n_dirs, 2 * n_gates * self.hidden, dtype=self.x.dtype)
        self.wb, self.rb = bias[:, :n_gates * self.hidden], bias[:, n_gates * self.hidden:]
        lens = optional_input(inputs, 4)
        self.lens = None if lens is None else lens.to(torch.int64).reshape(-1, 1)
        self.init = [self._state(optional_input(inputs, i), n_dirs) for i in (5, 6)]
        self.acts = _activations(ctx.op, attrs, n_dirs)
        clip = attrs.get("clip")
        self.clip = (lambda v: v.clamp(-clip, clip)) if clip is not None else (lambda v: v)

    def _state(self, s, n_dirs: int) -> torch.Tensor:
        if s is None:
            return torch.zeros(n_dirs, self.x.shape[1], self.hidden, dtype=self.x.dtype)
        return s.transpose(0, 1) if self.layout else s

    def run(self, cell: Callable, d: int, states: list) -> tuple[torch.Tensor, list]:
        """Unroll ``cell(x_proj_t, states) -> new states`` (first state = hidden) for direction ``d``;
        returns Y for this direction as [T, B, H] and the final states."""
        proj = torch.matmul(self.x, self.w[d].transpose(0, 1)) + self.wb[d]
        steps = range(self.x.shape[0])
        ys = [None] * len(steps)
        for t in (reversed(steps) if self.reverse[d] else steps):
            new = cell(proj[t], states)
            if self.lens is not None:
                valid = t < self.lens
                ys[t] = torch.where(valid, new[0], torch.zeros_like(new[0]))
                new = [torch.where(valid, n, s) for n, s in zip(new, states)]
            else:
                ys[t] = new[0]
            states = new
        return torch.stack(ys), states

    def outputs(self, per_dir: list) -> list:
        """ONNX outputs from ``[(Y [T, B, H], final states)]`` per direction: Y, Y_h (, Y_c)."""
        y = torch.stack([p[0] for p in per_dir], 1)  # [T, D, B, H]
        finals = [torch.stack([p[1][i] for p in per_dir]) for i in range(len(per_dir[0][1]))]
        if self.layout:
            return [y.permute(2, 0, 1, 3)] + [f.transpose(0, 1) for f in finals]
        return [y] + finals


def _gates(v: torch.Tensor, n: int) -> list:
    return list(torch.chunk(v, n, dim=-1))


@rule("RNN")
def _rnn(ctx: Ctx, inputs: list, attrs: dict) -> list:
    """ONNX RNN: H_t = f(X_t W^T + H_{t-1} R^T + Wb + Rb)."""
    s = _Setup(ctx, inputs, attrs, 1)
    per_dir = []
    for d in range(len(s.reverse)):
        (f,) = s.acts[d]
        r_t, rb = s.r[d].transpose(0, 1), s.rb[d]

        def cell(xp, st, r_t=r_t, rb=rb, f=f):
            return [f(s.clip(xp + torch.matmul(st[0], r_t) + rb))]
        per_dir.append(s.run(cell, d, [s.init[0][d]]))
    return s.outputs(per_dir)


@rule("GRU")
def _gru(ctx: Ctx, inputs: list, attrs: dict) -> list:
    """ONNX GRU (gates z, r, h): z, r = f(...); h = g(X Wh^T + (r * H) Rh^T + Rbh + Wbh), or with
    ``linear_before_reset`` h = g(X Wh^T + r * (H Rh^T + Rbh) + Wbh); H_t = (1 - z) * h + z * H_{t-1}."""
    s = _Setup(ctx, inputs, attrs, 3)
    before_reset = bool(attrs.get("linear_before_reset", 0))
    n = s.hidden
    per_dir = []
    for d in range(len(s.reverse)):
        f, g = s.acts[d]
        r_zr, r_h = s.r[d][:2 * n].transpose(0, 1), s.r[d][2 * n:].transpose(0, 1)
        rb_zr, rb_h = s.rb[d][:2 * n], s.rb[d][2 * n:]

        def cell(xp, st, f=f, g=g, r_zr=r_zr, r_h=r_h, rb_zr=rb_zr, rb_h=rb_h):
            h_prev = st[0]
            x_zr, x_h = xp[..., :2 * n], xp[..., 2 * n:]
            z, r = _gates(f(s.clip(x_zr + torch.matmul(h_prev, r_zr) + rb_zr)), 2)
            if before_reset:
                h = g(s.clip(x_h + r * (torch.matmul(h_prev, r_h) + rb_h)))
            else:
                h = g(s.clip(x_h + torch.matmul(r * h_prev, r_h) + rb_h))
            return [(1 - z) * h + z * h_prev]
        per_dir.append(s.run(cell, d, [s.init[0][d]]))
    return s.outputs(per_dir)


@rule("LSTM")
def _lstm(ctx: Ctx, inputs: list, attrs: dict) -> list:
    """ONNX LSTM (gates i, o, f, c; peepholes P = [Pi, Po, Pf]): i, f = f(... + P * C_{t-1}), c = g(...),
    C_t = f * C_{t-1} + i * c, o = f(... + Po * C_t), H_t = o * h(C_t); ``input_forget`` couples f = 1 - i."""
    s = _Setup(ctx, inputs, attrs, 4)
    peep = optional_input(inputs, 7)
    coupled = bool(attrs.get("input_forget", 0))
    per_dir = []
    for d in range(len(s.reverse)):
        f, g, h = s.acts[d]
        r_t, rb = s.r[d].transpose(0, 1), s.rb[d]
        p_i, p_o, p_f = _gates(peep[d], 3) if peep is not None else (0, 0, 0)

        def cell(xp, st, f=f, g=g, h=h, r_t=r_t, rb=rb, p_i=p_i, p_o=p_o, p_f=p_f):
            h_prev, c_prev = st
            gi, go, gf, gc = _gates(xp + torch.matmul(h_prev, r_t) + rb, 4)
            i = f(s.clip(gi + p_i * c_prev))
            forget = 1 - i if coupled else f(s.clip(gf + p_f * c_prev))
            c = forget * c_prev + i * g(s.clip(gc))
            o = f(s.clip(go + p_o * c))
            return [o * h(c), c]
        per_dir.append(s.run(cell, d, [s.init[0][d], s.init[1][d]]))
    return s.outputs(per_dir)
