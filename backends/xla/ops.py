"""The ATen -> JAX lowering rules, as data: :data:`RULES` maps a call target to a JAX function.

A key is an ATen overload (``torch.ops.aten.addmm.default``), an overload packet (``torch.ops.aten.add``: the
rule serves every overload of that op), or a Python function that FX graphs call (``operator.getitem``,
``operator.mul`` on SymInts...). A rule takes the node's arguments with every graph value already lowered
(``jax.Array`` for tensors, Python ints for SymInts, lists stay lists) and the node's kwargs, and returns a
``jax.Array``, a Python number, or a tuple/list of them for multi-output ops. Rules run at trace time (inside
``jax.jit``): shapes are concrete ints, so shape logic is plain Python.

Semantics follow PyTorch exactly where the tests can tell: type promotion through
``torch._prims_common.elementwise_dtypes`` (the rules PyTorch's own references use), integer division
rounding modes, negative dims, keepdim, int64 results of index-producing ops. Float32 matmuls and
convolutions run at the precision PyTorch would use on a GPU, read from its flags when the graph is traced
(:func:`matmul_precision`, :func:`conv_precision`); :data:`MATMUL_PRECISION` overrides both.

:data:`CHECKS` maps a target to a static check ``(node) -> reason | None`` for nodes a rule exists for but
cannot lower (``as_strided`` with a non-contiguous layout, ``index`` with a boolean mask); rules that find out
only at trace time raise :class:`Unlowerable`.

This module imports jax: import it only from the ``xla`` backend (jax is the ``xla`` extra).
"""
from __future__ import annotations

import math
import operator
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import torch
import torch._prims_common as _pc
from jax import lax

import fxopt.ir.ops  # noqa: F401  (registers torch.ops.fxopt.*, whose rules are below)

aten = torch.ops.aten
_K = _pc.ELEMENTWISE_TYPE_PROMOTION_KIND

#: Precision of dot products and convolutions: None follows PyTorch's flags (see :func:`matmul_precision`);
#: "highest" forces full float32 everywhere, "default" lets XLA use TF32/bf16 passes everywhere.
MATMUL_PRECISION: str | None = None

RULES: dict[Any, Callable] = {}
CHECKS: dict[Any, Callable] = {}


class Unlowerable(Exception):
    """Raised by a rule (at trace time) for an argument combination it cannot lower; lower.py turns it into
    an UnsupportedOpError naming the node."""


def rule(*targets):
    """Decorator: register the function as the rule of every target given."""
    def deco(fn):
        for t in targets:
            RULES[t] = fn
        return fn
    return deco


# ============================================================================================ dtypes
_TORCH_TO_JAX = {
    torch.float32: jnp.float32, torch.float64: jnp.float64, torch.float16: jnp.float16,
    torch.bfloat16: jnp.bfloat16, torch.int8: jnp.int8, torch.int16: jnp.int16, torch.int32: jnp.int32,
    torch.int64: jnp.int64, torch.uint8: jnp.uint8, torch.bool: jnp.bool_, torch.complex64: jnp.complex64,
    torch.complex128: jnp.complex128, torch.uint16: jnp.uint16, torch.uint32: jnp.uint32,
    torch.uint64: jnp.uint64,
}
_JAX_TO_TORCH = {np.dtype(v): k for k, v in _TORCH_TO_JAX.items()}


def jdtype(dtype: torch.dtype | None) -> Any:
    """The numpy/JAX dtype of a torch dtype (None stays None)."""
    if dtype is None:
        return None
    try:
        return np.dtype(_TORCH_TO_JAX[dtype])
    except KeyError:
        raise Unlowerable(f"dtype {dtype} has no JAX equivalent") from None


def tdtype(dtype: Any) -> torch.dtype:
    """The torch dtype of a numpy/JAX dtype."""
    return _JAX_TO_TORCH[np.dtype(dtype)]


def _is_arr(x) -> bool:
    return hasattr(x, "dtype") and hasattr(x, "shape") and not isinstance(x, (bool, int, float))


def _dummy(x):
    """A meta tensor standing for x in torch's promotion (0-dim stays 0-dim), or the Python scalar itself."""
    if _is_arr(x):
        return torch.empty((1,) * min(x.ndim, 1), dtype=tdtype(x.dtype), device="meta")
    return x


def promote(kind, *vals) -> tuple[Any, Any]:
    """(compute dtype, result dtype) as numpy dtypes for an elementwise op on ``vals`` (arrays and Python
    scalars), by PyTorch's promotion rules of ``kind``."""
    args = [_dummy(v) for v in vals if v is not None]
    compute, result = _pc.elementwise_dtypes(*args, type_promotion_kind=kind)
    return jdtype(compute), jdtype(result)


def _as(x, dtype):
    """x (array or Python scalar) as an array of dtype (explicit, so jax_enable_x64 never widens floats)."""
    if _is_arr(x):
        return x if x.dtype == dtype else x.astype(dtype)
    return jnp.asarray(x, dtype=dtype)


def _floating(dt) -> bool:
    return jnp.issubdtype(dt, jnp.floating) or jnp.issubdtype(dt, jnp.complexfloating)


def _integral(dt) -> bool:
    return jnp.issubdtype(dt, jnp.integer) or dt == jnp.bool_


def _dim(d: int, ndim: int) -> int:
    """A possibly negative dim normalised (scalars accept 0 and -1, as in torch)."""
    n = max(ndim, 1)
    if not -n <= d < n:
        raise Unlowerable(f"dim {d} out of range for a {ndim}-d tensor")
    return d % n


def _dims(dims, ndim: int) -> tuple[int, ...]:
    """dims (None, an int or a list; empty list = all) normalised to a sorted tuple; () for 0-d tensors."""
    if ndim == 0:
        return ()
    if dims is None or (isinstance(dims, (list, tuple)) and len(dims) == 0):
        return tuple(range(ndim))
    if isinstance(dims, int):
        dims = [dims]
    return tuple(sorted({_dim(d, ndim) for d in dims}))


def _ew(fn, kind=_K.DEFAULT, nargs: int | None = None):
    """An elementwise rule: promote the operands (arrays and scalars) by ``kind``, compute in the compute
    dtype, return the result dtype."""
    def r(*args, **_):
        ops = args if nargs is None else args[:nargs]
        compute, result = promote(kind, *ops)
        out = fn(*[_as(a, compute) for a in ops])
        return _as(out, result)
    return r


def _ew_unary_int_identity(fn):
    """floor/ceil/round/trunc: integers pass through, floats use fn."""
    def r(x, **_):
        return x if _integral(x.dtype) else fn(x)
    return r


# ============================================================================================ bookkeeping
def _none(*_, **__):
    return None


for _op in ("_assert_tensor_metadata", "_assert_scalar", "_assert_async", "_functional_assert_async",
            "sym_constrain_range", "sym_constrain_range_for_size", "_functional_sym_constrain_range",
            "_functional_sym_constrain_range_for_size"):
    if hasattr(aten, _op):
        RULES[getattr(aten, _op)] = _none
RULES[operator.getitem] = operator.getitem
for _f in (operator.add, operator.sub, operator.mul, operator.truediv, operator.floordiv, operator.mod,
           operator.neg, operator.pow, operator.eq, operator.ne, operator.lt, operator.le, operator.gt,
           operator.ge, operator.and_, operator.or_, operator.not_, operator.abs, math.ceil, math.floor,
           math.sqrt, math.trunc):
    RULES[_f] = _f   # Python arithmetic on SymInts: plain ints at trace time
for _name in ("sym_max", "sym_min", "sym_float", "sym_int", "sym_not", "sym_sqrt", "sym_ite", "sym_sum"):
    if hasattr(torch, _name):
        RULES[getattr(torch, _name)] = getattr(torch, _name)   # on Python numbers these are builtins


@rule(aten.sym_size.int)
def _sym_size(x, dim):
    return x.shape[_dim(dim, x.ndim)]


@rule(aten.sym_numel.default)
def _sym_numel(x):
    return int(np.prod(x.shape, dtype=np.int64))


def _contiguous_strides(shape) -> list[int]:
    strides, acc = [], 1
    for s in reversed(shape):
        strides.append(acc)
        acc *= max(s, 1)
    return strides[::-1]


@rule(aten.sym_stride.int)
def _sym_stride(x, dim):
    return _contiguous_strides(x.shape)[_dim(dim, x.ndim)]   # JAX arrays are dense row-major


@rule(aten.sym_storage_offset.default)
def _sym_storage_offset(x):
    return 0


# ============================================================================================ elementwise
def _scaled(b, alpha):
    return b if alpha is None or alpha == 1 else b * alpha


@rule(aten.add)
def _add(a, b, alpha=None, **_):
    compute, result = promote(_K.DEFAULT, a, b)
    return _as(_as(a, compute) + _scaled(_as(b, compute), alpha), result)


@rule(aten.sub)
def _sub(a, b, alpha=None, **_):
    compute, result = promote(_K.DEFAULT, a, b)
    return _as(_as(a, compute) - _scaled(_as(b, compute), alpha), result)


@rule(aten.rsub)
def _rsub(a, b, alpha=None, **_):   # rsub(a, b) = b - alpha * a
    compute, result = promote(_K.DEFAULT, a, b)
    return _as(_as(b, compute) - _scaled(_as(a, compute), alpha), result)


RULES[aten.mul] = _ew(jnp.multiply)


def _div_mode(a, b, rounding_mode=None):
    if rounding_mode is None:
        return _ew(jnp.true_divide, _K.INT_TO_FLOAT)(a, b)
    compute, result = promote(_K.DEFAULT, a, b)
    x, y = _as(a, compute), _as(b, compute)
    if rounding_mode == "trunc":
        out = lax.div(x, y) if _integral(compute) else jnp.trunc(x / y)   # lax.div truncates toward zero
    elif rounding_mode == "floor":
        out = jnp.floor_divide(x, y) if _integral(compute) else jnp.floor(x / y)
    else:
        raise Unlowerable(f"div rounding_mode {rounding_mode!r}")
    return _as(out, result)


@rule(aten.div)
def _div(a, b, rounding_mode=None, **_):
    return _div_mode(a, b, rounding_mode)


@rule(aten.floor_divide)
def _floor_divide(a, b, **_):   # torch >= 1.13 floor_divide rounds toward -inf
    return _div_mode(a, b, "floor")


RULES[aten.remainder] = _ew(jnp.remainder)   # Python-style: result has the divisor's sign
RULES[aten.fmod] = _ew(jnp.fmod)             # C-style: result has the dividend's sign
RULES[aten.maximum] = _ew(jnp.maximum)
RULES[aten.minimum] = _ew(jnp.minimum)
RULES[aten.fmax] = _ew(jnp.fmax)
RULES[aten.fmin] = _ew(jnp.fmin)
RULES[aten.atan2] = _ew(jnp.arctan2, _K.INT_TO_FLOAT)
RULES[aten.hypot] = _ew(jnp.hypot)
RULES[aten.copysign] = _ew(jnp.copysign, _K.INT_TO_FLOAT)
RULES[aten.logaddexp] = _ew(jnp.logaddexp)


@rule(aten.pow)
def _pow(a, b, **_):
    compute, result = promote(_K.BOOL_TO_LONG, a, b)
    if not _is_arr(b) and float(b) == int(b) and abs(b) <= 64 and not (b < 0 and _integral(compute)):
        return _as(lax.integer_pow(_as(a, compute), int(b)), result)   # x ** 2 as x * x, like torch
    return _as(jnp.power(_as(a, compute), _as(b, compute)), result)


def _unary(fn, kind=_K.INT_TO_FLOAT):
    return _ew(fn, kind, nargs=1)


for _op, _fn in {
    "exp": jnp.exp, "exp2": jnp.exp2, "expm1": jnp.expm1, "log": jnp.log, "log2": jnp.log2,
    "log10": jnp.log10, "log1p": jnp.log1p, "sqrt": jnp.sqrt, "rsqrt": lax.rsqrt, "sin": jnp.sin,
    "cos": jnp.cos, "tan": jnp.tan, "asin": jnp.arcsin, "acos": jnp.arccos, "atan": jnp.arctan,
    "sinh": jnp.sinh, "cosh": jnp.cosh, "tanh": jnp.tanh, "asinh": jnp.arcsinh, "acosh": jnp.arccosh,
    "atanh": jnp.arctanh, "erf": jax.scipy.special.erf, "erfc": jax.scipy.special.erfc,
    "erfinv": jax.scipy.special.erfinv, "sigmoid": jax.nn.sigmoid, "reciprocal": jnp.reciprocal,
    "lgamma": jax.scipy.special.gammaln,
    # torch: digamma(+0) = -inf, digamma(-0) = +inf (jax gives nan at both)
    "digamma": lambda x: jnp.where(x == 0, jnp.where(jnp.signbit(x), jnp.inf, -jnp.inf).astype(x.dtype),
                                   jax.scipy.special.digamma(x)),
}.items():
    RULES[getattr(aten, _op)] = _unary(_fn)
RULES[aten.neg] = _unary(jnp.negative, _K.DEFAULT)
RULES[aten.abs] = _unary(jnp.abs, _K.COMPLEX_TO_FLOAT)
RULES[aten.sign] = _unary(lambda x: (x > 0).astype(x.dtype) - (x < 0).astype(x.dtype), _K.DEFAULT)  # NaN -> 0
RULES[aten.sgn] = RULES[aten.sign]
RULES[aten.square] = _unary(jnp.square, _K.BOOL_TO_LONG)
RULES[aten.floor] = _ew_unary_int_identity(jnp.floor)
RULES[aten.ceil] = _ew_unary_int_identity(jnp.ceil)
RULES[aten.trunc] = _ew_unary_int_identity(jnp.trunc)
RULES[aten.frac] = _unary(lambda x: x - jnp.trunc(x), _K.DEFAULT)
RULES[aten.isnan] = lambda x, **_: jnp.isnan(x) if _floating(x.dtype) else jnp.zeros(x.shape, jnp.bool_)
RULES[aten.isinf] = lambda x, **_: jnp.isinf(x) if _floating(x.dtype) else jnp.zeros(x.shape, jnp.bool_)
RULES[aten.isfinite] = lambda x, **_: jnp.isfinite(x) if _floating(x.dtype) else jnp.ones(x.shape, jnp.bool_)


@rule(aten.round.default)
def _round(x, **_):   # round half to even, like torch (nearbyint)
    return x if _integral(x.dtype) else jnp.round(x)


@rule(aten.round.decimals)
def _round_decimals(x, decimals=0, **_):
    if _integral(x.dtype):
        return x
    scale = _as(10.0 ** decimals, x.dtype)
    return jnp.round(x * scale) / scale


@rule(aten.nan_to_num)
def _nan_to_num(x, nan=None, posinf=None, neginf=None, **_):
    if not _floating(x.dtype):
        return x
    return jnp.nan_to_num(x, nan=0.0 if nan is None else nan, posinf=posinf, neginf=neginf)


# activations
@rule(aten.relu)
def _relu(x, **_):
    return jnp.maximum(x, _as(0, x.dtype))


@rule(aten.gelu)
def _gelu(x, approximate="none", **_):   # none: x * Phi(x) via erf; tanh: the tanh approximation
    return jax.nn.gelu(x, approximate=approximate == "tanh")


RULES[aten.silu] = _unary(jax.nn.silu, _K.DEFAULT)                      # x * sigmoid(x)
RULES[aten.mish] = _unary(lambda x: x * jnp.tanh(jax.nn.softplus(x)), _K.DEFAULT)
RULES[aten.hardswish] = _unary(lambda x: x * jnp.clip(x + 3, 0, 6) / 6, _K.DEFAULT)
RULES[aten.hardsigmoid] = _unary(lambda x: jnp.clip(x + 3, 0, 6) / 6, _K.DEFAULT)


@rule(aten.leaky_relu)
def _leaky_relu(x, negative_slope=0.01, **_):
    return jnp.where(x > 0, x, x * _as(negative_slope, x.dtype))


@rule(aten.elu)
def _elu(x, alpha=1.0, scale=1.0, input_scale=1.0, **_):   # scale * (x if x > 0 else alpha*(exp(x*is)-1))
    neg = _as(alpha, x.dtype) * jnp.expm1(x * _as(input_scale, x.dtype))
    return _as(scale, x.dtype) * jnp.where(x > 0, x, neg)


@rule(aten.hardtanh)
def _hardtanh(x, min_val=-1.0, max_val=1.0, **_):
    return jnp.clip(x, _as(min_val, x.dtype), _as(max_val, x.dtype))


@rule(aten.softplus)
def _softplus(x, beta=1.0, threshold=20.0, **_):   # linear above threshold, like torch
    bx = x * _as(beta, x.dtype)
    return jnp.where(bx > threshold, x, jnp.log1p(jnp.exp(bx)) / _as(beta, x.dtype))


# clamp
@rule(aten.clamp)
def _clamp(x, min=None, max=None, **_):   # min(max(x, lo), hi): hi wins when lo > hi, NaN propagates
    compute, result = promote(_K.DEFAULT, x, min, max)
    out = _as(x, compute)
    if min is not None:
        out = jnp.maximum(out, _as(min, compute))
    if max is not None:
        out = jnp.minimum(out, _as(max, compute))
    return _as(out, result)


@rule(aten.clamp_min)
def _clamp_min(x, min, **_):
    return _clamp(x, min=min)


@rule(aten.clamp_max)
def _clamp_max(x, max, **_):
    return _clamp(x, max=max)


# comparisons and logic
for _op, _fn in {"eq": jnp.equal, "ne": jnp.not_equal, "lt": jnp.less, "le": jnp.less_equal,
                 "gt": jnp.greater, "ge": jnp.greater_equal}.items():
    RULES[getattr(aten, _op)] = _ew(_fn, _K.ALWAYS_BOOL)


def _logical(fn):
    def r(a, b, **_):
        return fn(_as(a, jnp.bool_) if _is_arr(a) else bool(a), _as(b, jnp.bool_) if _is_arr(b) else bool(b))
    return r


RULES[aten.logical_and] = _logical(jnp.logical_and)
RULES[aten.logical_or] = _logical(jnp.logical_or)
RULES[aten.logical_xor] = _logical(jnp.logical_xor)
RULES[aten.logical_not] = lambda x, **_: jnp.logical_not(x)
RULES[aten.bitwise_and] = _ew(jnp.bitwise_and)   # logical on bool
RULES[aten.bitwise_or] = _ew(jnp.bitwise_or)
RULES[aten.bitwise_xor] = _ew(jnp.bitwise_xor)
RULES[aten.bitwise_not] = lambda x, **_: jnp.invert(x)
RULES[aten.bitwise_left_shift] = _ew(jnp.left_shift)
RULES[aten.bitwise_right_shift] = _ew(jnp.right_shift)


@rule(aten.where.self, aten.where.ScalarSelf, aten.where.ScalarOther, aten.where.Scalar)
def _where(cond, a, b, **_):
    compute, result = promote(_K.DEFAULT, a, b)
    return jnp.where(_as(cond, jnp.bool_), _as(a, result), _as(b, result))


@rule(aten.masked_fill)
def _masked_fill(x, mask, value, **_):   # keeps x's dtype
    return jnp.where(mask, _as(value, x.dtype), x)


@rule(aten.lerp)
def _lerp(a, b, w, **_):
    compute, result = promote(_K.DEFAULT, a, b, w)
    a, b, w = _as(a, compute), _as(b, compute), _as(w, compute)
    return _as(a + w * (b - a), result)


# ============================================================================================ matmuls
def _forced():
    """The lax precision :data:`MATMUL_PRECISION` forces, or ``...`` when it is None (follow PyTorch)."""
    if MATMUL_PRECISION is None:
        return ...
    return lax.Precision.HIGHEST if MATMUL_PRECISION == "highest" else None


def matmul_precision():
    """The lax precision of float32 matmuls: PyTorch's ``torch.get_float32_matmul_precision()`` ("highest",
    its default: ``HIGHEST``, full float32; "high": ``HIGH``, TF32; "medium": ``DEFAULT``, bf16), unless
    :data:`MATMUL_PRECISION` is set. XLA:CPU computes float32 either way; GPUs and TPUs take the cheaper
    passes when allowed."""
    forced = _forced()
    if forced is not ...:
        return forced
    return {"highest": lax.Precision.HIGHEST, "high": lax.Precision.HIGH}.get(
        torch.get_float32_matmul_precision(), lax.Precision.DEFAULT)


def conv_precision():
    """The lax precision of float32 convolutions: ``HIGH`` (JAX's "tensorfloat32": TF32 on GPUs, three bf16
    passes on TPUs) when PyTorch lets cuDNN use TF32 (``torch.backends.cudnn.allow_tf32``, True by default,
    so eager CUDA convolutions are TF32), else full float32; :data:`MATMUL_PRECISION` overrides."""
    forced = _forced()
    if forced is not ...:
        return forced
    return lax.Precision.HIGH if torch.backends.cudnn.allow_tf32 else lax.Precision.HIGHEST



def _matmul(a, b):
    compute, result = promote(_K.DEFAULT, a, b)
    return _as(jnp.matmul(_as(a, compute), _as(b, compute), precision=matmul_precision()), result)


RULES[aten.mm] = lambda a, b, **_: _matmul(a, b)
RULES[aten.bmm] = lambda a, b, **_: _matmul(a, b)
RULES[aten.matmul] = lambda a, b, **_: _matmul(a, b)
RULES[aten.mv] = lambda a, b, **_: _matmul(a, b)
RULES[aten.dot] = lambda a, b, **_: _matmul(a, b)


def _addmm_like(inp, a, b, beta=1, alpha=1):   # beta * inp + alpha * (a @ b); beta == 0 ignores inp (NaN too)
    prod = _matmul(a, b)
    if alpha != 1:
        prod = prod * _as(alpha, prod.dtype)
    if beta == 0:
        return jnp.broadcast_to(prod, jnp.broadcast_shapes(prod.shape, inp.shape))
    scaled = inp if beta == 1 else inp * _as(beta, inp.dtype)
    return _as(scaled, prod.dtype) + prod


@rule(aten.addmm, aten.baddbmm, aten.addmv)
def _addmm(inp, a, b, beta=1, alpha=1, **_):
    return _addmm_like(inp, a, b, beta, alpha)


@rule(aten.linear)
def _linear(x, w, b=None, **_):   # x @ w.T + b
    out = _matmul(x, jnp.swapaxes(w, -1, -2) if w.ndim == 2 else w)
    return out if b is None else out + _as(b, out.dtype)


_CONV_DIMS = {1: ("NCH", "OIH", "NCH"), 2: ("NCHW", "OIHW", "NCHW"), 3: ("NCDHW", "OIDHW", "NCDHW")}


def _per_dim(v, n):
    v = list(v) if isinstance(v, (list, tuple)) else [v]
    return v * n if len(v) == 1 else v


@rule(aten.convolution)
def _convolution(x, w, bias, stride, padding, dilation, transposed, output_padding, groups, **_):
    nsp = w.ndim - 2
    if nsp not in _CONV_DIMS:
        raise Unlowerable(f"{nsp}-d convolution")
    compute, result = promote(_K.DEFAULT, x, w)
    x, w = _as(x, compute), _as(w, compute)
    stride, padding = _per_dim(stride, nsp), _per_dim(padding, nsp)
    dilation, output_padding = _per_dim(dilation, nsp), _per_dim(output_padding, nsp)
    unbatched = x.ndim == nsp + 1
    if unbatched:
        x = x[None]
    if not transposed:
        out = lax.conv_general_dilated(
            x, w, window_strides=stride, padding=[(p, p) for p in padding], rhs_dilation=dilation,
            dimension_numbers=_CONV_DIMS[nsp], feature_group_count=groups, precision=conv_precision())
    else:
        # transposed conv = conv of the stride-dilated input with the flipped kernel, weights regrouped from
        # (Cin, Cout/g, k...) to (Cout, Cin/g, k...), padding d*(k-1)-p (+ output_padding on the high side)
        cin, cout_g, ks = w.shape[0], w.shape[1], w.shape[2:]
        wg = w.reshape((groups, cin // groups, cout_g) + ks)
        wg = jnp.swapaxes(wg, 1, 2).reshape((groups * cout_g, cin // groups) + ks)
        wg = jnp.flip(wg, axis=tuple(range(2, 2 + nsp)))
        pads = [(d * (k - 1) - p, d * (k - 1) - p + op)
                for k, p, d, op in zip(ks, padding, dilation, output_padding)]
        out = lax.conv_general_dilated(
            x, wg, window_strides=[1] * nsp, padding=pads, lhs_dilation=stride, rhs_dilation=dilation,
            dimension_numbers=_CONV_DIMS[nsp], feature_group_count=groups, precision=conv_precision())
    if bias is not None:
        out = out + _as(bias, compute).reshape((1, -1) + (1,) * nsp)
    if unbatched:
        out = out[0]
    return _as(out, result)


def _tile_rows(n: int, groups: int) -> int:
    """Rows per tile of the tiled grouped matmul: about a quarter of the mean group size, a power of two in
    [8, 32]. Measured on XLA:CPU (one [N, 64] x [E, 64, 128] grouped matmul): the fastest of 8/16/32/64
    within ~1.5x at E 8-32, N 128-2048."""
    mean = max(1, n // max(1, 4 * groups))
    return max(8, min(32, 1 << (mean.bit_length() - 1)))


def _tiled_grouped_mm(rows, weights, ends):
    # Each group padded to whole tiles of T rows, so every tile belongs to one group: one batched matmul of
    # [K, T, in] tiles by their groups' [K, in, out] matrices (K = ceil(N / T) + E bounds the tiles, the
    # shapes are static), then each row read back from its padded position. Rows past ends[-1] get zeros,
    # as in ragged_dot. ~1.1-1.5x the useful FLOPs.
    n, groups = rows.shape[0], weights.shape[0]
    t = _tile_rows(n, groups)
    k = -(-n // t) + groups
    starts = jnp.concatenate([jnp.zeros((1,), jnp.int32), ends[:-1]])
    sizes = jnp.maximum(ends - starts, 0)
    padded_end = jnp.cumsum((sizes + t - 1) // t) * t
    padded_start = padded_end - (sizes + t - 1) // t * t
    slot = jnp.arange(k * t, dtype=jnp.int32)
    slot_group = jnp.minimum(jnp.sum(slot[:, None] >= padded_end[None, :], axis=1), groups - 1)
    offset = slot - padded_start[slot_group]
    source = jnp.where(offset < sizes[slot_group], starts[slot_group] + offset, n)   # n: the zero row
    tiles = jnp.concatenate([rows, jnp.zeros((1, rows.shape[1]), rows.dtype)])[source].reshape(k, t, -1)
    tile_weights = weights[slot_group.reshape(k, t)[:, 0]]
    out = jnp.einsum("kti,kio->kto", tiles, tile_weights, precision=matmul_precision()).reshape(k * t, -1)
    row = jnp.arange(n, dtype=jnp.int32)
    row_group = jnp.minimum(jnp.sum(row[:, None] >= ends[None, :], axis=1), groups - 1)
    picked = out[padded_start[row_group] + row - starts[row_group]]
    return jnp.where((row < ends[-1])[:, None], picked, jnp.zeros((), picked.dtype))


def _ragged_grouped_mm(rows, weights, ends):
    sizes = jnp.diff(ends, prepend=jnp.zeros((1,), jnp.int32))
    return lax.ragged_dot(rows, weights, sizes, precision=matmul_precision())


@rule(torch.ops.fxopt.grouped_mm.default)
def _grouped_mm(rows, weights, ends, **_):
    # fxopt::grouped_mm (rows sorted by group, group e owns rows ends[e-1]:ends[e]). On GPU/TPU this is
    # lax.ragged_dot, XLA's grouped GEMM. XLA:CPU computes ragged_dot about as densely as every group on
    # every row (measured 2-10x slower than the tiled form at E 8-32, N 128-2048), so CPU gets the tiles.
    compute, result = promote(_K.DEFAULT, rows, weights)
    rows, weights, ends = _as(rows, compute), _as(weights, compute), ends.astype(jnp.int32)
    if rows.shape[0] == 0 or weights.shape[0] == 0:
        return _as(_ragged_grouped_mm(rows, weights, ends), result)
    out = lax.platform_dependent(rows, weights, ends, cpu=_tiled_grouped_mm, default=_ragged_grouped_mm)
    return _as(out, result)


# ============================================================================================ normalisation
def _opmath(x):
    """Compute half/bfloat16 in float32, as torch's CPU kernels do."""
    return x.astype(jnp.float32) if x.dtype in (jnp.float16, jnp.bfloat16) else x


@rule(aten._native_batch_norm_legit_no_training.default)
def _bn_no_training(x, weight, bias, running_mean, running_var, momentum, eps, **_):
    return _batch_norm_eval(x, weight, bias, running_mean, running_var, eps)


def _batch_norm_eval(x, weight, bias, mean, var, eps):
    shape = (1, -1) + (1,) * (x.ndim - 2)
    xf = _opmath(x)
    invstd = lax.rsqrt(_as(var, xf.dtype) + _as(eps, xf.dtype))
    out = (xf - _as(mean, xf.dtype).reshape(shape)) * invstd.reshape(shape)
    if weight is not None:
        out = out * _as(weight, xf.dtype).reshape(shape)
    if bias is not None:
        out = out + _as(bias, xf.dtype).reshape(shape)
    empty = jnp.zeros((0,), x.dtype)
    return out.astype(x.dtype), empty, empty


@rule(aten.native_batch_norm.default)
def _native_batch_norm(x, weight, bias, running_mean, running_var, training, momentum, eps, **_):
    if training:
        raise Unlowerable("batch norm in training mode (the XLA lowering is for inference)")
    return _batch_norm_eval(x, weight, bias, running_mean, running_var, eps)


@rule(aten.native_layer_norm.default)
def _layer_norm(x, normalized_shape, weight, bias, eps, **_):   # -> (out, mean, rstd)
    axes = tuple(range(x.ndim - len(normalized_shape), x.ndim))
    xf = _opmath(x)
    mean = jnp.mean(xf, axis=axes, keepdims=True)
    var = jnp.mean(jnp.square(xf - mean), axis=axes, keepdims=True)
    rstd = lax.rsqrt(var + _as(eps, xf.dtype))
    out = (xf - mean) * rstd
    if weight is not None:
        out = out * _as(weight, xf.dtype)
    if bias is not None:
        out = out + _as(bias, xf.dtype)
    return out.astype(x.dtype), mean.astype(x.dtype), rstd.astype(x.dtype)


@rule(aten.native_group_norm.default)
def _group_norm(x, weight, bias, n, c, hxw, group, eps, **_):   # -> (out, mean [N,G], rstd [N,G])
    xf = _opmath(x)
    g = xf.reshape((n, group, -1))
    mean = jnp.mean(g, axis=-1, keepdims=True)
    rstd = lax.rsqrt(jnp.mean(jnp.square(g - mean), axis=-1, keepdims=True) + _as(eps, xf.dtype))
    out = ((g - mean) * rstd).reshape(x.shape)
    shape = (1, c) + (1,) * (x.ndim - 2)
    if weight is not None:
        out = out * _as(weight, xf.dtype).reshape(shape)
    if bias is not None:
        out = out + _as(bias, xf.dtype).reshape(shape)
    return out.astype(x.dtype), mean[..., 0].astype(x.dtype), rstd[..., 0].astype(x.dtype)


def _softmax_like(fn):
    def r(x, dim, half_to_float=False, **_):
        out_dtype = jnp.float32 if half_to_float else x.dtype
        if x.ndim == 0:
            return fn(x[None], axis=0)[0].astype(out_dtype)
        return fn(_opmath(x), axis=_dim(dim, x.ndim)).astype(out_dtype)
    return r


RULES[aten._softmax.default] = _softmax_like(jax.nn.softmax)
RULES[aten._log_softmax.default] = _softmax_like(jax.nn.log_softmax)


# ============================================================================================ reductions
def _reduce_input(x, dtype, int_to_long: bool):
    if dtype is not None:
        return x.astype(jdtype(dtype))
    if int_to_long and _integral(x.dtype):
        return x.astype(jnp.int64)   # sum/prod/cumsum of integers and bools give int64 in torch
    return x


@rule(aten.sum.default)
def _sum_all(x, dtype=None, **_):
    return jnp.sum(_reduce_input(x, dtype, True))


@rule(aten.sum.dim_IntList)
def _sum(x, dim=None, keepdim=False, dtype=None, **_):   # dim [] or None: all dims
    x = _reduce_input(x, dtype, True)
    return jnp.sum(x, axis=_dims(dim, x.ndim), keepdims=keepdim)


@rule(aten.mean.default)
def _mean_all(x, dtype=None, **_):
    x = _reduce_input(x, dtype, False)
    return jnp.mean(x).astype(x.dtype)


@rule(aten.mean.dim)
def _mean(x, dim=None, keepdim=False, dtype=None, **_):
    x = _reduce_input(x, dtype, False)
    return jnp.mean(x, axis=_dims(dim, x.ndim), keepdims=keepdim).astype(x.dtype)


@rule(aten.prod.default)
def _prod_all(x, dtype=None, **_):
    return jnp.prod(_reduce_input(x, dtype, True))


@rule(aten.prod.dim_int)
def _prod(x, dim, keepdim=False, dtype=None, **_):
    x = _reduce_input(x, dtype, True)
    return jnp.prod(x, axis=_dims(dim, x.ndim), keepdims=keepdim)


@rule(aten.amax)
def _amax(x, dim=(), keepdim=False, **_):
    return jnp.max(x, axis=_dims(dim, x.ndim), keepdims=keepdim)


@rule(aten.amin)
def _amin(x, dim=(), keepdim=False, **_):
    return jnp.min(x, axis=_dims(dim, x.ndim), keepdims=keepdim)


@rule(aten.logsumexp)
def _logsumexp(x, dim=(), keepdim=False, **_):
    xf = x.astype(jnp.float32) if _integral(x.dtype) else x
    return jax.scipy.special.logsumexp(xf, axis=_dims(dim, x.ndim), keepdims=keepdim)


def _arg_reduce(fn, x, dim, keepdim):
    if dim is None:
        out = fn(x.reshape(-1), axis=0).astype(jnp.int64)
        return out.reshape((1,) * x.ndim) if keepdim else out
    if x.ndim == 0:
        return jnp.zeros((), jnp.int64)
    d = _dim(dim, x.ndim)
    out = fn(x, axis=d).astype(jnp.int64)   # first occurrence; NaN counts as the extreme, as in torch
    return jnp.expand_dims(out, d) if keepdim else out


@rule(aten.argmax)
def _argmax(x, dim=None, keepdim=False, **_):
    return _arg_reduce(jnp.argmax, x, dim, keepdim)


@rule(aten.argmin)
def _argmin(x, dim=None, keepdim=False, **_):
    return _arg_reduce(jnp.argmin, x, dim, keepdim)


def _minmax_dim(red, arg):
    def r(x, dim, keepdim=False, **_):   # -> (values, int64 indices)
        if x.ndim == 0:
            return x, jnp.zeros((), jnp.int64)
        d = _dim(dim, x.ndim)
        return red(x, axis=d, keepdims=keepdim), _arg_reduce(arg, x, d, keepdim)
    return r


RULES[aten.max.dim] = _minmax_dim(jnp.max, jnp.argmax)
RULES[aten.min.dim] = _minmax_dim(jnp.min, jnp.argmin)
RULES[aten.max.default] = lambda x, **_: jnp.max(x)
RULES[aten.min.default] = lambda x, **_: jnp.min(x)
RULES[aten.max.other] = _ew(jnp.maximum)
RULES[aten.min.other] = _ew(jnp.minimum)


def _var_impl(x, dim, correction, keepdim):
    axes = _dims(dim, x.ndim)
    xf = x.astype(jnp.float32) if _integral(x.dtype) else x
    n = int(np.prod([x.shape[a] for a in axes], dtype=np.int64))
    c = 1 if correction is None else correction
    mean = jnp.mean(xf, axis=axes, keepdims=True)
    ss = jnp.sum(jnp.square(jnp.abs(xf - mean)), axis=axes, keepdims=keepdim)
    return ss / _as(max(n - c, 0), ss.dtype)   # torch divides by max(N - correction, 0): 0/0 -> nan


@rule(aten.var.correction)
def _var(x, dim=None, correction=None, keepdim=False, **_):
    return _var_impl(x, dim, correction, keepdim)


@rule(aten.var.dim)
def _var_dim(x, dim=None, unbiased=True, keepdim=False, **_):
    return _var_impl(x, dim, 1 if unbiased else 0, keepdim)


@rule(aten.std.correction)
def _std(x, dim=None, correction=None, keepdim=False, **_):
    return jnp.sqrt(_var_impl(x, dim, correction, keepdim))


@rule(aten.var_mean.correction)
def _var_mean(x, dim=None, correction=None, keepdim=False, **_):
    return _var_impl(x, dim, correction, keepdim), jnp.mean(x, axis=_dims(dim, x.ndim), keepdims=keepdim)


def _any_all(fn):
    def r(x, dim=None, keepdim=False, **_):
        return fn(_as(x, jnp.bool_), axis=_dims(dim, x.ndim), keepdims=keepdim)
    return r


RULES[aten.any] = _any_all(jnp.any)
RULES[aten.all] = _any_all(jnp.all)


@rule(aten.cumsum)
def _cumsum(x, dim, dtype=None, **_):
    x = _reduce_input(x, dtype, True)
    return x if x.ndim == 0 else jnp.cumsum(x, axis=_dim(dim, x.ndim))


@rule(aten.cumprod)
def _cumprod(x, dim, dtype=None, **_):
    x = _reduce_input(x, dtype, True)
    return x if x.ndim == 0 else jnp.cumprod(x, axis=_dim(dim, x.ndim))


def _order_key(x, largest: bool):
    """A key whose ascending order is x's order (largest=False) or its reverse (largest=True)."""
    if x.dtype == jnp.bool_:
        x = x.astype(jnp.int8)
    if not largest:
        return x
    return jnp.invert(x) if jnp.issubdtype(x.dtype, jnp.integer) else -x   # ~x reverses ints without overflow


@rule(aten.topk.default)
def _topk(x, k, dim=-1, largest=True, sorted=True, **_):   # -> (values, int64 indices)
    if x.ndim == 0:
        return x, jnp.zeros((), jnp.int64)
    d = _dim(dim, x.ndim)
    xm = jnp.moveaxis(x, d, -1)
    key = _order_key(xm, largest=not largest)   # lax.top_k picks the largest keys
    if _floating(key.dtype):
        key = jnp.where(jnp.isnan(key), jnp.inf if largest else -jnp.inf, key)   # NaN ranks largest in torch
    _, idx = lax.top_k(key, k)
    vals = jnp.take_along_axis(xm, idx, axis=-1)
    return jnp.moveaxis(vals, -1, d), jnp.moveaxis(idx.astype(jnp.int64), -1, d)


def _sort_impl(x, dim, descending):
    if x.ndim == 0:
        return x, jnp.zeros((), jnp.int64)
    d = _dim(dim, x.ndim)
    idx = jnp.argsort(x, axis=d, stable=True, descending=descending)
    return jnp.take_along_axis(x, idx, axis=d), idx.astype(jnp.int64)


@rule(aten.sort.default)
def _sort(x, dim=-1, descending=False, **_):
    return _sort_impl(x, dim, descending)


@rule(aten.sort.stable)
def _sort_stable(x, stable=None, dim=-1, descending=False, **_):
    return _sort_impl(x, dim, descending)


# ============================================================================================ layout
def _reshape(x, shape, **_):
    return jnp.reshape(x, tuple(int(s) for s in shape))


for _op in ("view", "_unsafe_view", "reshape", "view_copy", "_reshape_alias"):
    if hasattr(aten, _op):
        RULES[getattr(aten, _op)] = _reshape


@rule(aten.expand, aten.expand_copy)
def _expand(x, size, implicit=False, **_):   # -1 keeps the dim; extra leading dims are new
    lead = len(size) - x.ndim
    shape = tuple(x.shape[i - lead] if s == -1 else int(s) for i, s in enumerate(size))
    return jnp.broadcast_to(x, shape)


RULES[aten.permute] = lambda x, dims, **_: jnp.transpose(x, [_dim(d, x.ndim) for d in dims])
RULES[aten.t] = lambda x, **_: x if x.ndim < 2 else x.T
RULES[aten.numpy_T] = lambda x, **_: x.T


@rule(aten.transpose.int)
def _transpose(x, dim0, dim1, **_):
    return x if x.ndim == 0 else jnp.swapaxes(x, _dim(dim0, x.ndim), _dim(dim1, x.ndim))


@rule(aten.slice.Tensor, aten.slice_copy.Tensor)
def _slice(x, dim=0, start=None, end=None, step=1, **_):   # Python slice semantics (clamped) = torch's
    d = _dim(dim, x.ndim)
    return x[(slice(None),) * d + (slice(start, end, step),)]


@rule(aten.narrow)
def _narrow(x, dim, start, length, **_):
    d = _dim(dim, x.ndim)
    start = start % x.shape[d] if start < 0 else start
    return x[(slice(None),) * d + (slice(start, start + length),)]


@rule(aten.select.int, aten.select_copy.int)
def _select(x, dim, index, **_):
    d = _dim(dim, x.ndim)
    return x[(slice(None),) * d + (index,)]


@rule(aten.squeeze)
def _squeeze(x, dim=None, **_):   # only size-1 dims are removed; others are silently kept, as in torch
    dims = range(x.ndim) if dim is None else ([dim] if isinstance(dim, int) else dim)
    axes = tuple(a for a in {_dim(d, x.ndim) for d in dims} if x.ndim and x.shape[a] == 1)
    return jnp.squeeze(x, axis=axes) if axes else x


@rule(aten.unsqueeze, aten.unsqueeze_copy)
def _unsqueeze(x, dim, **_):
    return jnp.expand_dims(x, dim % (x.ndim + 1) if dim < 0 else dim)


def _as_strided_reason(size, stride, offset) -> str | None:
    size, stride = list(size), list(stride)
    want = _contiguous_strides(size)
    if any(st != w for sz, st, w in zip(size, stride, want) if sz != 1):
        return f"as_strided with strides {stride} for size {size} is not contiguous (only contiguous layouts lower)"
    return None


@rule(aten.as_strided, aten.as_strided_copy)
def _as_strided(x, size, stride, storage_offset=None, **_):   # contiguous layouts only: a flat window
    reason = _as_strided_reason(size, stride, storage_offset)
    if reason:
        raise Unlowerable(reason)
    off = storage_offset or 0
    n = int(np.prod(size, dtype=np.int64))
    if off + n > x.size:
        raise Unlowerable(f"as_strided reads past the input ({off}+{n} > {x.size})")
    return x.reshape(-1)[off:off + n].reshape(tuple(size))


def _check_as_strided(node) -> str | None:
    args = list(node.args) + [None] * 4
    size = node.kwargs.get("size", args[1])
    stride = node.kwargs.get("stride", args[2])
    if not all(isinstance(v, int) for v in list(size) + list(stride)):
        return None   # symbolic: decided at trace time
    return _as_strided_reason(size, stride, None)


CHECKS[aten.as_strided] = CHECKS[aten.as_strided_copy] = _check_as_strided


def _cat_promote(tensors):
    _, result = promote(_K.NO_OPMATH, *tensors)
    return [_as(t, result) for t in tensors]


@rule(aten.cat)
def _cat(tensors, dim=0, **_):
    # torch skips legacy empty 1-d tensors ([0]) next to tensors of other ranks
    tensors = _cat_promote(list(tensors))
    kept = [t for t in tensors if not (t.ndim == 1 and t.shape[0] == 0)] or tensors[:1]
    return jnp.concatenate(kept, axis=_dim(dim, kept[0].ndim))


@rule(aten.stack)
def _stack(tensors, dim=0, **_):
    tensors = _cat_promote(list(tensors))
    return jnp.stack(tensors, axis=dim % (tensors[0].ndim + 1) if dim < 0 else dim)


def _split_sizes(x, sizes, dim):
    d = _dim(dim, x.ndim)
    out, start = [], 0
    for s in sizes:
        out.append(x[(slice(None),) * d + (slice(start, start + s),)])
        start += s
    return out


@rule(aten.split.Tensor, aten.split_copy.Tensor)
def _split(x, split_size, dim=0, **_):   # chunks of split_size, the last one smaller
    n = x.shape[_dim(dim, x.ndim)]
    if split_size == 0:
        return [x]
    sizes = [min(split_size, n - i) for i in range(0, n, split_size)] or [0]
    return _split_sizes(x, sizes, dim)


@rule(aten.split_with_sizes, aten.split_with_sizes_copy)
def _split_with_sizes(x, split_sizes, dim=0, **_):
    return _split_sizes(x, split_sizes, dim)


@rule(aten.unbind.int)
def _unbind(x, dim=0, **_):
    d = _dim(dim, x.ndim)
    return [x[(slice(None),) * d + (i,)] for i in range(x.shape[d])]


def _identity(x, *_, **__):
    return x


for _op in ("clone", "alias", "detach", "lift_fresh_copy", "lift_fresh", "contiguous", "alias_copy",
            "detach_copy", "_conj", "resolve_conj", "resolve_neg"):
    if hasattr(aten, _op):
        RULES[getattr(aten, _op)] = _identity


@rule(aten.copy.default)
def _copy(dst, src, non_blocking=False, **_):   # src broadcast to dst's shape, cast to dst's dtype
    return jnp.broadcast_to(_as(src, dst.dtype), dst.shape)


@rule(aten._to_copy.default)
def _to_copy(x, dtype=None, **_):   # float -> int truncates toward zero, like torch
    return x if dtype is None else _as(x, jdtype(dtype))


@rule(aten.constant_pad_nd)
def _constant_pad_nd(x, pad, value=0, **_):   # pad pairs from the last dim backwards; negative pads crop
    cfg = [(0, 0, 0)] * x.ndim
    for i in range(len(pad) // 2):
        cfg[x.ndim - 1 - i] = (int(pad[2 * i]), int(pad[2 * i + 1]), 0)
    return lax.pad(x, _as(value, x.dtype), cfg)


RULES[aten.repeat] = lambda x, repeats, **_: jnp.tile(x, tuple(repeats))   # tile prepends dims like repeat


@rule(aten.flip)
def _flip(x, dims, **_):
    return jnp.flip(x, axis=_dims(dims, x.ndim)) if dims else x


@rule(aten.roll)
def _roll(x, shifts, dims=(), **_):
    if not dims:   # no dims: roll the flattened tensor
        return jnp.roll(x.reshape(-1), shifts[0]).reshape(x.shape)
    return jnp.roll(x, tuple(shifts), axis=tuple(_dim(d, x.ndim) for d in dims))


RULES[aten.tril] = lambda x, diagonal=0, **_: jnp.tril(x, diagonal)
RULES[aten.triu] = lambda x, diagonal=0, **_: jnp.triu(x, diagonal)


@rule(aten.slice_scatter)
def _slice_scatter(x, src, dim=0, start=None, end=None, step=1, **_):
    d = _dim(dim, x.ndim)
    return x.at[(slice(None),) * d + (slice(start, end, step),)].set(_as(src, x.dtype))


@rule(aten.select_scatter)
def _select_scatter(x, src, dim, index, **_):
    d = _dim(dim, x.ndim)
    return x.at[(slice(None),) * d + (index,)].set(_as(src, x.dtype))


# ============================================================================================ gathers / scatters
@rule(aten.embedding)
def _embedding(weight, indices, padding_idx=-1, scale_grad_by_freq=False, sparse=False, **_):
    return jnp.take(weight, indices, axis=0)   # padding_idx only matters for gradients


@rule(aten.index_select)
def _index_select(x, dim, index, **_):
    if x.ndim == 0:
        return x.reshape(index.shape)
    return jnp.take(x, index, axis=_dim(dim, x.ndim))


def _index_tuple(indices):
    """torch's index list (None = whole dim) as a NumPy-style index: same advanced-indexing placement rules."""
    return tuple(slice(None) if i is None else i for i in indices)


@rule(aten.index.Tensor, aten._unsafe_index.Tensor)
def _index(x, indices, **_):
    if any(i is not None and i.dtype == jnp.bool_ for i in indices):
        raise Unlowerable("boolean-mask indexing has a data-dependent output shape")
    return x[_index_tuple(indices)]


def _check_index(node) -> str | None:
    indices = node.args[1] if len(node.args) > 1 else node.kwargs.get("indices", ())
    for i in indices or ():
        val = getattr(i, "meta", {}).get("val") if i is not None else None
        if val is not None and getattr(val, "dtype", None) in (torch.bool, torch.uint8):
            return "boolean-mask indexing has a data-dependent output shape"
    return None


CHECKS[aten.index.Tensor] = CHECKS[aten._unsafe_index.Tensor] = _check_index


@rule(aten.index_put, aten._unsafe_index_put)
def _index_put(x, indices, values, accumulate=False, **_):
    if any(i is not None and i.dtype == jnp.bool_ for i in indices):
        raise Unlowerable("index_put with a boolean mask")
    ref = x.at[_index_tuple(indices)]
    values = _as(values, x.dtype)
    return ref.add(values) if accumulate else ref.set(values)


RULES[aten.index_put.default] = _index_put
CHECKS[aten.index_put.default] = CHECKS[aten._unsafe_index_put.default] = _check_index


@rule(aten.index_add)
def _index_add(x, dim, index, source, alpha=1, **_):   # x[..., index[i], ...] += alpha * source[..., i, ...]
    d = _dim(dim, x.ndim)
    src = _as(source, x.dtype)
    if alpha != 1:
        src = src * _as(alpha, x.dtype)
    if x.ndim == 0:
        return x + jnp.sum(src)
    return x.at[(slice(None),) * d + (index,)].add(src)


@rule(aten.index_fill)
def _index_fill(x, dim, index, value, **_):
    d = _dim(dim, x.ndim)
    return x.at[(slice(None),) * d + (index,)].set(_as(value, x.dtype))


@rule(aten.index_copy)
def _index_copy(x, dim, index, source, **_):
    d = _dim(dim, x.ndim)
    return x.at[(slice(None),) * d + (index,)].set(_as(source, x.dtype))


def _scatter_index(x, dim, index):
    """Full coordinate arrays for element-wise scatter/gather along dim: index's own coordinates elsewhere."""
    d = _dim(dim, x.ndim)
    coords = list(jnp.indices(index.shape, sparse=True))
    coords[d] = index
    return tuple(coords)


def _fit(src, shape):
    """src cut to index's shape (torch reads only that corner of src)."""
    return src[tuple(slice(0, s) for s in shape)]


@rule(aten.gather)
def _gather(x, dim, index, sparse_grad=False, **_):   # out[i][j] = x[index[i][j]][j] (dim 0)
    if x.ndim == 0:
        return x.reshape(index.shape)
    return x[_scatter_index(x, dim, index)]


def _scatter_src(x, index, src):
    return jnp.broadcast_to(_as(src, x.dtype), index.shape) if not _is_arr(src) or src.ndim == 0 \
        else _as(_fit(src, index.shape), x.dtype)


@rule(aten.scatter.src, aten.scatter.value)
def _scatter(x, dim, index, src=None, value=None, **_):   # duplicates: one of them wins (as in torch)
    src = value if src is None else src
    return x.at[_scatter_index(x, dim, index)].set(_scatter_src(x, index, src))


@rule(aten.scatter.reduce, aten.scatter.value_reduce)
def _scatter_reduce_legacy(x, dim, index, src, reduce, **_):   # reduce: "add" | "multiply"
    ref = x.at[_scatter_index(x, dim, index)]
    vals = _scatter_src(x, index, src)
    if reduce == "add":
        return ref.add(vals)
    if reduce == "multiply":
        return ref.multiply(vals)
    raise Unlowerable(f"scatter reduce={reduce!r}")


@rule(aten.scatter_add)
def _scatter_add(x, dim, index, src, **_):
    return x.at[_scatter_index(x, dim, index)].add(_scatter_src(x, index, src))


def _reduce_identity(dtype, reduce):
    if reduce in ("sum", "mean"):
        return 0
    if reduce == "prod":
        return 1
    info = jnp.finfo(dtype) if _floating(dtype) else jnp.iinfo(dtype)
    if reduce == "amax":
        return -jnp.inf if _floating(dtype) else info.min
    return jnp.inf if _floating(dtype) else info.max


@rule(aten.scatter_reduce.two)
def _scatter_reduce(x, dim, index, src, reduce, include_self=True, **_):
    idx = _scatter_index(x, dim, index)
    vals = _scatter_src(x, index, src)
    touched = jnp.zeros(x.shape, jnp.bool_).at[idx].set(True)
    base = x if include_self else jnp.where(touched, _as(_reduce_identity(x.dtype, reduce), x.dtype), x)
    if reduce in ("sum", "mean"):
        out = base.at[idx].add(vals)
        if reduce == "sum":
            return out
        count = jnp.zeros(x.shape, x.dtype).at[idx].add(_as(1, x.dtype)) + _as(int(include_self), x.dtype)
        count = jnp.maximum(count, _as(1, x.dtype))
        return out // count if _integral(x.dtype) else out / count   # torch floors integer means
    if reduce == "prod":
        return base.at[idx].multiply(vals)
    if reduce == "amax":
        return base.at[idx].max(vals)
    if reduce == "amin":
        return base.at[idx].min(vals)
    raise Unlowerable(f"scatter_reduce reduce={reduce!r}")


def _embedding_bag(weight, indices, offsets, scale_grad_by_freq=False, mode=0, sparse=False,
                   per_sample_weights=None, include_last_offset=False, padding_idx=-1, **_):
    """(output, offset2bag, bag_size, max_indices) with segment sums/maxes, no loop over bags. The three
    auxiliary outputs reproduce PyTorch's CPU kernel (sum mode: empty offset2bag on its fast path, zeros)."""
    if indices.ndim != 1:
        raise Unlowerable("_embedding_bag with 2-d indices (torch passes 1-d indices plus offsets)")
    n = indices.shape[0]
    nbags = offsets.shape[0] - 1 if include_last_offset else offsets.shape[0]
    starts = offsets[:nbags]
    itype = indices.dtype
    pos = jnp.arange(n, dtype=starts.dtype)
    seg = (jnp.searchsorted(starts, pos, side="right") - 1).astype(jnp.int64)   # bag of each index
    valid = indices != padding_idx if padding_idx is not None and padding_idx >= 0 else jnp.ones((n,), bool)
    rows = jnp.take(weight, indices, axis=0)
    count = jax.ops.segment_sum(valid.astype(itype), seg, num_segments=nbags, indices_are_sorted=True)
    zeros_b = jnp.zeros((nbags,), itype)
    fast = mode == 0 and weight.dtype in (jnp.float32, jnp.float16, jnp.bfloat16) and not (padding_idx >= 0)
    offset2bag = jnp.zeros((0,), itype) if fast else seg.astype(itype)
    if mode in (0, 1):
        if per_sample_weights is not None:
            rows = rows * _as(per_sample_weights, rows.dtype)[:, None]
        rows = jnp.where(valid[:, None], rows, _as(0, rows.dtype))
        acc = jax.ops.segment_sum(_opmath(rows), seg, num_segments=nbags, indices_are_sorted=True)
        if mode == 0:
            return acc.astype(weight.dtype), offset2bag, zeros_b, zeros_b
        mean = acc / jnp.maximum(count, 1).astype(acc.dtype)[:, None]
        return mean.astype(weight.dtype), offset2bag, count, count
    if mode == 2:
        low = _reduce_identity(weight.dtype, "amax")
        masked = jnp.where(valid[:, None], rows, _as(low, rows.dtype))
        mx = jax.ops.segment_max(masked, seg, num_segments=nbags, indices_are_sorted=True)
        empty = (count == 0)[:, None]
        out = jnp.where(empty, _as(0, weight.dtype), mx)
        hit = (masked == mx[seg]) & valid[:, None]
        first = jax.ops.segment_min(jnp.where(hit, pos[:, None], n), seg, num_segments=nbags,
                                    indices_are_sorted=True)   # first row reaching the max, per column
        arg = jnp.take(indices, jnp.clip(first, 0, max(n - 1, 0)), axis=0) if n else jnp.zeros_like(first)
        max_idx = jnp.where(empty | (first >= n), 0, arg).astype(itype)
        return out, offset2bag, count, max_idx
    raise Unlowerable(f"_embedding_bag mode {mode}")


RULES[aten._embedding_bag.default] = _embedding_bag
RULES[aten._embedding_bag_forward_only.default] = _embedding_bag
RULES[aten.embedding_bag.padding_idx] = _embedding_bag

#: The embedding-bag targets :func:`embedding_bag_uniform` may stand in for (same arguments, same outputs).
EMBEDDING_BAGS = (aten._embedding_bag.default, aten._embedding_bag_forward_only.default,
                  aten.embedding_bag.padding_idx, aten.embedding_bag.default)


def embedding_bag_uniform(weight, indices, offsets, scale_grad_by_freq=False, mode=0, sparse=False,
                          per_sample_weights=None, include_last_offset=False, padding_idx=-1, *, bag_length,
                          **_):
    """``_embedding_bag`` when every bag holds ``bag_length`` indices (the lowering saw constant offsets
    ``0, L, 2L, ...``, what ``nn.EmbeddingBag`` makes of 2-D input): a gather, a reshape to [bags, L, dim]
    and a sum over L — no searchsorted and no scatter-based segment sums, which XLA:CPU runs serially
    (zoo:ranking's 8 bags at batch 256: 3.8 ms in XLA with segment sums against 0.5 ms in PyTorch). Sum and
    mean modes without per-sample weights or padding only; the outputs are :func:`_embedding_bag`'s."""
    n, d = indices.shape[0], weight.shape[1]
    nbags = n // bag_length
    itype = indices.dtype
    rows = jnp.take(weight, indices, axis=0).reshape(nbags, bag_length, d)
    acc = jnp.sum(_opmath(rows), axis=1)
    seg = (jnp.arange(n, dtype=jnp.int64) // bag_length).astype(itype)
    if mode == 0:
        fast = weight.dtype in (jnp.float32, jnp.float16, jnp.bfloat16)
        zeros_b = jnp.zeros((nbags,), itype)
        return acc.astype(weight.dtype), (jnp.zeros((0,), itype) if fast else seg), zeros_b, zeros_b
    count = jnp.full((nbags,), bag_length, itype)
    return (acc / bag_length).astype(weight.dtype), seg, count, count


@rule(aten.embedding_bag.default)
def _embedding_bag_public(weight, indices, offsets, scale_grad_by_freq=False, mode=0, sparse=False,
                          per_sample_weights=None, include_last_offset=False, **_):
    return _embedding_bag(weight, indices, offsets, scale_grad_by_freq, mode, sparse, per_sample_weights,
                          include_last_offset, -1)


@rule(aten.histc.default)
def _histc(x, bins=100, min=0, max=0, **_):
    # torch.histc: bins equal-width bins over [min, max] (the data's range when min == max; widened by 1
    # each side when that range is one value), elements outside ignored, the top edge in the last bin;
    # counted as a one-hot sum (vectorised; XLA:CPU runs scatter-adds serially)
    x = x.reshape(-1)
    xf = _as(x, jnp.float64 if x.dtype == jnp.float64 else jnp.float32)
    lo, hi = float(min), float(max)
    if lo == hi and x.size:
        lo_t, hi_t = jnp.min(xf), jnp.max(xf)
    else:
        lo_t, hi_t = jnp.asarray(lo, xf.dtype), jnp.asarray(hi, xf.dtype)
    same = lo_t == hi_t
    lo_t, hi_t = jnp.where(same, lo_t - 1, lo_t), jnp.where(same, hi_t + 1, hi_t)
    pos = jnp.floor((xf - lo_t) * bins / (hi_t - lo_t)).astype(jnp.int32)
    pos = jnp.where(pos == bins, bins - 1, pos)
    inside = (xf >= lo_t) & (xf <= hi_t)
    onehot = (pos[:, None] == jnp.arange(bins, dtype=jnp.int32)[None, :]) & inside[:, None]
    return jnp.sum(onehot, axis=0).astype(x.dtype)


@rule(aten.searchsorted.Tensor, aten.searchsorted.Scalar)
def _searchsorted(sorted_sequence, values, out_int32=False, right=False, side=None, sorter=None, **_):
    # torch.searchsorted: for each value, the insertion index into the innermost dim of sorted_sequence;
    # side ("left"/"right") overrides right (torch rejects a contradicting pair before export); a 1-D sequence
    # serves values of any shape, an N-D one is searched row by row (leading dims equal to the values'),
    # by jax.vmap over the flattened leading dims; ``sorter`` sorts the sequence first (the indices are into
    # the sorted order, as in torch); both operands promoted to a common dtype, as torch does
    if side is not None:
        if side not in ("left", "right"):
            raise Unlowerable(f"searchsorted: side must be 'left' or 'right', got {side!r}")
        right = side == "right"
    side = "right" if right else "left"
    compute, _ = promote(_K.DEFAULT, sorted_sequence, values)
    seq, vals = _as(sorted_sequence, compute), _as(values, compute)
    if sorter is not None:
        seq = jnp.take_along_axis(seq, sorter.astype(jnp.int64), axis=-1)
    out_dtype = jnp.int32 if out_int32 else jnp.int64
    if seq.ndim <= 1:
        return jnp.searchsorted(seq.reshape(-1), vals, side=side).astype(out_dtype)
    lead = seq.shape[:-1]
    if vals.ndim != seq.ndim or vals.shape[:-1] != lead:
        raise Unlowerable(f"searchsorted: sorted_sequence {tuple(seq.shape)} and values {tuple(vals.shape)} "
                          "need the same leading dims")
    rows = int(np.prod(lead, dtype=np.int64))
    search = jax.vmap(lambda s, v: jnp.searchsorted(s, v, side=side))
    out = search(seq.reshape(rows, seq.shape[-1]), vals.reshape(rows, vals.shape[-1]))
    return out.reshape(vals.shape).astype(out_dtype)


@rule(aten.empty_permuted.default)
def _empty_permuted(size, physical_layout, dtype=None, **_):   # empty -> zeros; the layout is XLA's choice
    return jnp.zeros(_shape(size), jdtype(dtype) if dtype is not None else jnp.float32)


# ============================================================================================ factories
def _infer_dtype(dtype, *values):
    """torch's factory dtype: the given one, else bool/int64/float32 from the Python fill values."""
    if dtype is not None:
        return jdtype(dtype)
    vals = [v for v in values if v is not None]
    if any(_is_arr(v) for v in vals):
        return np.dtype([v for v in vals if _is_arr(v)][0].dtype)
    if vals and all(isinstance(v, bool) for v in vals):
        return np.dtype(jnp.bool_)
    if all(isinstance(v, (bool, int)) for v in vals):
        return np.dtype(jnp.int64)
    if any(isinstance(v, complex) for v in vals):
        return np.dtype(jnp.complex64)
    return np.dtype(jnp.float32)


def _shape(size):
    return tuple(int(s) for s in size)


@rule(aten.full.default)
def _full(size, fill_value, dtype=None, **_):
    return jnp.full(_shape(size), _as(fill_value, _infer_dtype(dtype, fill_value)))


@rule(aten.scalar_tensor.default)
def _scalar_tensor(s, dtype=None, **_):   # default dtype is float32 even for ints
    return _as(s, jdtype(dtype) if dtype is not None else np.dtype(jnp.float32))


@rule(aten.zeros.default, aten.empty.memory_format, aten.new_empty_strided.default)
def _zeros(size, dtype=None, **kw):   # empty -> zeros (deterministic)
    return jnp.zeros(_shape(size), jdtype(dtype) if dtype is not None else jnp.float32)


@rule(aten.empty_strided.default)
def _empty_strided(size, stride, dtype=None, **_):
    return jnp.zeros(_shape(size), jdtype(dtype) if dtype is not None else jnp.float32)


@rule(aten.ones.default)
def _ones(size, dtype=None, **_):
    return jnp.ones(_shape(size), jdtype(dtype) if dtype is not None else jnp.float32)


def _like_dtype(x, dtype):
    return jdtype(dtype) if dtype is not None else x.dtype


RULES[aten.full_like] = lambda x, fill_value, dtype=None, **_: jnp.full(
    x.shape, _as(fill_value, _like_dtype(x, dtype)))
RULES[aten.zeros_like] = lambda x, dtype=None, **_: jnp.zeros(x.shape, _like_dtype(x, dtype))
RULES[aten.empty_like] = lambda x, dtype=None, **_: jnp.zeros(x.shape, _like_dtype(x, dtype))
RULES[aten.ones_like] = lambda x, dtype=None, **_: jnp.ones(x.shape, _like_dtype(x, dtype))
RULES[aten.new_zeros] = lambda x, size, dtype=None, **_: jnp.zeros(_shape(size), _like_dtype(x, dtype))
RULES[aten.new_empty] = lambda x, size, dtype=None, **_: jnp.zeros(_shape(size), _like_dtype(x, dtype))
RULES[aten.new_ones] = lambda x, size, dtype=None, **_: jnp.ones(_shape(size), _like_dtype(x, dtype))
RULES[aten.new_full] = lambda x, size, fill_value, dtype=None, **_: jnp.full(
    _shape(size), _as(fill_value, _like_dtype(x, dtype)))
RULES[aten.fill.Scalar] = lambda x, value, **_: jnp.full(x.shape, _as(value, x.dtype))
RULES[aten.fill.Tensor] = lambda x, value, **_: jnp.broadcast_to(_as(value, x.dtype), x.shape)


def _arange(start, end, step, dtype):
    dt = _infer_dtype(dtype, start, end, step)
    n = max(int(math.ceil((end - start) / step)), 0)   # torch sizes it in double precision
    if _integral(dt) and all(isinstance(v, int) for v in (start, end, step)):
        return (start + jnp.arange(n, dtype=jnp.int64) * step).astype(dt)
    # torch accumulates start + i * step in double on the CPU, then rounds to the dtype
    return (start + jnp.arange(n, dtype=jnp.float64) * step).astype(dt)


RULES[aten.arange.default] = lambda end, dtype=None, **_: _arange(0, end, 1, dtype)
RULES[aten.arange.start] = lambda start, end, dtype=None, **_: _arange(start, end, 1, dtype)
RULES[aten.arange.start_step] = lambda start, end, step=1, dtype=None, **_: _arange(start, end, step, dtype)


# ============================================================================================ pooling / resampling
def _pool_geometry(size, k, s, p, d, ceil_mode):
    """Output length of one pooled dim, as torch computes it (ceil_mode windows must start inside)."""
    span = size + 2 * p - d * (k - 1) - 1
    out = (-(-span // s) if ceil_mode else span // s) + 1
    if ceil_mode and (out - 1) * s >= size + p:
        out -= 1
    return max(out, 0)


def _windows(x, ks, ss, ps, ds, outs, fill):
    """Stack every kernel offset's strided view of x (padded with fill): shape (K, *x.shape[:-n], *outs).
    The loop runs over kernel offsets at trace time (a 3x3 pool is 9 strided slices), not over data."""
    n = len(ks)
    lead = x.ndim - n
    pads = [(0, 0)] * lead
    for size, k, s, p, d, o in zip(x.shape[lead:], ks, ss, ps, ds, outs):
        hi = max((o - 1) * s + d * (k - 1) + 1 - size - p, 0)
        pads.append((p, hi))
    xp = jnp.pad(x, pads, constant_values=fill)
    views = []
    for offs in np.ndindex(*ks):
        sl = [slice(None)] * lead
        for o_i, (off, s, d, o) in enumerate(zip(offs, ss, ds, outs)):
            start = off * d
            sl.append(slice(start, start + (o - 1) * s + 1, s))
        views.append(xp[tuple(sl)])
    return jnp.stack(views, axis=0)


def _pool_args(x, kernel_size, stride, padding, dilation, n):
    ks = _per_dim(kernel_size, n)
    ss = _per_dim(stride, n) if stride else ks
    return ks, ss, _per_dim(padding, n), _per_dim(dilation, n)


def _max_pool(n):
    def r(x, kernel_size, stride=(), padding=0, dilation=1, ceil_mode=False, **_):   # -> (out, int64 indices)
        ks, ss, ps, ds = _pool_args(x, kernel_size, stride, padding, dilation, n)
        sp = x.shape[-n:]
        outs = [_pool_geometry(sz, k, s, p, d, ceil_mode) for sz, k, s, p, d in zip(sp, ks, ss, ps, ds)]
        vals = _windows(x, ks, ss, ps, ds, outs, _reduce_identity(x.dtype, "amax"))
        flat = jnp.broadcast_to(jnp.arange(int(np.prod(sp)), dtype=jnp.int64).reshape(sp), x.shape)
        idxs = _windows(flat, ks, ss, ps, ds, outs, -1)   # index into the flattened input plane
        arg = jnp.argmax(vals, axis=0)   # first maximum in row-major window order; NaN wins, as in torch
        out = jnp.take_along_axis(vals, arg[None], axis=0)[0]
        return out, jnp.take_along_axis(idxs, arg[None], axis=0)[0]
    return r


RULES[aten.max_pool2d_with_indices.default] = _max_pool(2)
RULES[aten.max_pool3d_with_indices.default] = _max_pool(3)


@rule(aten.max_pool2d.default)
def _max_pool2d(x, kernel_size, stride=(), padding=0, dilation=1, ceil_mode=False, **_):
    return _max_pool(2)(x, kernel_size, stride, padding, dilation, ceil_mode)[0]


def _avg_pool(n):
    def r(x, kernel_size, stride=(), padding=0, ceil_mode=False, count_include_pad=True, divisor_override=None,
          **_):
        return _avg_pool_impl(n, x, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override)
    return r


def _avg_pool_impl(n, x, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override):
    ks, ss, ps, ds = _pool_args(x, kernel_size, stride, padding, 1, n)
    sp = x.shape[-n:]
    outs = [_pool_geometry(sz, k, s, p, 1, ceil_mode) for sz, k, s, p in zip(sp, ks, ss, ps)]
    xf = _opmath(x)
    total = jnp.sum(_windows(xf, ks, ss, ps, ds, outs, 0), axis=0)
    if divisor_override:
        return (total / divisor_override).astype(x.dtype)
    # the divisor per output position, computed statically as torch does (window clipped to the padded input,
    # then to the input itself unless count_include_pad)
    div = np.ones(outs, dtype=np.float64)
    for axis, (size, k, s, p, o) in enumerate(zip(sp, ks, ss, ps, outs)):
        start = np.arange(o) * s - p
        end = np.minimum(start + k, size + p)
        pool = end - start
        cnt = pool if count_include_pad else np.minimum(end, size) - np.maximum(start, 0)
        shape = [1] * n
        shape[axis] = o
        div = div * cnt.reshape(shape)
    return (total / jnp.asarray(div, xf.dtype)).astype(x.dtype)


RULES[aten.avg_pool1d.default] = _avg_pool(1)
RULES[aten.avg_pool2d.default] = _avg_pool(2)
RULES[aten.avg_pool3d.default] = _avg_pool(3)


def _adaptive_matrix(size, out):
    """(out, size) averaging matrix of adaptive pooling: window i is [floor(i*size/out), ceil((i+1)*size/out))."""
    m = np.zeros((out, size), dtype=np.float64)
    for i in range(out):
        a, b = (i * size) // out, -(-((i + 1) * size) // out)
        m[i, a:b] = 1.0 / (b - a)
    return m


@rule(aten._adaptive_avg_pool2d.default, aten.adaptive_avg_pool2d.default)
def _adaptive_avg_pool2d(x, output_size, **_):   # two small averaging matmuls, no loop over windows
    oh, ow = _per_dim(output_size, 2)
    h, w = x.shape[-2:]
    xf = _opmath(x)
    mh = jnp.asarray(_adaptive_matrix(h, oh), xf.dtype)
    mw = jnp.asarray(_adaptive_matrix(w, ow), xf.dtype)
    out = jnp.einsum("...hw,oh,pw->...op", xf, mh, mw, precision=lax.Precision.HIGHEST)
    return out.astype(x.dtype)


@rule(aten.adaptive_avg_pool1d.default)
def _adaptive_avg_pool1d(x, output_size, **_):
    (o,) = _per_dim(output_size, 1)
    xf = _opmath(x)
    m = jnp.asarray(_adaptive_matrix(x.shape[-1], o), xf.dtype)
    return jnp.einsum("...w,ow->...o", xf, m, precision=lax.Precision.HIGHEST).astype(x.dtype)


def _scale(in_size, out_size, scale, align_corners=False):
    if align_corners:
        return (in_size - 1) / (out_size - 1) if out_size > 1 else 0.0
    return 1.0 / scale if scale else in_size / out_size


def _out_sizes(x, output_size, scale_factors, n):
    if output_size:
        return list(output_size)
    return [int(math.floor(s * f)) for s, f in zip(x.shape[-n:], scale_factors)]


@rule(aten.upsample_nearest2d.default)
def _upsample_nearest2d(x, output_size, scales_h=None, scales_w=None, **_):   # src = floor(dst * in/out)
    out = x
    for axis, o, sc in ((-2, output_size[0], scales_h), (-1, output_size[1], scales_w)):
        size = x.shape[axis]
        src = np.minimum(np.floor(np.arange(o) * _scale(size, o, sc)).astype(np.int64), size - 1)
        out = jnp.take(out, jnp.asarray(src), axis=axis)
    return out


@rule(aten.upsample_nearest2d.vec)
def _upsample_nearest2d_vec(x, output_size, scale_factors, **_):
    sizes = _out_sizes(x, output_size, scale_factors, 2)
    sc = scale_factors or (None, None)
    return _upsample_nearest2d(x, sizes, sc[0], sc[1])


def _linear_matrix(size, out, scale, align_corners):
    m = np.zeros((out, size), dtype=np.float64)
    r = _scale(size, out, scale, align_corners)
    for i in range(out):
        src = i * r if align_corners else max((i + 0.5) * r - 0.5, 0.0)
        i0 = min(int(math.floor(src)), size - 1)
        i1 = min(i0 + 1, size - 1)
        lam = src - i0
        m[i, i0] += 1.0 - lam
        m[i, i1] += lam
    return m


@rule(aten.upsample_bilinear2d.default)
def _upsample_bilinear2d(x, output_size, align_corners, scales_h=None, scales_w=None, **_):
    h, w = x.shape[-2:]
    oh, ow = output_size
    xf = _opmath(x)
    mh = jnp.asarray(_linear_matrix(h, oh, scales_h, align_corners), xf.dtype)
    mw = jnp.asarray(_linear_matrix(w, ow, scales_w, align_corners), xf.dtype)
    return jnp.einsum("...hw,oh,pw->...op", xf, mh, mw, precision=lax.Precision.HIGHEST).astype(x.dtype)


@rule(aten.upsample_bilinear2d.vec)
def _upsample_bilinear2d_vec(x, output_size, align_corners, scale_factors, **_):
    sizes = _out_sizes(x, output_size, scale_factors, 2)
    sc = scale_factors or (None, None)
    return _upsample_bilinear2d(x, sizes, align_corners, sc[0], sc[1])


def lookup(target) -> Callable | None:
    """The rule for a call target: the exact overload first, then its packet; None when there is none."""
    fn = RULES.get(target)
    if fn is None and isinstance(target, torch._ops.OpOverload):
        fn = RULES.get(target.overloadpacket)
    return fn


def check(node) -> str | None:
    """Why a node with a rule still cannot be lowered (a static check), or None."""
    fn = CHECKS.get(node.target)
    if fn is None and isinstance(node.target, torch._ops.OpOverload):
        fn = CHECKS.get(node.target.overloadpacket)
    return fn(node) if fn is not None else None
