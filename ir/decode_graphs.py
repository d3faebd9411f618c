"""Graph builders for decode loops: the step loop, the fully unrolled graph and the partition graphs.

Everything here is graph-level rewriting of the captured pieces of a decode-loop region (see
:mod:`fxopt.ir.loops`): the ``step`` graph (exported once, with a symbolic cache length) is copied node by node
into a new FX graph as many times as there are steps, with an environment mapping the step's placeholders to
the current token/state/memory nodes. While copying, every node's ``meta["val"]`` is re-inferred in one static
FakeTensorMode, so step t gets its exact shapes (a cache of t positions); size arithmetic that becomes a plain
int (``sym_size``, ``operator.add`` on sizes) is folded into the users' arguments and shape asserts are dropped,
so the result is a static-shape graph with no symbolic dims.

Three layouts, all returning tokens ``[B, max_len]`` (``eos_id`` after a row's first EOS):

- :func:`build_full`: one flat graph, encoder + init_state + every step inlined;
- :func:`build_partition`: one flat graph of steps ``[start, stop)``: ``(token, finished, *state, *memory) ->
  (tokens [B, stop-start], token, finished, *state)``;
- :func:`build_top`: the orchestrating graph of the ``loop`` and ``partitioned`` variants, which calls the
  encoder, init_state and either the generic step graph (once per step) or the partition graphs as
  ``call_module`` submodules. It runs every step (no early stop); the decode runtime
  (:mod:`fxopt.backends.decode`) runs the same submodules with early stop.
"""
from __future__ import annotations

import operator
from typing import Any, Sequence

import torch
import torch.fx
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.fx.node import map_arg

from fxopt.errors import InputError
from fxopt.ir import cost, loops_batch, provenance
from fxopt.ir.program import set_attr
from fxopt.ir.program import fetch_attr

aten = torch.ops.aten

# Nodes that only check sizes; once every size is a concrete int they are dropped.
_ASSERTS = {t for t in (
    getattr(aten, "_assert_scalar", None), getattr(aten, "sym_constrain_range_for_size", None),
    getattr(aten, "sym_constrain_range", None), getattr(aten, "_assert_tensor_metadata", None),
) if t is not None}
_ASSERTS = {getattr(t, "default", t) for t in _ASSERTS} | {torch._assert}

ENCODE, INIT, STEP = "decode_encode", "decode_init", "decode_step"


def output_shapes_by_substitution(module: torch.fx.GraphModule,
                                  arg_vals: Sequence[Any]) -> list[tuple[tuple[int, ...], torch.dtype]] | None:
    """The ``(shape, dtype)`` of each output of ``module`` called on tensors of ``arg_vals``' static shapes,
    read off the symbolic shapes recorded at capture (a step graph's caches are ``[B, H, s, D]``, its outputs
    ``[B, H, s + 1, D]``: bind ``s`` from the arguments and evaluate), without running the graph.

    Returns None where that cannot be done exactly (a symbolic argument, an output dim not determined by the
    input dims, a non-tensor output); the caller then runs the graph in fake mode. Running a decoder's step
    graph once per step only to learn these shapes took 18 of the 30 s of capturing zoo:ocr (2026-12-03).
    """
    placeholders = [n for n in module.graph.nodes if n.op == "placeholder"]
    if len(placeholders) != len(arg_vals):
        return None
    bindings: dict[Any, int] = {}
    for node, arg in zip(placeholders, arg_vals):
        val = node.meta.get("val")
        if not isinstance(val, torch.Tensor) or not isinstance(arg, torch.Tensor) or val.dtype != arg.dtype \
                or val.dim() != arg.dim():
            return None
        for want, got in zip(val.shape, arg.shape):
            if isinstance(got, torch.SymInt):
                return None
            if isinstance(want, torch.SymInt):
                expr = want.node.expr
                if not expr.is_Symbol or bindings.setdefault(expr, int(got)) != int(got):
                    return None
            elif int(want) != int(got):
                return None
    output = next(n for n in module.graph.nodes if n.op == "output")
    outs = output.args[0]
    outs = outs if isinstance(outs, (tuple, list)) else (outs,)
    shapes = []
    for out in outs:
        val = out.meta.get("val") if isinstance(out, torch.fx.Node) else None
        if not isinstance(val, torch.Tensor):
            return None
        dims = []
        for d in val.shape:
            if isinstance(d, torch.SymInt):
                value = d.node.expr.xreplace(bindings)
                if not value.is_number:
                    return None
                dims.append(int(value))
            else:
                dims.append(int(d))
        shapes.append((tuple(dims), val.dtype))
    return shapes


def part_name(index: int) -> str:
    """The submodule name of partition ``index`` in the partitioned top graph."""
    return f"decode_part{index}"


def piece_names(plan: dict) -> list[str]:
    """The submodule names a decode plan (``region["plan"]``) runs: encoder, init, then the step
    (``loop``) or each partition (``partitioned``); none for ``full``."""
    if plan["variant"] == "full":
        return []
    return [ENCODE, INIT] + ([STEP] if plan["variant"] == "loop"
                             else [part_name(k) for k in range(len(plan["parts"] or []))])


class GraphBuilder:
    """Builds one FX graph while propagating fake values in a single static FakeTensorMode.

    ``root`` collects the weights (bound with ``set_attr``) and submodules; :meth:`module` returns the
    finished GraphModule with costs annotated. New nodes get provenance from the node they copy, with
    ``pass_name`` as the pass that made them.
    """

    def __init__(self, pass_name: str = "unroll", share: "GraphBuilder | None" = None,
                 batch_hint: int | None = None) -> None:
        """``pass_name``: recorded in every new node's provenance; ``share``: a builder whose fake mode and
        value memo to reuse (graphs built together, e.g. the partitions of one program); ``batch_hint``:
        build with a symbolic batch (example size ``batch_hint``) in a ShapeEnv-backed fake mode."""
        self.pass_name = pass_name
        self.root = torch.nn.Module()
        self.graph = torch.fx.Graph()
        self.batch_sym = share.batch_sym if share else None
        if share:
            self.mode = share.mode
        elif batch_hint is not None:
            self.mode, self.batch_sym = loops_batch.symbolic_mode(batch_hint)
        else:
            self.mode = FakeTensorMode(allow_non_fake_inputs=True)
        self._attrs: dict[str, torch.fx.Node] = {}
        # (source node, metadata of its inputs) -> value: steps inlined again reuse the values of earlier
        # steps whose inputs had the same shapes (only cache-dependent nodes are re-inferred).
        self._memo: dict[tuple, Any] = share._memo if share else {}

    # ------------------------------------------------------------------------------------------ values
    def fake(self, like: Any, batch_dim: int | None = None) -> Any:
        """A FakeTensor of this builder's mode with the shape/dtype of tensor ``like`` (fake or real); dim
        ``batch_dim`` (if given) becomes the builder's symbolic batch. SymInt sizes (of this mode) are kept."""
        if isinstance(like, torch.Tensor):
            return self.fake_of_shape(like.shape, like.dtype, batch_dim)
        return like

    def fake_of_shape(self, shape: Sequence[int], dtype: torch.dtype,
                      batch_dim: int | None = None) -> torch.Tensor:
        """A FakeTensor of ``shape`` and ``dtype`` in this builder's mode; dim ``batch_dim`` (if given and
        the builder has a symbolic batch) becomes the batch symbol."""
        dims = [d if isinstance(d, torch.SymInt) else int(d) for d in shape]
        if batch_dim is not None and self.batch_sym is not None:
            dims[batch_dim] = self.batch_sym
        with self.mode:
            return torch.empty(dims, dtype=dtype)

    def _val(self, a: Any) -> Any:
        return map_arg(a, lambda n: n.meta["val"])

    def _eval(self, target: Any, args: tuple, kwargs: dict) -> Any:
        with self.mode:
            return target(*self._val(args), **self._val(kwargs))

    # ------------------------------------------------------------------------------------------ nodes
    def placeholder(self, name: str, like: Any, batch_dim: int | None = None) -> torch.fx.Node:
        """A new input node called ``name`` whose value has the shape/dtype of ``like`` (dim ``batch_dim``
        symbolic when the builder has a symbolic batch)."""
        node = self.graph.placeholder(name)
        node.meta["val"] = self.fake(like, batch_dim)
        node.meta["provenance"] = {"source": None, "module": "", "origin": None, "pass": self.pass_name}
        return node

    def attr(self, target: str, tensor: torch.Tensor) -> torch.fx.Node:
        """The get_attr node for ``tensor`` bound at ``target`` (created once per target)."""
        node = self._attrs.get(target)
        if node is None:
            set_attr(self.root, target, tensor)
            node = self.graph.get_attr(target)
            node.meta["val"] = self.fake(tensor)
            node.meta["provenance"] = {"source": None, "module": target.rpartition(".")[0], "origin": None,
                                       "pass": self.pass_name}
            self._attrs[target] = node
        return node

    def call(self, target: Any, args: tuple, kwargs: dict | None = None,
             origin: torch.fx.Node | None = None) -> torch.fx.Node:
        """A call_function node with its fake value computed; provenance derived from ``origin``."""
        kwargs = kwargs or {}
        val = self._eval(target, args, kwargs)
        node = self.graph.call_function(target, args, kwargs)
        node.meta["val"] = val
        provenance.derive(node, origin, self.pass_name)
        return node

    def call_module(self, name: str, module: torch.fx.GraphModule, args: Sequence[torch.fx.Node]) -> list:
        """Call submodule ``module`` (bound as ``name``) on ``args``; returns one getitem node per output."""
        if not hasattr(self.root, name):
            self.root.add_module(name, module)
        arg_vals = [a.meta["val"] for a in args]
        shapes = output_shapes_by_substitution(module, arg_vals)
        if shapes is not None:
            vals = tuple(self.fake_of_shape(shape, dtype) for shape, dtype in shapes)
        else:
            with self.mode:
                out = module(*arg_vals)
            vals = tuple(self.fake(o) for o in (out if isinstance(out, (tuple, list)) else (out,)))
        node = self.graph.call_module(name, tuple(args))
        node.meta["val"] = vals
        node.meta["provenance"] = {"source": None, "module": name, "origin": None, "pass": self.pass_name}
        items = []
        for i in range(len(vals)):
            item = self.graph.call_function(operator.getitem, (node, i))
            item.meta["val"] = node.meta["val"][i]
            item.meta["provenance"] = dict(node.meta["provenance"])
            items.append(item)
        return items

    def inline(self, gm: torch.fx.GraphModule, inputs: Sequence[Any], prefix: str) -> list:
        """Copy ``gm``'s graph into this graph with its placeholders bound to ``inputs``; returns its outputs.

        Weights are bound once under ``prefix`` + their target (so inlining the same graph again shares
        them). Values are re-inferred for the current input shapes; size arithmetic that becomes a plain int
        is folded and size asserts are dropped. Outputs are nodes (or folded constants), flattened.
        """
        env: dict[torch.fx.Node, Any] = {}
        placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
        if len(placeholders) != len(inputs):
            raise InputError(f"unroll: graph takes {len(placeholders)} inputs, got {len(inputs)}")
        env.update(zip(placeholders, inputs))
        for node in gm.graph.nodes:
            if node.op == "placeholder":
                continue
            if node.op == "get_attr":
                value = fetch_attr(gm, node.target)
                if not isinstance(value, torch.Tensor):
                    raise InputError(f"unroll: '{node.target}' is a {type(value).__name__}; only graphs of "
                                     "tensors and ATen ops can be unrolled")
                env[node] = self.attr(prefix + node.target, value)
            elif node.op == "output":
                outs = node.args[0]
                outs = outs if isinstance(outs, (tuple, list)) else (outs,)
                return [env[o] if isinstance(o, torch.fx.Node) else o for o in outs]
            elif node.op == "call_function":
                if node.target in _ASSERTS:
                    continue
                args = map_arg(node.args, lambda n: env[n])
                kwargs = map_arg(node.kwargs, lambda n: env[n])
                key = _memo_key(node, args, kwargs)
                val = self._memo.get(key) if key is not None else None
                if val is None:
                    val = self._eval(node.target, args, kwargs)
                    if key is not None:
                        self._memo[key] = val
                if isinstance(val, (int, float, bool)) and not isinstance(val, torch.Tensor):
                    env[node] = val          # a size that is now a concrete number: fold it
                    continue
                new = self.graph.call_function(node.target, args, kwargs)
                new.meta["val"] = val
                provenance.derive(new, node, self.pass_name)
                env[node] = new
            else:
                raise InputError(f"unroll: cannot inline a {node.op} node ('{node.name}'); the captured "
                                 "pieces must be flat ATen graphs")
        raise InputError("unroll: graph has no output node")

    def output(self, values: Sequence[Any]) -> None:
        """Finish the graph returning the tuple ``values``."""
        self.graph.output(tuple(values))

    def module(self, what: str = "the graph") -> torch.fx.GraphModule:
        """The finished GraphModule (plain flat codegen, costs annotated). With a symbolic batch, raises
        InputError when building ``what`` specialised it."""
        gm = torch.fx.GraphModule(self.root, self.graph)
        if self.batch_sym is not None:
            loops_batch.check_symbolic(self.batch_sym, gm, what)
        cost.annotate_costs(gm)
        return gm

    def batch_size(self, region: dict, like: torch.fx.Node) -> Any:
        """The batch: ``region["batch"]`` (an int) or, with a symbolic batch, a ``sym_size(like, 0)`` node."""
        if self.batch_sym is None:
            return region["batch"]
        return self.call(aten.sym_size.int, (like, 0))

    # ------------------------------------------------------------------------------------------ greedy
    def full(self, batch: Any, value: Any, dtype: torch.dtype) -> torch.fx.Node:
        """A ``[batch]`` tensor filled with ``value`` (``batch`` an int or a SymInt-valued node)."""
        return self.call(aten.full.default, ([batch], value), {"dtype": dtype})

    def greedy_update(self, logits: torch.fx.Node, finished: torch.fx.Node, eos_full: torch.fx.Node,
                      eos_id: int) -> tuple[torch.fx.Node, torch.fx.Node]:
        """``token = where(finished, eos, argmax(logits))``, ``finished |= token == eos``; returns both."""
        top = self.call(aten.argmax.default, (logits, -1))
        token = self.call(aten.where.self, (finished, eos_full, top))
        is_eos = self.call(aten.eq.Scalar, (token, eos_id))
        finished = self.call(aten.bitwise_or.Tensor, (finished, is_eos))
        return token, finished

    def start(self, region: dict, memory: list, batch: Any) -> tuple[torch.fx.Node, torch.fx.Node, list]:
        """The token fed at step 0, the initial ``finished`` and the output columns before step 0's: BOS,
        all unfinished and none; or, when encode emitted the first token (``region["first_token"]``, a
        memory index), that token, ``token == eos`` and its column."""
        index = region.get("first_token")
        if index is None:
            return self.full(batch, region["bos_id"], torch.long), self.full(batch, False, torch.bool), []
        token = memory[index]
        finished = self.call(aten.eq.Scalar, (token, region["eos_id"]))
        return token, finished, [self.call(aten.unsqueeze.default, (token, 1))]


def _meta_key(a: Any) -> Any:
    if isinstance(a, torch.fx.Node):
        v = a.meta.get("val")
        if isinstance(v, torch.Tensor):
            return (_sizes(v.shape), _sizes(v.stride()), v.dtype, _sizes([v.storage_offset()]))
        if isinstance(v, torch.SymInt):
            return ("sym", str(v.node.expr))
        return ("node", type(v).__name__, v if isinstance(v, (int, float, bool)) else id(a))
    if isinstance(a, (tuple, list)):
        return tuple(_meta_key(x) for x in a)
    if isinstance(a, dict):
        return tuple((k, _meta_key(v)) for k, v in a.items())
    if isinstance(a, (int, float, bool, str, type(None), torch.dtype, torch.device, torch.layout,
                      torch.memory_format)):
        return a
    raise _Undescribable


def _sizes(sizes: Any) -> tuple:
    """Sizes as a hashable key (a SymInt by its expression)."""
    return tuple(str(d.node.expr) if isinstance(d, torch.SymInt) else d for d in sizes)


class _Undescribable(Exception):
    """An argument the memo cannot key on."""


def _memo_key(node: torch.fx.Node, args: tuple, kwargs: dict) -> tuple | None:
    """A key under which ``node``'s value can be reused: the source node and its inputs' metadata
    (shape, stride, dtype, offset) or scalar values; None when an argument is not describable."""
    try:
        return (id(node), _meta_key((args, kwargs)))
    except _Undescribable:
        return None


def _steps(b: GraphBuilder, region: dict, step_gm: torch.fx.GraphModule, token, finished, state: list,
           memory: list, start: int, stop: int, eos_full) -> tuple[list, Any, Any, list]:
    """Inline steps ``[start, stop)``; returns (token columns [B, 1], token, finished, state)."""
    cols = []
    for _ in range(start, stop):
        out = b.inline(step_gm, [token, *state, *memory], "step.")
        logits, state = out[0], list(out[1:])
        token, finished = b.greedy_update(logits, finished, eos_full, region["eos_id"])
        cols.append(b.call(aten.unsqueeze.default, (token, 1)))
    return cols, token, finished, state


def build_full(region: dict, max_len: int) -> torch.fx.GraphModule:
    """One flat graph: encoder, init_state and ``max_len`` steps with exact per-step shapes.

    Takes the decode-loop region (its ``encode``/``init_state``/``step`` Programs) and the step count;
    returns a GraphModule taking the encoder's flat inputs and returning ``(tokens [B, max_len],)``
    (``[B, 1 + max_len]`` when encode emits the first token).
    """
    b = GraphBuilder(batch_hint=_batch_hint(region))
    enc = region["encode"]
    inputs = _inputs(b, enc)
    memory = b.inline(enc.graph_module, inputs, "encode.")
    state = b.inline(region["init_state"].graph_module, memory, "init_state.")
    batch = b.batch_size(region, memory[0])
    token, finished, head = b.start(region, memory, batch)
    eos_full = b.full(batch, region["eos_id"], torch.long)
    cols, *_ = _steps(b, region, region["step"].graph_module, token, finished, state, memory, 0, max_len,
                      eos_full)
    b.output([b.call(aten.cat.default, (head + cols, 1))])
    return b.module("the full unroll")


def _batch_hint(region: dict) -> int | None:
    """The example batch when ``region`` was captured with a dynamic batch, else None (static)."""
    return int(region["batch"]) if region.get("dynamic_batch") else None


def _inputs(b: GraphBuilder, enc) -> list:
    """Placeholders for the encoder's flat inputs (dims that are symbolic in the encoder graph, i.e. the
    batch, symbolic in ``b``)."""
    out = []
    for p, x in zip(enc.placeholders(), enc.flat_example_inputs()):
        val = p.meta.get("val")
        dyn = [d for d, s in enumerate(getattr(val, "shape", ())) if isinstance(s, torch.SymInt)]
        out.append(b.placeholder(p.name, x, dyn[0] if dyn else None))
    return out


def state_shape(region: dict, index: int, t: int) -> list[int]:
    """Shape of state tensor ``index`` before step ``t`` (initial shape plus ``t`` times its growth)."""
    layout = region["state"][index]
    return [d + g * t for d, g in zip(layout["shape"], layout["growth"])]


def build_partition(region: dict, start: int, stop: int,
                    share: GraphBuilder | None = None) -> torch.fx.GraphModule:
    """Flat graph of steps ``[start, stop)`` with exact shapes.

    Returns a GraphModule ``(token [B], finished [B], *state, *memory) -> (tokens [B, stop-start], token,
    finished, *state)``; the state comes in with the shapes it has before step ``start``. ``share``: a
    builder whose fake mode and memo to reuse.
    """
    b = GraphBuilder(share=share, batch_hint=None if share else _batch_hint(region))
    batch = region["batch"]
    token = b.placeholder("token", b.fake_of_shape([batch], torch.long, 0))
    finished = b.placeholder("finished", b.fake_of_shape([batch], torch.bool, 0))
    state = [b.placeholder(f"state_{i}", b.fake_of_shape(state_shape(region, i, start), getattr(torch, s["dtype"]),
                                                         s.get("batch_dim")))
             for i, s in enumerate(region["state"])]
    memory = [b.placeholder(f"memory_{i}", b.fake_of_shape(m["shape"], getattr(torch, m["dtype"]),
                                                           m.get("batch_dim")))
              for i, m in enumerate(region["memory"])]
    eos_full = b.full(b.batch_size(region, token), region["eos_id"], torch.long)
    cols, token, finished, state = _steps(b, region, region["step"].graph_module, token, finished, state,
                                          memory, start, stop, eos_full)
    tokens = b.call(aten.cat.default, (cols, 1))
    b.output([tokens, token, finished, *state])
    return b.module(f"partition [{start}, {stop})")


def build_top(region: dict, parts: Sequence[tuple[int, int]] | None, max_len: int,
              pass_name: str = "unroll") -> torch.fx.GraphModule:
    """The orchestrating graph: encoder, init_state, then either the generic step graph called once per
    step (``parts=None``: the ``loop`` variant) or one partition graph per ``(start, stop)`` in ``parts``.

    Submodules are named ``decode_encode``, ``decode_init``, ``decode_step`` / ``decode_part{k}``. Returns a
    GraphModule taking the encoder's flat inputs and returning ``(tokens [B, max_len],)`` (every step runs;
    ``[B, 1 + max_len]`` when encode emits the first token).
    """
    b = GraphBuilder(pass_name, batch_hint=_batch_hint(region))
    enc = region["encode"]
    inputs = _inputs(b, enc)
    memory = b.call_module(ENCODE, enc.graph_module, inputs)
    state = b.call_module(INIT, region["init_state"].graph_module, memory)
    batch, eos_id = b.batch_size(region, memory[0]), region["eos_id"]
    token, finished, chunks = b.start(region, memory, batch)
    if parts is None:
        eos_full = b.full(batch, eos_id, torch.long)
        for _ in range(max_len):
            out = b.call_module(STEP, region["step"].graph_module, [token, *state, *memory])
            token, finished = b.greedy_update(out[0], finished, eos_full, eos_id)
            state = out[1:]
            chunks.append(b.call(aten.unsqueeze.default, (token, 1)))
    else:
        for k, (start, stop) in enumerate(parts):
            gm = build_partition(region, start, stop, share=b)
            out = b.call_module(part_name(k), gm, [token, finished, *state, *memory])
            chunks.append(out[0])
            token, finished, state = out[1], out[2], out[3:]
    b.output([b.call(aten.cat.default, (chunks, 1))])
    return b.module("the step loop" if parts is None else "the partitioned graph")
