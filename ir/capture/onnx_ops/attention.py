"""Transformer ONNX ops (opset 23+): Attention, RotaryEmbedding, RMSNormalization, and the other attention-family ops
(SwiGLU, LinearAttention, CausalConvWithState, TensorScatter).

Attention is written out explicitly (scaled matmul, softcap, additive bias, softmax, matmul) rather than through
``F.scaled_dot_product_attention``: its optional ``qk_matmul_output`` exposes intermediate values, softcap sits
between the matmul and the bias, and fully-masked rows must give zeros, not NaN.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from fxopt.ir.capture.onnx_ops.base import DTYPES, Ctx, as_str, optional_input, rule, tensor


def _static_int(n, what: str) -> int:
    """A dim used to unroll a loop: it must be a plain int at trace time."""
    if not isinstance(n, int):
        raise ValueError(f"a dynamic {what} is not supported (it is unrolled at trace time)")  # noqa: TRY004
    return n


def _split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """(B, S, H*D) → (B, H, S, D)."""
    b, s, hd = x.shape
    return x.reshape(b, s, heads, hd // heads).transpose(1, 2)


# ---------------------------------------------------------------------------------------------- Attention
def _neg_inf_where(allowed: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """An additive bias: 0 where ``allowed``, -inf elsewhere."""
    zero = torch.zeros((), dtype=dtype)
    return torch.where(allowed, zero, torch.full((), float("-inf"), dtype=dtype))


def _mask_bias(mask: torch.Tensor, kv_len, dtype: torch.dtype) -> torch.Tensor:
    """``attn_mask`` as an additive bias over ``kv_len`` keys (a shorter mask is padded with masked keys)."""
    if mask.dtype == torch.bool:
        mask = _neg_inf_where(mask, dtype)
    pad = kv_len - mask.shape[-1]
    if not (isinstance(pad, int) and pad == 0):
        mask = F.pad(mask, [0, pad], value=float("-inf"))
    return mask


def _positions(q_len, kv_len, offset) -> torch.Tensor:
    """``(i + offset) - j`` for query i and key j: (q, kv), or (B, 1, q, kv) for a per-batch offset tensor."""
    i = torch.arange(q_len).reshape(-1, 1)
    j = torch.arange(kv_len).reshape(1, -1)
    if isinstance(offset, torch.Tensor):
        return (i + offset.to(torch.int64).reshape(-1, 1, 1, 1)) - j
    return (i + offset) - j


def _attention_bias(attrs: dict, q: torch.Tensor, kv_len, mask, past_len, nonpad) -> torch.Tensor | None:
    """The additive bias (attn_mask, causal frontier, sliding window, key padding), or None when there is none."""
    dtype = q.dtype
    q_len = q.shape[2]
    bias = _mask_bias(mask, kv_len, dtype) if mask is not None else None
    # the count of valid keys before the query block (bottom-right aligned causal / window)
    offset = past_len if past_len is not None else (nonpad - q_len if nonpad is not None else 0)
    parts = []
    if attrs.get("is_causal", 0):
        parts.append(_positions(q_len, kv_len, offset) >= 0)
    left, right = attrs.get("left_window_size", -1), attrs.get("right_window_size", -1)
    if left >= 0:
        parts.append(_positions(q_len, kv_len, offset) <= left)
    if right >= 0:
        parts.append(-_positions(q_len, kv_len, offset) <= right)
    if nonpad is not None:
        keys = torch.arange(kv_len).reshape(1, -1) < nonpad.to(torch.int64).reshape(-1, 1)
        parts.append(keys.reshape(keys.shape[0], 1, 1, kv_len))
    for allowed in parts:
        term = _neg_inf_where(allowed, dtype)
        bias = term if bias is None else bias + term
    return bias


def _softcap(x: torch.Tensor, cap: float) -> torch.Tensor:
    return torch.tanh(x / cap) * cap if cap > 0 else x


def _softmax(x: torch.Tensor) -> torch.Tensor:
    """Softmax over the last axis as ONNX defines it, exp(x - max) / sum, each step rounded to x's dtype (as
    the reference does for float16/bfloat16; the row sum accumulates in float32, a rounding-level
    difference); an all -inf row takes 0 as its max, so its exps are 0, not NaN."""
    m = torch.amax(x, dim=-1, keepdim=True)
    m = torch.where(m == float("-inf"), torch.zeros((), dtype=x.dtype), m)
    e = torch.exp(x - m)
    return e / e.sum(dim=-1, keepdim=True)


@rule("Attention")
def _attention(ctx: Ctx, inputs: list, attrs: dict) -> list:
    """ONNX Attention (23-25): (B, H, S, D) or packed (B, S, H*D) Q/K/V, GQA by head repetition, optional
    past key/value concatenation, bool/float attn_mask, bottom-right causal mask, sliding window,
    nonpad_kv_seqlen key padding, softcap, softmax_precision; outputs Y, present_key/value, qk_matmul_output."""
    q, k, v = (tensor(x) for x in inputs[:3])
    mask, past_k, past_v, nonpad = (optional_input(inputs, i) for i in range(3, 7))
    if (past_k is None) != (past_v is None):
        raise ValueError("Attention needs past_key and past_value together")
    packed = q.dim() == 3
    if packed:
        if "q_num_heads" not in attrs or "kv_num_heads" not in attrs:
            raise ValueError("Attention with 3D inputs needs the q_num_heads and kv_num_heads attributes")
        q = _split_heads(q, attrs["q_num_heads"])
        k, v = _split_heads(k, attrs["kv_num_heads"]), _split_heads(v, attrs["kv_num_heads"])
    past_len = None
    if past_k is not None:
        past_len = past_k.shape[2]
        k, v = torch.cat([past_k, k], dim=2), torch.cat([past_v, v], dim=2)
    present_k, present_v = k, v
    q_heads, kv_heads = q.shape[1], k.shape[1]
    if q_heads != kv_heads:
        k = k.repeat_interleave(q_heads // kv_heads, dim=1)
        v = v.repeat_interleave(q_heads // kv_heads, dim=1)

    scale = attrs.get("scale")
    scale = 1.0 / math.sqrt(q.shape[3]) if scale is None else scale
    # Q and K are each scaled by sqrt(scale) rounded to the input type, as the spec does to avoid overflow
    s = float(torch.tensor(math.sqrt(scale), dtype=torch.float64).to(q.dtype))
    qk = torch.matmul(q * s, (k * s).transpose(2, 3))
    capped = _softcap(qk, float(attrs.get("softcap", 0.0)))
    bias = _attention_bias(attrs, q, k.shape[2], mask, past_len, nonpad)
    logits = capped + bias if bias is not None else capped

    precision = attrs.get("softmax_precision")
    soft_dtype = DTYPES[precision] if precision else q.dtype
    probs = _softmax(logits.to(soft_dtype))
    if bias is not None:
        # a query row with no attendable key gives zeros (softmax over all -inf is NaN)
        empty = torch.amax(bias, dim=-1, keepdim=True) == float("-inf")
        probs = torch.where(empty, torch.zeros((), dtype=soft_dtype), probs)
    probs = probs.to(q.dtype)
    y = torch.matmul(probs, v)
    if packed:
        y = y.transpose(1, 2).reshape(y.shape[0], y.shape[2], -1)
    mode = attrs.get("qk_matmul_output_mode", 0)
    qk_out = {0: qk, 1: capped, 2: logits, 3: probs}.get(mode)
    if qk_out is None:
        raise ValueError(f"Attention qk_matmul_output_mode={mode} is not supported")
    return [y, present_k, present_v, qk_out.to(q.dtype)]


# ---------------------------------------------------------------------------------------------- norms / embeddings
@rule("RMSNormalization")
def _rms_norm(ctx: Ctx, inputs: list, attrs: dict) -> list:
    """ONNX RMSNormalization: X / sqrt(mean(X², axes [axis, rank)) + epsilon) * Scale, stage one computed in
    at least float32 (stash_type=1)."""
    x, scale = tensor(inputs[0]), tensor(inputs[1])
    axis = attrs.get("axis", -1)
    axis = axis + x.dim() if axis < 0 else axis
    dims = list(range(axis, x.dim()))
    xs = x
    if attrs.get("stash_type", 1) == 1 and x.dtype in (torch.float16, torch.bfloat16):
        xs = x.to(torch.float32)
    mean_sq = torch.mean(xs * xs, dim=dims, keepdim=True)
    normalized = (xs * torch.reciprocal(torch.sqrt(mean_sq + attrs.get("epsilon", 1e-5)))).to(x.dtype)
    return [normalized * scale]


@rule("RotaryEmbedding")
def _rotary_embedding(ctx: Ctx, inputs: list, attrs: dict) -> list:
    """ONNX RotaryEmbedding: rotates the first rotary_embedding_dim features of each head by the cos/sin
    caches (indexed by position_ids when given), in halves or interleaved pairs; (B, H, S, D) or (B, S, H*D)."""
    x, cos, sin = (tensor(v) for v in inputs[:3])
    pos = optional_input(inputs, 3)
    shape = x.shape
    if x.dim() == 4:
        x = x.transpose(1, 2)  # (B, S, H, D)
    else:
        heads = attrs.get("num_heads", 0)
        if not heads:
            raise ValueError("RotaryEmbedding with a 3D input needs the num_heads attribute")
        x = x.reshape(shape[0], shape[1], heads, shape[2] // heads)
    dim = attrs.get("rotary_embedding_dim", 0) or x.shape[3]
    rot, rest = x[..., :dim], x[..., dim:]
    if pos is not None:
        cos, sin = cos[pos], sin[pos]
    cos, sin = cos.unsqueeze(2), sin.unsqueeze(2)  # (B, S, 1, dim/2)
    if attrs.get("interleaved", 0):
        x1, x2 = rot[..., 0::2], rot[..., 1::2]
    else:
        x1, x2 = rot[..., : dim // 2], rot[..., dim // 2:]
    real, imag = cos * x1 - sin * x2, sin * x1 + cos * x2
    if attrs.get("interleaved", 0):
        rot = torch.stack([real, imag], dim=-1).reshape(rot.shape)
    else:
        rot = torch.cat([real, imag], dim=-1)
    out = torch.cat([rot, rest], dim=-1)
    return [out.reshape(shape) if len(shape) == 3 else out.transpose(1, 2)]


@rule("SwiGLU")
def _swiglu(ctx: Ctx, inputs: list, attrs: dict) -> list:
    """ONNX SwiGLU: A * sigmoid(alpha * A) * B."""
    a, b = tensor(inputs[0]), tensor(inputs[1])
    return [a * torch.sigmoid(a * attrs.get("alpha", 1.0)) * b]


# ---------------------------------------------------------------------------------------------- recurrent / cache ops
def _heads_last(x: torch.Tensor, kv_heads: int, d_k: int) -> torch.Tensor:
    """A decay/beta input (B, T, H_kv*d_k | H_kv | 1) as (B, H_kv|1, T, d_k|1)."""
    b, t, last = x.shape
    if last == kv_heads * d_k and last != kv_heads:
        return _split_heads(x, kv_heads)
    return x.reshape(b, t, last, 1).transpose(1, 2)


@rule("LinearAttention")
def _linear_attention(ctx: Ctx, inputs: list, attrs: dict) -> list:
    """ONNX LinearAttention: the per-token recurrence S_t = [exp(g_t)] S_{t-1} + k_t ⊗ v'_t (v'_t = v_t, or
    β_t (v_t - S^T k_t) for the delta rules), o_t = scale q_t^T S_t, in float32, unrolled over T; GQA shares
    each KV head's state across its query heads."""
    query, key, value = (tensor(x) for x in inputs[:3])
    past, decay, beta = (optional_input(inputs, i) for i in range(3, 6))
    rule_name = as_str(attrs.get("update_rule", "gated_delta"))
    if rule_name not in ("linear", "gated", "delta", "gated_delta"):
        raise ValueError(f"LinearAttention update_rule '{rule_name}' is not supported")
    gated, delta = rule_name in ("gated", "gated_delta"), rule_name in ("delta", "gated_delta")
    if (gated and decay is None) or (delta and beta is None):
        raise ValueError(f"LinearAttention update_rule '{rule_name}' needs its decay/beta inputs")
    hq, hkv = attrs["q_num_heads"], attrs["kv_num_heads"]
    b, t = query.shape[0], _static_int(query.shape[1], "sequence length")
    d_k, d_v = query.shape[2] // hq, value.shape[2] // hkv
    f32 = torch.float32
    q4, k4, v4 = (_split_heads(x, h).to(f32) for x, h in ((query, hq), (key, hkv), (value, hkv)))
    g4 = _heads_last(decay, hkv, d_k).to(f32) if gated else None
    b4 = _heads_last(beta, hkv, d_k).to(f32) if delta else None
    state = past.to(f32) if past is not None else torch.zeros(b, hkv, d_k, d_v, dtype=f32)
    scale = attrs.get("scale", 0.0) or 1.0 / math.sqrt(d_k)
    outs = []
    for i in range(t):
        k_t, v_t = k4[:, :, i], v4[:, :, i]
        if gated:
            state = state * torch.exp(g4[:, :, i]).unsqueeze(-1)
        if delta:
            v_t = b4[:, :, i] * (v_t - torch.einsum("bhdm,bhd->bhm", state, k_t))
        state = state + k_t.unsqueeze(-1) * v_t.unsqueeze(-2)
        read = state.repeat_interleave(hq // hkv, dim=1) if hq != hkv else state
        outs.append(scale * torch.einsum("bhd,bhdm->bhm", q4[:, :, i], read))
    out = torch.stack(outs, dim=2).transpose(1, 2).reshape(b, t, hq * d_v)
    state_dtype = past.dtype if past is not None else query.dtype
    return [out.to(query.dtype), state.to(state_dtype)]


@rule("CausalConvWithState")
def _causal_conv_with_state(ctx: Ctx, inputs: list, attrs: dict) -> list:
    """ONNX CausalConvWithState: depthwise conv1d over [past_state (or zeros), input] (B, C, L) with no padding,
    optional fused SiLU; present_state = the last k-1 positions of that concatenation."""
    x, w = tensor(inputs[0]), tensor(inputs[1])
    bias, past = optional_input(inputs, 2), optional_input(inputs, 3)
    act = as_str(attrs.get("activation", "none"))
    if act not in ("none", "silu", "swish"):
        raise ValueError(f"CausalConvWithState activation '{act}' is not supported")
    channels, k = x.shape[1], w.shape[2]
    if past is None:
        past = torch.zeros(x.shape[0], channels, k - 1, dtype=x.dtype)
    padded = torch.cat([past, x], dim=2)
    out = F.conv1d(padded, w, bias, groups=channels)
    if act != "none":
        out = F.silu(out.to(torch.float32)).to(x.dtype)
    present = padded.narrow(2, padded.shape[2] - (k - 1), k - 1)
    return [out, present]


@rule("TensorScatter")
def _tensor_scatter(ctx: Ctx, inputs: list, attrs: dict) -> list:
    """ONNX TensorScatter: writes ``update`` into ``past_cache`` along ``axis`` starting at each batch's
    write index (0 by default), wrapping around the cache length in "circular" mode."""
    cache, update = tensor(inputs[0]), tensor(inputs[1])
    starts = optional_input(inputs, 2)
    mode = as_str(attrs.get("mode", "linear"))
    if mode not in ("linear", "circular"):
        raise ValueError(f"TensorScatter mode '{mode}' is not supported")
    axis = attrs.get("axis", -2)
    axis = axis + cache.dim() if axis < 0 else axis
    batch, seq = cache.shape[0], update.shape[axis]
    if starts is None:
        starts = torch.zeros(batch, dtype=torch.int64)
    index = starts.to(torch.int64).reshape(-1, 1) + torch.arange(seq).reshape(1, -1)  # (B, seq)
    if mode == "circular":
        index = index % cache.shape[axis]
    view = [batch] + [1] * (cache.dim() - 1)
    view[axis] = seq
    index = index.reshape(view).expand(update.shape)
    return [torch.scatter(cache, axis, index, update)]
