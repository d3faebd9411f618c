"""Random small models for property tests and fuzz campaigns: a hypothesis strategy that writes an
``nn.Module`` as source code (``fxopt.tools.graphgen``; ``tests/graphgen.py`` re-exports it).

Needs ``hypothesis`` (the ``dev`` extra).

A :class:`ModelSpec` is the *source* of a model: its inputs, the lines of ``__init__`` (layers and weights) and
of ``forward`` (one op step per line), and the values it returns. Its ``repr`` is a constructor call that can
be pasted into ``@example(...)``; :meth:`ModelSpec.source` is the model as Python text, for humans.

:func:`model_specs` draws specs step by step. Each step is tried at draw time on real tiny tensors (a scratch
module holds the layers), so shapes and dtypes are tracked by running the code, and a step that does not apply
(a view of a non-contiguous tensor, a cat of mismatched shapes...) is simply dropped. Every drawn model
therefore runs eagerly; :func:`fxopt.capture` turns it into a real core-ATen graph.

Ops drawn from: linear (new, shared module, deep-copied twin with identical weights, tied weight), matmul
(with a weight, with itself transposed, with another live value), relu/gelu/tanh/sigmoid, add/sub/mul with
another live tensor, arithmetic with scalars (including the identities ``*1``, ``+0``, ``-0``, ``/1``, and
``*1.0`` / ``+0.0`` on int tensors, which promote), view/reshape/flatten/unsqueeze (same or another shape),
permute (random, identity, self-cancelling pair), transpose/t, clone/contiguous/detach/``.to(same dtype)``,
expand (same shape or a new leading dim), slices (full ``x[:, :]``, ``x[0:100]``, partial, strided, select),
cat/stack, split/chunk, sum/mean over a dim, softmax/log_softmax, layer_norm (functional or module),
weight-only arithmetic (``self.w * 2 + 1``, ``self.s.exp()``, ``self.w * 1``, ``self.w.t() + 1``...),
embedding lookups on the int input, parallel linears on one value and small dense mixtures of experts (what
`moe` fuses), top-k routed experts as the ModuleList loop (``where(idx == e)`` / ``index_add``, sometimes
with dropped routes), a computation repeated verbatim (common subexpressions), chains of up to four layout / copy /
identity-arithmetic links in one line, "stride chains" (a strided slice, broadcast or transpose, then a copy,
then a view that needs the copy's contiguous layout), dead computations (steps nothing returns), and outputs:
the last value, most unread values, and up to two more, which may repeat a value or be an input itself.

Added for the reliability campaign (issue #10): ``torch.bmm`` (with a batched weight, with itself transposed,
with another live 3-D value), reductions beyond sum/mean (``amax``, ``amin``, ``var``, ``std``), embedding
bags (``nn.EmbeddingBag`` / ``F.embedding_bag``, sum/mean/max, 2-D bags or 1-D ids with an offsets buffer),
gathers (``index_select`` / ``gather`` with an index buffer, advanced indexing with an int tensor, and
indexing with an index computed from the int input), duplicated subtrees (a run of two to four earlier lines
repeated with fresh names: a multi-op common subexpression), and dynamic batch: with
``model_specs(dynamic=True)`` a spec may set ``dynamic_batch``, and :func:`capture_spec` then exports dim 0 of
every input as ``Dim.AUTO`` (dynamic where the model allows, specialized otherwise).
"""
from __future__ import annotations

# local imports: commands import torch and the compiler only when they run, so `fxopt --help` and argument errors answer without them (startup cost)
import copy
import functools
import math
import re
import warnings
from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F
from hypothesis import strategies as st

VOCAB = 6          # int inputs hold indices in [0, VOCAB): every embedding has at least that many rows
MAX_NUMEL = 256    # steps producing more elements are dropped (keeps every example tiny)
MAX_STEPS = 12     # forward has at most this many op lines (most lines are one to four ATen ops)

_DTYPES = {"float32": torch.float32, "int64": torch.int64}


# Strategies are built once per distinct argument (building one per draw costs more than the draw).
@functools.lru_cache(maxsize=None)
def _integers(lo: int, hi: int):
    return st.integers(lo, hi)


@functools.lru_cache(maxsize=None)
def _sampled(options: tuple):
    return st.sampled_from(options)


_BOOLEANS = st.booleans()


@functools.lru_cache(maxsize=None)
def _permutations(n: int):
    return st.permutations(list(range(n)))


@dataclass(frozen=True)
class ModelSpec:
    """A generated model as source: inputs ``(name, shape, dtype)``, ``__init__`` lines, ``forward`` lines,
    returned names, and the seed for weights and example inputs."""

    inputs: tuple = ()
    init: tuple = ()
    body: tuple = ()
    outputs: tuple = ("x",)
    seed: int = 0
    single_output: bool = False  # return a bare tensor instead of a 1-tuple
    dynamic_batch: bool = False  # capture_spec exports dim 0 of every input as Dim.AUTO

    def source(self) -> str:
        """The model as Python source (a class ``GenModel``)."""
        args = ", ".join(name for name, _, _ in self.inputs)
        lines = ["class GenModel(nn.Module):", "    def __init__(self):", "        super().__init__()"]
        lines += [f"        {line}" for line in self.init]
        lines += ["", f"    def forward(self, {args}):"]
        lines += [f"        {line}" for line in self.body]
        if self.single_output and len(self.outputs) == 1:
            lines.append(f"        return {self.outputs[0]}")
        else:
            lines.append(f"        return ({', '.join(self.outputs)},)")
        return "\n".join(lines) + "\n"

    def build(self) -> nn.Module:
        """A fresh instance of the model (eval mode), weights drawn from ``seed``."""
        namespace = {"torch": torch, "nn": nn, "F": F, "copy": copy, "math": math}
        exec(compile(self.source(), "<generated model>", "exec"), namespace)  # noqa: S102 - our own source
        with torch.random.fork_rng():
            torch.manual_seed(self.seed)
            model = namespace["GenModel"]()
        return model.eval()

    def make_inputs(self, seed: int | None = None, batch: int | None = None) -> tuple:
        """Inputs of the declared shapes: floats ~ N(0, 1), ints in [0, VOCAB); ``seed`` defaults to the
        spec's seed (the example inputs); ``batch`` replaces dim 0 of every input (for dynamic batch)."""
        gen = torch.Generator().manual_seed(self.seed if seed is None else seed)
        out = []
        for _, shape, dtype in self.inputs:
            if batch is not None:
                shape = (batch,) + tuple(shape[1:])
            if dtype == "int64":
                out.append(torch.randint(0, VOCAB, shape, generator=gen))
            else:
                out.append(torch.randn(shape, generator=gen, dtype=_DTYPES[dtype]))
        return tuple(out)


# ------------------------------------------------------------------------------------------------ drawing
@dataclass
class _Value:
    name: str
    tensor: torch.Tensor
    index_safe: bool = False  # an int tensor holding valid embedding indices for every input

    @property
    def is_float(self) -> bool:
        return self.tensor.dtype.is_floating_point


@dataclass
class _Step:
    init: list
    line: str
    outs: list
    inputs: list = field(default_factory=list)  # _Values read (for index_safe propagation)
    layout: bool = False                        # keeps values (index_safe propagates)
    registers: list = field(default_factory=list)  # (kind, info) recorded on success


class _Builder:
    def __init__(self, draw):
        self.draw = draw
        self.scratch = nn.Module()
        self.values: list[_Value] = []
        self.init: list[str] = []
        self.body: list[str] = []
        self.counters: dict[str, int] = {}
        self.linears: list[tuple[str, int, int, bool]] = []   # (attr, in, out, bias)
        self.weights: list[tuple[str, tuple]] = []            # (attr, shape)
        self.embeddings: list[tuple[str, int]] = []           # (attr, dim)
        self.used: set[str] = set()                           # values some step reads

    # -- helpers
    def fresh(self, base: str) -> str:
        n = self.counters.get(base, 0)
        self.counters[base] = n + 1
        return f"{base}{n}"

    def pick(self, pred=lambda v: True) -> _Value | None:
        # Most recent first: draws shrink towards chains (each step reading the previous one).
        cands = [v for v in reversed(self.values) if pred(v)]
        return cands[self.draw(_integers(0, len(cands) - 1))] if cands else None

    def choice(self, options):
        options = tuple(options)
        try:
            return self.draw(_sampled(options))
        except TypeError:  # unhashable options
            return options[self.draw(_integers(0, len(options) - 1))]

    def integers(self, lo: int, hi: int) -> int:
        return self.draw(_integers(lo, hi))

    def boolean(self) -> bool:
        return self.draw(_BOOLEANS)

    def dim(self, v: _Value) -> int:
        nd = v.tensor.dim()
        return self.integers(-nd, nd - 1)

    # -- applying a step
    def apply(self, step: _Step) -> bool:
        namespace = {"torch": torch, "nn": nn, "F": F, "copy": copy, "math": math, "self": self.scratch}
        namespace.update({v.name: v.tensor for v in self.values})
        try:
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")  # e.g. std() over one element: dropped below as non-finite
                for line in step.init:
                    exec(line, namespace)  # noqa: S102
                exec(step.line, namespace)  # noqa: S102
        except Exception:  # noqa: BLE001 - the step does not apply to these shapes: drop it
            return False
        results = [namespace.get(name) for name in step.outs]
        for r in results:
            if not isinstance(r, torch.Tensor) or r.numel() == 0 or r.numel() > MAX_NUMEL:
                return False
            if r.dtype.is_floating_point and not bool(torch.isfinite(r).all()):
                return False
            if r.dtype not in (torch.float32, torch.float64, torch.int64):
                return False
        safe = step.layout and bool(step.inputs) and all(v.index_safe for v in step.inputs)
        for name, r in zip(step.outs, results):
            self.values.append(_Value(name, r.detach(), safe and r.dtype == torch.int64))
        for kind, info in step.registers:
            getattr(self, kind).append(info)
        self.used.update(v.name for v in step.inputs)
        self.init += step.init
        self.body.append(step.line)
        return True


def _shape_text(shape) -> str:
    return ", ".join(str(int(d)) for d in shape)


def _divisor_shapes(numel: int) -> list[tuple]:
    shapes = [(numel,)]
    for a in range(1, numel + 1):
        if numel % a == 0:
            shapes.append((a, numel // a))
            for b in range(1, numel // a + 1):
                if (numel // a) % b == 0 and a * b <= numel:
                    shapes.append((a, b, numel // (a * b)))
    return shapes[:12]


# -- op steps: each returns a _Step or None (not applicable now) -------------------------------------------
def _linear(b: _Builder):
    v = b.pick(lambda v: v.is_float and v.tensor.dim() >= 1 and v.tensor.dtype == torch.float32)
    if v is None:
        return None
    d = int(v.tensor.shape[-1])
    mode = b.choice(["new", "shared", "twin", "tied"])
    same_in = [lin for lin in b.linears if lin[1] == d]
    out = b.fresh("v")
    if mode != "new" and same_in:
        attr, _, n_out, bias = b.choice(same_in)
        if mode == "shared":
            return _Step([], f"{out} = self.{attr}({v.name})", [out], [v])
        new = b.fresh("lin")
        if mode == "twin":   # separate module, identical weights
            init = [f"self.{new} = copy.deepcopy(self.{attr})"]
        else:                # tied: a new module sharing the weight Parameter
            init = [f"self.{new} = nn.Linear({d}, {n_out}, bias={bias})", f"self.{new}.weight = self.{attr}.weight"]
        return _Step(init, f"{out} = self.{new}({v.name})", [out], [v], registers=[("linears", (new, d, n_out, bias))])
    n_out = b.integers(1, 5)
    bias = b.boolean()
    new = b.fresh("lin")
    return _Step([f"self.{new} = nn.Linear({d}, {n_out}, bias={bias})"], f"{out} = self.{new}({v.name})", [out],
                 [v], registers=[("linears", (new, d, n_out, bias))])


def _matmul(b: _Builder):
    a = b.pick(lambda v: v.is_float and v.tensor.dim() >= 1)
    if a is None:
        return None
    out = b.fresh("v")
    mode = b.choice(["weight", "self", "other", "mm"])
    if mode == "weight":
        k = int(a.tensor.shape[-1])
        n = b.integers(1, 4)
        w = b.fresh("mw")
        return _Step([f"self.{w} = nn.Parameter(torch.randn({k}, {n}))"], f"{out} = {a.name} @ self.{w}", [out],
                     [a], registers=[("weights", (w, (k, n)))])
    if mode == "self":
        return _Step([], f"{out} = {a.name} @ {a.name}.transpose(-1, -2)", [out], [a])
    other = b.pick(lambda v: v.is_float and v.tensor.dim() >= 1 and v.tensor.dtype == a.tensor.dtype)
    if mode == "mm":
        return _Step([], f"{out} = torch.mm({a.name}, {other.name})", [out], [a, other])
    return _Step([], f"{out} = torch.matmul({a.name}, {other.name})", [out], [a, other])


def _binary(b: _Builder):
    a = b.pick()
    if a is None:
        return None
    other = b.pick(lambda v: v.tensor.dtype == a.tensor.dtype)
    fmt = b.choice(["{} + {}", "{} * {}", "{} - {}", "torch.add({}, {}, alpha=2)"])
    out = b.fresh("v")
    return _Step([], f"{out} = {fmt.format(a.name, other.name)}", [out], [a, other])


_FLOAT_SCALARS = [("*", 1), ("+", 0), ("-", 0), ("/", 1), ("*", 1.0), ("+", 0.0), ("*", 2), ("+", 1),
                  ("*", -0.5), ("/", 2.0), ("r*", 1), ("r+", 0)]
_INT_SCALARS = [("*", 1), ("+", 0), ("-", 0), ("*", 1.0), ("+", 0.0), ("/", 1), ("*", 2), ("+", 3), ("r*", 1)]


# -- fragments: one-input transforms, as a format string with one "{}" for the input expression ------------
# Each returns (fmt, keeps_index) or None; ``keeps_index`` says an int index tensor stays a valid index.
def _frag_scalar(b: _Builder, t: torch.Tensor):
    op, c = b.choice(_FLOAT_SCALARS if t.dtype.is_floating_point else _INT_SCALARS)
    fmt = f"({c!r} {op[1]} {{}})" if op.startswith("r") else f"({{}} {op} {c!r})"
    identity = (op in ("*", "r*", "/") and c == 1) or (op in ("+", "-", "r+") and c == 0)
    return fmt, identity and not isinstance(c, float) and op != "/"


def _frag_view(b: _Builder, t: torch.Tensor):
    shape = tuple(t.shape)
    method = b.choice(["view", "reshape", "view-shape", "flatten", "unsqueeze", "squeeze", "view-neg"])
    if method == "view-shape":
        return "{0}.view({0}.shape)", True
    if method == "flatten":
        return "{}.flatten()", True
    if method == "unsqueeze":
        return f"{{}}.unsqueeze({b.integers(0, t.dim())})", True
    if method == "squeeze":
        return "{}.squeeze()", True
    if method == "view-neg":
        return "{}.view(-1)", True
    target = b.choice([shape] + _divisor_shapes(t.numel()))
    return f"{{}}.{method}({_shape_text(target) or '()'})", True


def _frag_permute(b: _Builder, t: torch.Tensor):
    nd = t.dim()
    if nd < 2:
        return None
    perm = b.draw(_permutations(nd))
    mode = b.choice(["one", "cancel", "identity", "twice"])
    if mode == "identity":
        perm = list(range(nd))
    fmt = f"{{}}.permute({', '.join(map(str, perm))})"
    if mode == "cancel":
        inverse = [perm.index(i) for i in range(nd)]
        fmt += f".permute({', '.join(map(str, inverse))})"
    elif mode == "twice":
        second = b.draw(_permutations(nd))
        fmt += f".permute({', '.join(map(str, second))})"
    return fmt, True


def _frag_transpose(b: _Builder, t: torch.Tensor):
    nd = t.dim()
    if nd < 2:
        return None
    mode = b.choice(["dims", "last", "t"])
    if mode == "t" and nd == 2:
        return "{}.t()", True
    if mode == "last":
        return "{}.transpose(-1, -2)", True
    i, j = b.integers(-nd, nd - 1), b.integers(-nd, nd - 1)
    return f"{{}}.transpose({i}, {j})", True


def _dtype_text(t: torch.Tensor) -> str:
    return {torch.float32: "torch.float32", torch.float64: "torch.float64"}.get(t.dtype, "torch.int64")


def _frag_copy(b: _Builder, t: torch.Tensor):
    dtype = _dtype_text(t)
    fmt = b.choice(["{}.clone()", "{}.contiguous()", "{}.to(" + dtype + ")", "{}.detach()", "torch.clone({})",
                    "{}.clone(memory_format=torch.contiguous_format)", "{}.to(" + dtype + ", copy=True)"])
    return fmt, True


def _frag_expand(b: _Builder, t: torch.Tensor):
    shape = tuple(t.shape)
    mode = b.choice(["same", "as", "lead"])
    if mode == "same":
        return f"{{}}.expand({_shape_text(shape)})", True
    if mode == "as" or not shape:
        return "{0}.expand_as({0})", True
    return f"{{}}.expand({b.integers(1, 3)}, {_shape_text(shape)})", True


def _frag_slice(b: _Builder, t: torch.Tensor):
    if t.dim() < 1:
        return None
    size0 = int(t.shape[0])
    forms = ["{}[:]", "{}[..., :]", f"{{}}[0:{size0}]", "{}[0:100]", "{}[1:]", "{}[::2]", "{}[0]"]
    if t.dim() >= 2:
        forms += ["{}[:, :]", "{}[:, :1]", "{}[:, 0:100]", "{}[:, ::2]"]
    return b.choice(forms), True


def _frag_unary(b: _Builder, t: torch.Tensor):
    if not t.dtype.is_floating_point:
        return None
    return b.choice(["torch.relu({})", "F.gelu({})", "torch.tanh({})", "torch.sigmoid({})", "{}.relu()",
                     "F.gelu({}, approximate='tanh')"]), False


def _frag_strided(b: _Builder, t: torch.Tensor):
    """A layout whose result is not dense or not contiguous: a strided slice, a broadcast, a transpose."""
    forms = ["{}[::2]", "{}.expand(2, " + _shape_text(t.shape) + ")"] if t.dim() >= 1 else []
    if t.dim() >= 2:
        forms += ["{}[:, ::2]", "{}.transpose(0, 1)", "{}[:, 1:]"]
    return (b.choice(forms), True) if forms else None


def _frag_flat_view(b: _Builder, t: torch.Tensor):
    """A view that needs compatible strides (merges dims)."""
    target = b.choice([(-1,)] + _divisor_shapes(t.numel())[1:4])
    return f"{{}}.view({_shape_text(target) if target != (-1,) else '-1'})", True


FRAGMENTS = {"strided": _frag_strided, "flat-view": _frag_flat_view, "view": _frag_view, "copy": _frag_copy,
             "permute": _frag_permute, "slice": _frag_slice, "scalar": _frag_scalar, "transpose": _frag_transpose,
             "expand": _frag_expand, "unary": _frag_unary}


def _fragment_op(kinds, max_len=1, stages=None):
    """An op applying fragments to one live value, in one line: 1..max_len fragments of the given kinds, or
    one fragment per stage (each stage a tuple of kinds). Each link is checked on the real tensor as it is
    added (a link that does not apply is left out)."""

    def op(b: _Builder):
        v = b.pick()
        if v is None:
            return None
        expr, tensor, keeps = v.name, v.tensor, True
        namespace = {"torch": torch, "nn": nn, "F": F, v.name: v.tensor}
        plan = stages or [kinds] * b.integers(1, max_len)
        for stage in plan:
            frag = FRAGMENTS[b.choice(stage)](b, tensor)
            if frag is None:
                continue
            fmt, keeps_index = frag
            candidate = fmt.format(expr)
            try:
                with torch.no_grad():
                    value = eval(candidate, namespace)  # noqa: S307 - our own generated expression
            except Exception:  # noqa: BLE001 - does not apply to this shape/layout
                continue
            if not isinstance(value, torch.Tensor) or value.numel() == 0 or value.numel() > MAX_NUMEL:
                continue
            expr, tensor, keeps = candidate, value, keeps and keeps_index
        if expr == v.name:
            return None
        if expr.startswith("(") and expr.endswith(")") and expr.count("(") == 1:
            expr = expr[1:-1]
        out = b.fresh("v")
        return _Step([], f"{out} = {expr}", [out], [v], layout=keeps)

    return op


def _reduce(b: _Builder):
    v = b.pick(lambda v: v.tensor.dim() >= 1)
    if v is None:
        return None
    fn = b.choice(["sum", "mean"] if v.is_float else ["sum"])
    keep = b.boolean()
    out = b.fresh("v")
    return _Step([], f"{out} = {v.name}.{fn}({b.dim(v)}{', keepdim=True' if keep else ''})", [out], [v])


def _softmax(b: _Builder):
    v = b.pick(lambda v: v.is_float and v.tensor.dim() >= 1)
    if v is None:
        return None
    fmt = b.choice(["{}.softmax({})", "F.softmax({}, dim={})", "torch.log_softmax({}, {})"])
    out = b.fresh("v")
    return _Step([], f"{out} = {fmt.format(v.name, b.dim(v))}", [out], [v])


def _layer_norm(b: _Builder):
    v = b.pick(lambda v: v.tensor.dtype == torch.float32 and v.tensor.dim() >= 1)
    if v is None:
        return None
    d = int(v.tensor.shape[-1])
    out = b.fresh("v")
    if b.boolean():
        return _Step([], f"{out} = F.layer_norm({v.name}, ({d},))", [out], [v])
    ln = b.fresh("ln")
    affine = b.boolean()
    init = [f"self.{ln} = nn.LayerNorm({d}, elementwise_affine={affine})"]
    if affine:
        init.append(f"nn.init.normal_(self.{ln}.weight)")
    return _Step(init, f"{out} = self.{ln}({v.name})", [out], [v])


def _cat(b: _Builder):
    a = b.pick(lambda v: v.tensor.dim() >= 1)
    if a is None:
        return None
    other = b.pick(lambda v: v.tensor.dtype == a.tensor.dtype and v.tensor.dim() == a.tensor.dim())
    fn = b.choice(["cat", "stack"])
    out = b.fresh("v")
    nd = a.tensor.dim() + (1 if fn == "stack" else 0)
    d = b.integers(-nd, nd - 1)
    return _Step([], f"{out} = torch.{fn}([{a.name}, {other.name}], {d})", [out], [a, other], layout=True)


def _split(b: _Builder):
    v = b.pick(lambda v: v.tensor.dim() >= 1)
    if v is None:
        return None
    d = b.dim(v)
    size = int(v.tensor.shape[d])
    o1, o2 = b.fresh("v"), b.fresh("v")
    mode = b.choice(["chunk", "split1", "sizes"])
    if mode == "chunk":
        return _Step([], f"{o1}, {o2} = {v.name}.chunk(2, {d})", [o1, o2], [v], layout=True)
    if mode == "split1":
        return _Step([], f"{o1} = {v.name}.split(1, {d})[0]", [o1], [v], layout=True)
    k = b.integers(1, max(1, size - 1))
    return _Step([], f"{o1}, {o2} = torch.split({v.name}, [{k}, {size - k}], {d})", [o1, o2], [v], layout=True)


def _weight(b: _Builder):
    """Weight-only arithmetic, alone or combined with a live value (broadcast over its last dim)."""
    v = b.pick(lambda v: v.tensor.dtype == torch.float32 and v.tensor.dim() >= 1)
    d = int(v.tensor.shape[-1]) if v is not None else 3
    init, regs = [], []

    def weight(shape):
        reuse = [w for w in b.weights if w[1] == shape]
        if reuse and b.boolean():
            return b.choice(reuse)[0]
        name = b.fresh("w")
        if b.boolean():
            init.append(f"self.{name} = nn.Parameter(torch.randn({_shape_text(shape)}))")
        else:
            init.append(f"self.register_buffer({name!r}, torch.randn({_shape_text(shape)}))")
        regs.append(("weights", (name, shape)))
        return name

    form = b.choice(["affine", "exp", "both", "one", "t", "tanh", "sum"])
    if form == "t":
        w = weight((d, d))
        expr = f"(self.{w}.t() + 1).sum(0)"
    elif form == "sum":
        w = weight((2, d))
        expr = f"self.{w}.sum(0) * 0.5"
    else:
        w = weight((d,))
        expr = {"affine": f"(self.{w} * 2 + 1)", "exp": f"self.{w}.exp()", "one": f"(self.{w} * 1)",
                "tanh": f"(torch.tanh(self.{w}) + self.{w})",
                "both": f"(self.{w} * 2 + 1) * self.{weight((d,))}.exp()"}[form]
    combine = b.choice(["alone", "mul", "add"]) if v is not None else "alone"
    out = b.fresh("v")
    if combine == "mul":
        return _Step(init, f"{out} = {v.name} * {expr}", [out], [v], registers=regs)
    if combine == "add":
        return _Step(init, f"{out} = {v.name} + {expr}", [out], [v], registers=regs)
    return _Step(init, f"{out} = {expr}", [out], [], registers=regs)


def _embedding(b: _Builder):
    ids = b.pick(lambda v: v.index_safe)
    if ids is None:
        return None
    out = b.fresh("v")
    if b.embeddings and b.boolean():
        attr, _ = b.choice(b.embeddings)
        return _Step([], f"{out} = self.{attr}({ids.name})", [out], [ids])
    dims = sorted({int(v.tensor.shape[-1]) for v in b.values if v.is_float and v.tensor.dim() >= 1} | {2, 4})
    dim = b.choice(dims)
    attr = b.fresh("emb")
    line = b.choice([f"{out} = self.{attr}({ids.name})", f"{out} = F.embedding({ids.name}, self.{attr}.weight)"])
    return _Step([f"self.{attr} = nn.Embedding({VOCAB}, {dim})"], line, [out], [ids],
                 registers=[("embeddings", (attr, dim))])


# -- ops added for the reliability campaign (issue #10) ---------------------------------------------------
def _bmm(b: _Builder):
    """``torch.bmm`` of a 3-D value with a batched weight, with itself transposed, or with another value."""
    a = b.pick(lambda v: v.tensor.dtype == torch.float32 and v.tensor.dim() == 3)
    if a is None:
        return None
    out = b.fresh("v")
    bsz, k = int(a.tensor.shape[0]), int(a.tensor.shape[2])
    mode = b.choice(["weight", "self", "other"])
    if mode == "weight":
        w = b.fresh("bw")
        m = b.integers(1, 4)
        return _Step([f"self.{w} = nn.Parameter(torch.randn({bsz}, {k}, {m}))"], f"{out} = torch.bmm({a.name}, self.{w})",
                     [out], [a], registers=[("weights", (w, (bsz, k, m)))])
    if mode == "self":
        return _Step([], f"{out} = torch.bmm({a.name}, {a.name}.transpose(1, 2))", [out], [a])
    other = b.pick(lambda v: v.tensor.dtype == torch.float32 and v.tensor.dim() == 3)
    return _Step([], f"{out} = torch.bmm({a.name}, {other.name})", [out], [a, other])


def _reduce_more(b: _Builder):
    """Reductions beyond sum/mean: amax/amin (floats and ints), var/std (floats), over a dim or everything."""
    v = b.pick(lambda v: v.tensor.dim() >= 1)
    if v is None:
        return None
    fn = b.choice(["amax", "amin", "var", "std", "var-biased"] if v.is_float else ["amax", "amin"])
    keep = ", keepdim=True" if b.boolean() else ""
    out = b.fresh("v")
    d = b.dim(v)
    if fn == "var-biased":
        return _Step([], f"{out} = torch.var({v.name}, {d}, unbiased=False{keep})", [out], [v])
    if b.integers(0, 3) == 0:
        return _Step([], f"{out} = {v.name}.{fn}()", [out], [v])
    return _Step([], f"{out} = {v.name}.{fn}({d}{keep})", [out], [v])


def _embedding_bag(b: _Builder):
    """Embedding bags on the int input: 2-D ids (one bag per row) or 1-D ids with an offsets buffer; sum,
    mean or max; as a module or ``F.embedding_bag``."""
    ids = b.pick(lambda v: v.index_safe and v.tensor.dim() in (1, 2))
    if ids is None:
        return None
    mode = b.choice(["sum", "mean", "max"])
    dim = b.choice(sorted({int(v.tensor.shape[-1]) for v in b.values if v.is_float and v.tensor.dim() >= 1}
                          | {2, 3}))
    bag, out = b.fresh("bag"), b.fresh("v")
    init = [f"self.{bag} = nn.EmbeddingBag({VOCAB}, {dim}, mode={mode!r})"]
    flat = ids.name if ids.tensor.dim() == 1 else f"{ids.name}.flatten()"
    form = b.choice(["rows", "offsets", "functional"]) if ids.tensor.dim() == 2 else "offsets"
    if form == "rows":
        return _Step(init, f"{out} = self.{bag}({ids.name})", [out], [ids])
    if form == "functional":
        return _Step(init, f"{out} = F.embedding_bag({ids.name}, self.{bag}.weight, mode={mode!r})", [out], [ids])
    n = int(ids.tensor.numel())
    cut = b.integers(1, n - 1) if n >= 2 else 0
    offsets = [0, cut] if cut else [0]
    off = b.fresh("off")
    init.append(f"self.register_buffer({off!r}, torch.tensor({offsets}))")
    return _Step(init, f"{out} = self.{bag}({flat}, self.{off})", [out], [ids])


def _gather(b: _Builder):
    """Gathers: ``index_select`` and ``gather`` with an index buffer, advanced indexing with an int tensor,
    and indexing with an index computed from the int input (``ids % size``)."""
    v = b.pick(lambda v: v.tensor.dim() >= 1)
    if v is None:
        return None
    out = b.fresh("v")
    d = b.integers(0, v.tensor.dim() - 1)
    size = int(v.tensor.shape[d])
    mode = b.choice(["index_select", "gather", "advanced", "advanced-2d", "from-ids"])
    idx = b.fresh("idx")
    if mode == "from-ids":
        ids = b.pick(lambda u: u.tensor.dtype == torch.int64 and u.tensor.dim() >= 1)
        if ids is None:
            return None
        return _Step([], f"{out} = {v.name}[({ids.name} % {size}).flatten()]" if d == 0 else
                     f"{out} = {v.name}.index_select({d}, ({ids.name} % {size}).flatten())", [out], [v, ids])
    seed = b.integers(0, 999)
    gen = f"generator=torch.Generator().manual_seed({seed})"
    if mode == "gather":
        shape = list(v.tensor.shape)
        shape[d] = b.integers(1, 4)
        init = [f"self.register_buffer({idx!r}, torch.randint(0, {size}, ({_shape_text(shape)},), {gen}))"]
        return _Step(init, f"{out} = torch.gather({v.name}, {d}, self.{idx})", [out], [v])
    if mode == "advanced-2d":
        init = [f"self.register_buffer({idx!r}, torch.randint(0, {size}, (2, {b.integers(1, 3)}), {gen}))"]
        return _Step(init, f"{out} = {v.name}[{':, ' * d}self.{idx}]", [out], [v])
    init = [f"self.register_buffer({idx!r}, torch.randint(0, {size}, ({b.integers(1, 4)},), {gen}))"]
    if mode == "advanced":
        return _Step(init, f"{out} = {v.name}[{':, ' * d}self.{idx}]", [out], [v])
    return _Step(init, f"{out} = {v.name}.index_select({d}, self.{idx})", [out], [v])


_NAME_TOKEN = re.compile(r"\b(v\d+)\b")


def _repeat_block(b: _Builder):
    """A run of two to four earlier lines repeated verbatim under fresh names (a duplicated subtree of
    several ops: the common subexpression spans lines)."""
    if len(b.body) < 2:
        return None
    n = b.integers(2, min(4, len(b.body)))
    start = b.integers(0, len(b.body) - n)
    block = b.body[start:start + n]
    if any(";" in line for line in block):
        return None
    mapping: dict[str, str] = {}
    lines, outs = [], []
    for line in block:
        lhs, rhs = line.split(" = ", 1)
        rhs = _NAME_TOKEN.sub(lambda m: mapping.get(m.group(1), m.group(1)), rhs)
        names = [name.strip() for name in lhs.split(",")]
        fresh = [b.fresh("v") for _ in names]
        mapping.update(zip(names, fresh))
        lines.append(f"{', '.join(fresh)} = {rhs}")
        outs += fresh
    return _Step([], "; ".join(lines), outs, [])


_LAYOUT_KINDS = ("view", "copy", "permute", "slice", "scalar", "transpose", "expand")

def _experts(b: _Builder):
    """Parallel linears on one value, or a small dense mixture of experts (gate optional): what `moe` fuses
    (horizontally, or into batched matmuls)."""
    v = b.pick(lambda v: v.tensor.dtype == torch.float32 and v.tensor.dim() >= 1)
    if v is None:
        return None
    d = int(v.tensor.shape[-1])
    count = b.integers(2, 3)
    init, regs = [], []

    def linear(n_in, n_out, bias=True):
        name = b.fresh("lin")
        init.append(f"self.{name} = nn.Linear({n_in}, {n_out}, bias={bias})")
        regs.append(("linears", (name, n_in, n_out, bias)))
        return name

    if b.boolean():  # parallel linears (Q/K/V style), each its own output
        outs = [b.fresh("v") for _ in range(count)]
        widths = [b.integers(1, 4) for _ in range(count)]
        bias = b.boolean()
        calls = ", ".join(f"self.{linear(d, w, bias)}({v.name})" for w in widths)
        return _Step(init, f"{', '.join(outs)} = {calls}", outs, [v], registers=regs)
    hidden, width = b.integers(1, 4), b.integers(1, 4)
    act = b.choice(["torch.relu", "F.gelu"])
    gate = linear(d, count) if b.boolean() else None
    terms = []
    for e in range(count):
        term = f"self.{linear(hidden, width)}({act}(self.{linear(d, hidden)}({v.name})))"
        if gate is not None:
            term = f"torch.softmax(self.{gate}({v.name}), -1)[..., {e}:{e + 1}] * {term}"
        terms.append(term)
    out = b.fresh("v")
    return _Step(init, f"{out} = {' + '.join(terms)}", [out], [v], registers=regs)


def _routed_experts(b: _Builder):
    """Top-k routed experts written as the ModuleList loop `moe` fuses: ``topk`` of a softmax gate, per expert
    ``tok, slot = torch.where(idx == e)`` and ``out.index_add(0, tok, expert(x[tok]) * w[tok, slot, None])``;
    sometimes low-probability routes are dropped (id -1: tokens with no expert, experts with no token)."""
    v = b.pick(lambda v: v.tensor.dtype == torch.float32 and v.tensor.dim() == 2)
    if v is None:
        return None
    d = int(v.tensor.shape[-1])
    count, hidden, width = b.integers(2, 4), b.integers(1, 4), b.integers(1, 4)
    k = b.integers(1, min(2, count))
    act = b.choice(["torch.relu", "F.gelu"])
    init = [f"self.{(gate := b.fresh('gate'))} = nn.Linear({d}, {count})"]
    w, idx, out, tok, slot = (b.fresh(n) for n in ("rw", "ri", "v", "tok", "slot"))
    lines = [f"{w}, {idx} = torch.topk(torch.softmax(self.{gate}({v.name}), -1), {k})"]
    if b.boolean():
        lines.append(f"{idx} = torch.where({w} >= {b.choice([0.3, 0.5])}, {idx}, -1)")
    lines.append(f"{out} = {v.name}.new_zeros({v.name}.shape[0], {width})")
    for e in range(count):
        l1, l2 = b.fresh("lin"), b.fresh("lin")
        init += [f"self.{l1} = nn.Linear({d}, {hidden})", f"self.{l2} = nn.Linear({hidden}, {width})"]
        lines.append(f"{tok}, {slot} = torch.where({idx} == {e})")
        lines.append(f"{out} = {out}.index_add(0, {tok}, self.{l2}({act}(self.{l1}({v.name}[{tok}]))) * "
                     f"{w}[{tok}, {slot}].unsqueeze(-1))")
    return _Step(init, "; ".join(lines), [out], [v])


def _repeat(b: _Builder):
    """The same computation again (a common subexpression; with a linear, a parallel identical chain)."""
    singles = [line for line in b.body if line.split(" = ", 1)[0].count(",") == 0 and ";" not in line]
    if not singles:
        return None
    rhs = b.choice(singles[::-1]).split(" = ", 1)[1]
    out = b.fresh("v")
    return _Step([], f"{out} = {rhs}", [out], [])


OPS = {
    "unary": _fragment_op(("unary",)), "linear": _linear, "scalar": _fragment_op(("scalar",)),
    "view": _fragment_op(("view",)), "copy": _fragment_op(("copy",)), "permute": _fragment_op(("permute",)),
    "chain": _fragment_op(_LAYOUT_KINDS, max_len=4), "binary": _binary, "matmul": _matmul,
    "transpose": _fragment_op(("transpose",)), "slice": _fragment_op(("slice",)),
    "expand": _fragment_op(("expand",)), "chain2": _fragment_op(_LAYOUT_KINDS + ("unary",), max_len=4),
    # a strided or broadcast layout, then a copy, then a view: where removing the copy changes what the view
    # sees (copies of non-dense tensors are contiguous, the tensors themselves are not)
    "stride-chain": _fragment_op((), stages=[("strided",), ("copy",), ("flat-view",)]),
    "reduce": _reduce, "softmax": _softmax, "layer_norm": _layer_norm, "cat": _cat, "split": _split,
    "weight": _weight, "embedding": _embedding, "repeat": _repeat,
    "experts": _experts,
    "bmm": _bmm, "reduce-more": _reduce_more, "embedding-bag": _embedding_bag, "gather": _gather,
    "repeat-block": _repeat_block, "routed-experts": _routed_experts,
}


# How often each op is drawn (a list with repeats): the ops that give passes work come up more often.
OP_CHOICES = tuple(OPS) + ("weight", "experts", "repeat", "chain", "stride-chain", "linear", "weight", "chain2",
                           "repeat-block", "gather", "routed-experts")


@st.composite
def model_specs(draw, max_steps: int = MAX_STEPS, ops: tuple = OP_CHOICES, dynamic: bool = False) -> ModelSpec:
    """Draw a :class:`ModelSpec`: inputs ``x`` (float, 1-3 dims of size 1-4), optionally ``y`` (float, x's
    shape) and ``ids`` (int64 indices, x's leading dims), then 1 to ``max_steps`` op lines (``ops``: names
    in :data:`OPS`, repeats weigh them), then outputs (the last value computed, up to three values nothing
    reads, and up to two more values, inputs included, repeats allowed). With ``dynamic``, about half the
    specs set ``dynamic_batch`` (and then dim 0 of ``x`` is at least 2, so it can stay symbolic)."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return _draw_spec(draw, max_steps, ops, dynamic)


def capture_spec(spec: ModelSpec, model: nn.Module | None = None):
    """Capture ``spec`` (or ``model``, an instance of it) with :func:`fxopt.capture` on its example inputs;
    with ``spec.dynamic_batch`` dim 0 of every input is exported as ``torch.export.Dim.AUTO`` (symbolic
    where the model allows it). Returns the :class:`fxopt.ir.Program`."""
    import fxopt

    model = spec.build() if model is None else model
    dynamic = None
    if spec.dynamic_batch:
        dynamic = tuple({0: torch.export.Dim.AUTO} for _ in spec.inputs)
    return fxopt.capture(model, spec.make_inputs(), dynamic_shapes=dynamic)


def _draw_spec(draw, max_steps, ops, dynamic=False) -> ModelSpec:
    b = _Builder(draw)
    nd = draw(_sampled((2, 3, 1)))
    dynamic_batch = bool(dynamic and draw(_BOOLEANS))
    xshape = tuple(draw(_integers(2 if dynamic_batch and i == 0 else 1, 4)) for i in range(nd))
    inputs = [("x", xshape, "float32")]
    if draw(_BOOLEANS):
        inputs.append(("y", xshape, "float32"))
    if draw(_BOOLEANS):
        inputs.append(("ids", xshape[:-1] if nd >= 2 else xshape, "int64"))
    seed = draw(_integers(0, 2**16))
    spec0 = ModelSpec(inputs=tuple(inputs), seed=seed)
    for (name, _, dtype), tensor in zip(inputs, spec0.make_inputs()):
        b.values.append(_Value(name, tensor, index_safe=dtype == "int64"))
    n_inputs = len(b.values)
    wanted, applied, attempts = draw(_integers(1, max_steps)), 0, 0
    while applied < wanted and attempts < 2 * wanted + 2:
        attempts += 1
        step = OPS[draw(_sampled(tuple(ops)))](b)
        if step is not None and b.apply(step):
            applied += 1
    names = [v.name for v in b.values]
    outputs = [names[-1]] if len(names) > n_inputs else []
    # Most values nothing reads are returned (capture drops dead code anyway, so unreturned leaves only make
    # the example slower); then up to two more outputs, anything (an input, a repeat).
    leaves = [v.name for v in b.values[n_inputs:-1] if v.name not in b.used]
    outputs += [name for name in leaves if draw(_BOOLEANS)][:3]
    outputs += draw(st.lists(st.sampled_from(names), min_size=0 if outputs else 1, max_size=2))
    single = len(outputs) == 1 and draw(_BOOLEANS)
    return ModelSpec(inputs=tuple(inputs), init=tuple(b.init), body=tuple(b.body), outputs=tuple(outputs),
                     seed=seed, single_output=single, dynamic_batch=dynamic_batch)
