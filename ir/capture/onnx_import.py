"""ONNX in: ``fxopt.capture("model.onnx")`` converts an ONNX model into a regular :class:`Program`.

The ONNX graph becomes an ``nn.Module`` (:class:`OnnxModule`) whose forward interprets the graph node by node
with the torch rules of :mod:`fxopt.ir.capture.onnx_ops`; that module then goes through capture's normal path
(``torch.export`` non-strict + core-ATen decomposition), so the result has core-ATen nodes, shapes, cost and
dynamic dims like any captured model. Each ONNX node runs inside its own tiny submodule, so torch.export's
``nn_module_stack`` tells which ONNX node produced every ATen node; capture's provenance then names it
(``source = "model.onnx:node 'Gemm_12' (Gemm)"``, ``module`` = the exporter's module scope).

- Initializers become parameters (floating point) or buffers; small integer constants (shapes, axes) stay
  Python values so that shape arithmetic traces (see :class:`fxopt.ir.capture.onnx_ops.Known`).
- Inputs whose dims are symbolic (``dim_param`` or unnamed) become dynamic dims (``Dim.AUTO``: export keeps
  them symbolic unless the graph pins them).
- With no example inputs, random ones are built from the input types: symbolic dims take
  :data:`DEFAULT_DYNAMIC_SIZE`, floats are standard normal, integers are in ``[0, INT_HIGH)``, bools random.

Errors (missing file, not ONNX, unsupported ops, missing external-data files, a node that cannot be
converted) are one-line :class:`~fxopt.errors.InputError`\\ s naming the file and the node.
"""
from __future__ import annotations

# local imports: onnx, onnxscript, onnxruntime and TensorRT are optional (pip install 'fxopt[onnx]'); they are imported where used, so this module loads without them
import ast
import keyword
import os
import re
from collections import ChainMap
from dataclasses import dataclass
from typing import Any

import torch

from fxopt.errors import InputError
from fxopt.ir.capture import onnx_ops
from fxopt.ir.capture.onnx_ops import DTYPES, KNOWN_LIMIT, RULES, Ctx, Known, NotKnown
from fxopt.ir.capture.onnx_ops.base import NeedsValue, trace_values
from torch.export import Dim

DEFAULT_DYNAMIC_SIZE = 2
FOLD_INPUT_LIMIT = 4096      # constants read by folding at most this many elements (not weight matrices)
FOLD_OUTPUT_LIMIT = 1 << 16  # a folded node's outputs are stored as buffers: at most this many elements each
# nodes never computed at conversion: random values, control flow, and ops whose outputs are sequences
_NOT_FOLDED = frozenset({"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Bernoulli",
                         "Multinomial", "Dropout", "SequenceEmpty", "SequenceConstruct", "SequenceInsert",
                         "SplitToSequence", "Optional", "If", "Loop", "Scan"})
INT_HIGH = 4
_DEFAULT_DOMAINS = ("", "ai.onnx")


# ---------------------------------------------------------------------------------------------- loading
def load_model(path: str):
    """Read and check an ONNX file; returns the ``onnx.ModelProto`` with external data loaded and local
    functions inlined. Raises a one-line InputError for a missing file, a file that is not ONNX, missing
    external-data files and unsupported ops."""
    import onnx

    if not os.path.isfile(path):
        raise InputError(f"{path}: no such file")
    try:
        model = onnx.load(path, load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - any parse failure is the file's fault
        raise InputError(f"{path}: not a readable ONNX model ({_first_line(exc)}); re-export it with "
                         "torch.onnx.export") from exc
    if model.ir_version <= 0 or not model.graph.output:
        raise InputError(f"{path}: not an ONNX model (no IR version or graph outputs); re-export it with "
                         "torch.onnx.export")
    _load_external_data(model, path)
    if model.functions:
        model = onnx.inliner.inline_local_functions(model)
    unsupported = unsupported_ops(model)
    if unsupported:
        kinds = ", ".join(sorted({op for op, _ in unsupported}))
        first_op, first_name = unsupported[0]
        raise InputError(f"{path}: unsupported ONNX ops: {kinds} (first: node '{first_name}' ({first_op})); "
                         f"supported: see docs/onnx-import.md, or re-export the model without them")
    return model


def _load_external_data(model, path: str) -> None:
    from onnx.external_data_helper import load_external_data_for_model, uses_external_data

    base = os.path.dirname(os.path.abspath(path))
    for t in _all_tensors(model.graph):
        if uses_external_data(t):
            info = {e.key: e.value for e in t.external_data}
            location = info.get("location", "")
            if not os.path.isfile(os.path.join(base, location)):
                raise InputError(f"{path}: external-data weights file '{location}' (initializer '{t.name}') "
                                 "is missing; keep it next to the .onnx file")
    try:
        load_external_data_for_model(model, base)
    except Exception as exc:  # noqa: BLE001
        raise InputError(f"{path}: reading its external-data weights failed: {_first_line(exc)}") from exc


def _all_tensors(graph):
    yield from graph.initializer
    for node in graph.node:
        for a in node.attribute:
            if a.HasField("t"):
                yield a.t
            for g in _subgraphs(a):
                yield from _all_tensors(g)


def _subgraphs(attr) -> list:
    graphs = [attr.g] if attr.HasField("g") else []
    return graphs + list(attr.graphs)


def _walk(graph):
    for node in graph.node:
        yield node
        for a in node.attribute:
            for g in _subgraphs(a):
                yield from _walk(g)


def unsupported_ops(model) -> list[tuple[str, str]]:
    """``[(op_type, node_name), ...]`` for every node (subgraphs included) without a rule, in graph order."""
    out = []
    for i, node in enumerate(_walk(model.graph)):
        op = node.op_type if node.domain in _DEFAULT_DOMAINS else f"{node.domain}.{node.op_type}"
        if node.domain not in _DEFAULT_DOMAINS or node.op_type not in RULES:
            out.append((op, node.name or f"{node.op_type}_{i}"))
    return out


def opset_of(model) -> int:
    """The default-domain opset the model imports (defaults to 1)."""
    for o in model.opset_import:
        if o.domain in _DEFAULT_DOMAINS:
            return o.version
    return 1


# ---------------------------------------------------------------------------------------------- inputs
def graph_inputs(model) -> list:
    """The graph's real inputs (``ValueInfoProto``), skipping old-style inputs that are initializers."""
    inits = {t.name for t in model.graph.initializer}
    return [i for i in model.graph.input if i.name not in inits]


def _input_dims(value_info) -> list:
    """Each dim as an int, or a str (its ``dim_param``, or '?' when unnamed)."""
    dims = []
    for d in value_info.type.tensor_type.shape.dim:
        if d.HasField("dim_value"):
            dims.append(d.dim_value)
        else:
            dims.append(d.dim_param or "?")
    return dims


def _input_dtype(value_info, path: str) -> torch.dtype:
    elem = value_info.type.tensor_type.elem_type
    if elem not in DTYPES:
        raise InputError(f"{path}: input '{value_info.name}' has ONNX element type {elem}, which is not supported")
    return DTYPES[elem]


def make_example_inputs(model, path: str = "model.onnx", seed: int = 0) -> tuple:
    """Random example inputs from the ONNX input types: symbolic dims → ``DEFAULT_DYNAMIC_SIZE``, floats
    standard normal, integers in ``[0, INT_HIGH)``, bools random; returns a tuple of tensors."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for vi in graph_inputs(model):
        dtype = _input_dtype(vi, path)
        shape = [d if isinstance(d, int) else DEFAULT_DYNAMIC_SIZE for d in _input_dims(vi)]
        if dtype.is_floating_point:
            out.append(torch.randn(shape, generator=gen).to(dtype))
        elif dtype == torch.bool:
            out.append(torch.randint(0, 2, shape, generator=gen).bool())
        else:
            out.append(torch.randint(0, INT_HIGH, shape, generator=gen).to(dtype))
    return tuple(out)


def dynamic_shapes_for(model) -> tuple | None:
    """``torch.export`` dynamic_shapes for the graph inputs: ``{dim: Dim.AUTO}`` for every symbolic dim;
    None when every dim is static."""

    specs, any_dynamic = [], False
    for vi in graph_inputs(model):
        spec = {i: Dim.AUTO for i, d in enumerate(_input_dims(vi)) if not isinstance(d, int)}
        any_dynamic = any_dynamic or bool(spec)
        specs.append(spec or None)
    return tuple(specs) if any_dynamic else None


def _check_inputs(model, inputs: tuple, path: str) -> tuple:
    vis = graph_inputs(model)
    inputs = tuple(torch.as_tensor(x) for x in inputs)
    if len(inputs) != len(vis):
        raise InputError(f"{path}: the model takes {len(vis)} inputs "
                         f"({', '.join(v.name for v in vis)}), got {len(inputs)} example inputs")
    for vi, x in zip(vis, inputs):
        dims = _input_dims(vi)
        dtype = _input_dtype(vi, path)
        static_ok = len(dims) == x.dim() and all(not isinstance(d, int) or d == s for d, s in zip(dims, x.shape))
        if not static_ok:
            shown = [d if isinstance(d, int) else str(d) for d in dims]
            raise InputError(f"{path}: example input '{vi.name}' has shape {list(x.shape)}, the model expects "
                             f"{shown}; pass inputs of that shape")
        if x.dtype != dtype:
            raise InputError(f"{path}: example input '{vi.name}' is {x.dtype}, the model expects {dtype}")
    return inputs


# ---------------------------------------------------------------------------------------------- the module
def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _attr_value(attr) -> Any:
    import onnx
    from onnx import helper, numpy_helper

    if attr.type == onnx.AttributeProto.TENSOR:
        return torch.from_numpy(numpy_helper.to_array(attr.t).copy())
    if attr.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS):
        return helper.get_attribute_value(attr)
    value = helper.get_attribute_value(attr)
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, list) and value and isinstance(value[0], bytes):
        return [v.decode() for v in value]
    return list(value) if isinstance(value, (list, tuple)) else value


def _identifier(name: str, taken: set) -> str:
    base = re.sub(r"\W", "_", name).strip("_") or "w"
    if base[0].isdigit():
        base = "w_" + base
    out, k = base, 1
    while out in taken:
        out, k = f"{base}_{k}", k + 1
    taken.add(out)
    return out


def module_scope(node) -> str:
    """The model-level module path an ONNX node came from: the dynamo exporter's
    ``pkg.torch.onnx.name_scopes`` metadata, or the legacy exporter's ``/blocks.0/q/Gemm`` node name."""
    for prop in node.metadata_props:
        if prop.key == "pkg.torch.onnx.name_scopes":
            try:
                scopes = ast.literal_eval(prop.value)
            except (ValueError, SyntaxError):
                break
            return str(scopes[-2]) if len(scopes) >= 2 else ""
    if node.name.startswith("/"):
        return ".".join(p for p in node.name.split("/")[1:-1] if p)
    return ""


@dataclass
class _Graph:
    """A converted ONNX (sub)graph: input/output names, nodes, and its initializers (name → Known or the
    attribute name of a registered weight)."""

    inputs: list
    outputs: list
    nodes: list
    statics: dict


@dataclass
class _Node:
    """A converted ONNX node: attributes decoded once (tensors as torch tensors, graphs as :class:`_Graph`)."""

    name: str
    op: str
    inputs: list
    outputs: list
    attrs: dict
    scope: str
    constant: Any = None  # Constant nodes: a Known or the attribute name of a registered buffer


class ValueNotKnown(InputError):
    """A node needs, while tracing, a value computed from tensor values (``node``: the :class:`_Node`);
    capture specializes the graph inputs it is computed from, when there are such, and traces again."""

    def __init__(self, message: str, node: "_Node"):
        super().__init__(message)
        self.node = node


# ops whose output depends only on the *shape* (or dtype) of these inputs: a value computed through them does
# not depend on those inputs' values
_SHAPE_ONLY = {"Shape": (0,), "Size": (0,), "EyeLike": (0,), "CastLike": (1,)}
# ops all of whose inputs are attribute-like; for the others, input 0 is the data and the rest (axes, shape,
# pads, k, sizes, ...) are attribute-like
_VALUE_INPUTS_FROM_ZERO = {"ConstantOfShape", "Range", "OneHot", "Loop"}


class _NodeCall(torch.nn.Module):
    """One top-level ONNX node as a submodule, so torch.export's nn_module_stack records which node made
    each ATen node."""

    def __init__(self, owner: "OnnxModule", index: int):
        super().__init__()
        self.index = index
        self._owner = [owner]  # a list, so the owner is not registered as a submodule (no cycle)

    def forward(self, env: Any) -> None:
        owner = self._owner[0]
        owner.run_node(owner.graph.nodes[self.index], env)


class OnnxModule(torch.nn.Module):
    """An ``nn.Module`` that runs an ONNX ``ModelProto`` with torch ops: ``forward(*inputs)`` takes the graph
    inputs in order and returns the single output, or a tuple of outputs."""

    def __init__(self, model, file: str = "model.onnx"):
        super().__init__()
        self.file = file
        self.opset = opset_of(model)
        self._taken: set = set()
        self._count = 0
        self._static_known: dict[str, Known] = {}  # small float initializers: their values, for rules to read
        self._trace_table: dict | None = None
        # graph inputs whose values the graph needs while tracing (an axes or sizes input): their example
        # values, set by capture_onnx, which guards them (see specialize_input)
        self.specialized: dict[str, Known] = {}
        top = model.graph
        inits = {t.name for t in top.initializer}
        self.graph = self._convert_graph(top, [vi.name for vi in top.input if vi.name not in inits])
        self.folded = self._fold_constants(self.graph)
        self.input_names = list(self.graph.inputs)
        self.output_names = list(self.graph.outputs)
        self.node_calls = torch.nn.ModuleDict({f"n{i}": _NodeCall(self, i) for i in range(len(self.graph.nodes))})
        self.node_info = [(n.name, n.op, n.scope) for n in self.graph.nodes]

    # ------------------------------------------------------------------ conversion
    def _convert_graph(self, graph, input_names: list) -> _Graph:
        from onnx import numpy_helper

        statics = {}
        for t in graph.initializer:
            statics[t.name] = self._add_static(t.name, torch.from_numpy(numpy_helper.to_array(t).copy()))
        nodes = [self._convert_node(n) for n in graph.node]
        return _Graph(input_names, [o.name for o in graph.output], nodes, statics)

    def _fold_constants(self, graph: _Graph) -> int:
        """Compute, once at conversion, every node fed only by constants (initializers, Constant nodes and
        nodes folded before): its outputs become statics. Exporters build pads and shapes from constants
        through ops a rank <= 1 Known cannot follow (the legacy exporter's ``F.pad`` reshapes to [-1, 2]);
        folded, they are plain constants again. Returns how many nodes were folded."""
        kept, folded = [], 0
        table: dict = {}
        self._trace_table = table  # set before fetching, so small float constants are readable by the rules
        try:
            with trace_values(table):
                values: dict = {}
                for name, v in graph.statics.items():
                    value = self._fetch(v)
                    if not isinstance(value, torch.Tensor) or value.numel() <= FOLD_INPUT_LIMIT:
                        values[name] = value
                for node in graph.nodes:
                    outs = self._try_fold(node, values)
                    if outs is None:
                        kept.append(node)
                        continue
                    folded += 1
                    for name, value in zip(node.outputs, outs):
                        if name:
                            values[name] = value
                            graph.statics[name] = value if not isinstance(value, torch.Tensor) else \
                                self._add_static("folded_" + name, value.detach().clone(), buffer=True)
        finally:
            self._trace_table = None
        graph.nodes = kept
        return folded

    def _try_fold(self, node: _Node, values: dict) -> list | None:
        """The outputs of ``node`` computed from the constant ``values``, or None when it is not foldable
        (a non-constant input, a random or control-flow op, a failure, a large or non-tensor output)."""
        if node.op in _NOT_FOLDED or any(isinstance(v, (_Graph, list)) and v and isinstance(
                v[0] if isinstance(v, list) else v, _Graph) for v in node.attrs.values()):
            return None
        if not all(name in values for name in node.inputs if name):
            return None
        if not any(node.inputs) and node.op != "Constant":
            return None
        env = dict(values)
        try:
            with torch.no_grad():
                self.run_node(node, env)
        except Exception:  # noqa: BLE001 - not foldable here; the node runs while tracing and reports then
            return None
        outs = [env.get(name) for name in node.outputs if name]
        if not all(isinstance(v, Known) or (isinstance(v, torch.Tensor) and v.numel() <= FOLD_OUTPUT_LIMIT)
                   for v in outs):
            return None
        return [env.get(name) if name else None for name in node.outputs]

    def _convert_node(self, node) -> _Node:
        import onnx

        self._count += 1
        attrs: dict = {}
        for a in node.attribute:
            if a.type == onnx.AttributeProto.GRAPH:
                attrs[a.name] = self._convert_graph(a.g, [vi.name for vi in a.g.input])
            elif a.type == onnx.AttributeProto.GRAPHS:
                attrs[a.name] = [self._convert_graph(g, [vi.name for vi in g.input]) for g in a.graphs]
            else:
                attrs[a.name] = _attr_value(a)
        out = _Node(node.name or f"{node.op_type}_{self._count}", node.op_type, list(node.input),
                    list(node.output), attrs, module_scope(node))
        if node.op_type == "ConstantOfShape" and isinstance(attrs.get("value"), torch.Tensor):
            # read at conversion: under torch.export, .item() on a tensor would be a data-dependent value
            attrs["value"] = (attrs["value"].reshape(-1)[0].item(), attrs["value"].dtype)
        if node.op_type == "Constant":
            out.constant = self._add_static("const_" + (node.output[0] or "c"), _constant_value(node), buffer=True)
        return out

    def _add_static(self, name: str, value: torch.Tensor, buffer: bool = False) -> Any:
        known = onnx_ops.known_from_tensor(value)
        if known is not None:
            return known
        attr = _identifier(name, self._taken)
        if value.dtype.is_floating_point and not buffer:
            self.register_parameter(attr, torch.nn.Parameter(value, requires_grad=False))
        else:
            self.register_buffer(attr, value, persistent=not buffer)
        if value.dim() <= 1 and value.numel() <= KNOWN_LIMIT and not value.dtype.is_complex:
            self._static_known[attr] = Known(value.reshape(-1).tolist(), tuple(value.shape), value.dtype)
        return attr

    def _fetch(self, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        t = getattr(self, value)
        if self._trace_table is not None and value in self._static_known:
            self._trace_table[id(t)] = (self._static_known[value], t)
        return t

    # ------------------------------------------------------------------ running
    def forward(self, *inputs: torch.Tensor) -> Any:
        """Run the ONNX graph on ``inputs`` (the graph inputs, in order); see :func:`to_module` for the
        subclass whose forward names them after the ONNX inputs."""
        return self.run(*inputs)

    def run(self, *inputs: torch.Tensor) -> Any:
        """Run the ONNX graph on ``inputs`` (the graph inputs, in order); returns one output or a tuple.
        Specialized inputs (:attr:`specialized`) take their example value; rules that read another graph
        input's value raise :class:`NeedsValue` naming it."""
        table: dict = {}
        self._trace_table = table
        try:
            with trace_values(table):
                env: dict = {name: self._fetch(v) for name, v in self.graph.statics.items()}
                for name, value in zip(self.input_names, inputs):
                    if name in self.specialized:
                        env[name] = self.specialized[name]
                    else:
                        env[name] = value
                        if isinstance(value, torch.Tensor):
                            table[id(value)] = (name, value)
                for i in range(len(self.graph.nodes)):
                    self.node_calls[f"n{i}"](env)
                outs = [self._output(env, name) for name in self.output_names]
        finally:
            self._trace_table = None
        return outs[0] if len(outs) == 1 else tuple(outs)

    def _output(self, env: Any, name: str) -> Any:
        value = onnx_ops.tensor(env[name])
        if isinstance(value, list):
            raise InputError(f"{self.file}: graph output '{name}' is a sequence; only tensor outputs are supported")
        return value

    def run_graph(self, graph: _Graph, inputs: list, outer: Any) -> list:
        """Run a subgraph (a Loop/If body) with ``inputs`` bound to its inputs and ``outer`` visible;
        returns its outputs."""
        env = ChainMap({name: self._fetch(v) for name, v in graph.statics.items()}, outer)
        for name, value in zip(graph.inputs, inputs):
            env[name] = value
        for node in graph.nodes:
            self.run_node(node, env)
        return [env[name] for name in graph.outputs]

    def run_node(self, node: _Node, env: Any) -> None:
        """Run one ONNX node: read its inputs from ``env``, apply its rule, store its outputs in ``env``."""
        inputs = [env[name] if name else None for name in node.inputs]
        while inputs and inputs[-1] is None:
            inputs.pop()
        ctx = Ctx(name=node.name, op=node.op, opset=self.opset, file=self.file, run_graph=self.run_graph,
                  env=env, n_outputs=len(node.outputs), constant=lambda: self._fetch(node.constant))
        try:
            outs = RULES[node.op](ctx, inputs, node.attrs)
        except InputError:
            raise
        except NotKnown as exc:
            raise ValueNotKnown(f"{self.file}: node '{node.name}' ({node.op}) cannot be converted: {exc}",
                                node) from exc
        except Exception as exc:  # noqa: BLE001 - every failure names the ONNX node
            raise InputError(f"{self.file}: node '{node.name}' ({node.op}) failed to convert: "
                             f"{type(exc).__name__}: {_first_line(exc)}") from exc
        for name, value in zip(node.outputs, outs):
            if name:
                env[name] = value


def _constant_value(node) -> torch.Tensor:
    from onnx import numpy_helper

    for a in node.attribute:
        if a.name == "value":
            return torch.from_numpy(numpy_helper.to_array(a.t).copy())
        if a.name == "value_float":
            return torch.tensor(a.f, dtype=torch.float32)
        if a.name == "value_int":
            return torch.tensor(a.i, dtype=torch.int64)
        if a.name == "value_floats":
            return torch.tensor(list(a.floats), dtype=torch.float32)
        if a.name == "value_ints":
            return torch.tensor(list(a.ints), dtype=torch.int64)
    raise InputError(f"Constant node '{node.name}': only value/value_float(s)/value_int(s) are supported")


# ---------------------------------------------------------------------------------------------- capture
def to_module(path: str) -> tuple[OnnxModule, Any]:
    """Load ``path`` and build its :class:`OnnxModule`; returns ``(module, model_proto)``. The module's
    forward takes the graph inputs as parameters named after them (so the captured placeholders are too)."""
    model = load_model(path)
    module = OnnxModule(model, file=os.path.basename(path))
    taken: set = {"self"}
    names = []
    for name in module.input_names:
        ident = _identifier(name, taken)
        if keyword.iskeyword(ident):
            ident = _identifier(ident + "_", taken)
        names.append(ident)
    params = ", ".join(names)
    namespace: dict = {}
    # names are checked identifiers, so this only defines `forward(self, a, b): return self.run(a, b)`
    exec(f"def forward(self, {params}):\n    return self.run({params})\n", namespace)  # noqa: S102
    cls = type("OnnxModel", (OnnxModule,), {"forward": namespace["forward"],
                                            "__doc__": OnnxModule.__doc__})
    module.__class__ = cls
    return module, model


def capture_onnx(path: str, example_inputs: Any = None, *, dynamic_shapes: Any = None):
    """Capture an ONNX file as a :class:`~fxopt.ir.program.Program` (what ``fxopt.capture("m.onnx")`` calls).

    ``example_inputs``: a tuple of tensors in graph-input order (default: random ones from the input types,
    see :func:`make_example_inputs`); ``dynamic_shapes``: as for torch.export (default: every symbolic ONNX
    dim dynamic). Returns the Program; raises a one-line InputError naming the file (and node) on failure.
    """
    from fxopt.ir import capture as cap  # local: capture imports this module

    path = os.fspath(path)
    module, model = to_module(path)
    if example_inputs is None:
        inputs = make_example_inputs(model, path)
    else:
        inputs = _check_inputs(model, cap._as_tuple(example_inputs), path)
    if dynamic_shapes is None:
        dynamic_shapes = dynamic_shapes_for(model)
    while True:
        try:
            ep = cap._export(module, inputs, {}, dynamic_shapes, path)
            break
        except NeedsValue as need:  # an axes/k/sizes input: trace again with its example value
            specialize_input(module, need, inputs, path)
        except ValueNotKnown as missing:  # computed from graph inputs: specialize those, or report it
            sources = value_sources(module, missing.node, inputs)
            if not sources:
                raise InputError(str(missing)) from None
            for name in sources:
                value = inputs[module.input_names.index(name)]
                module.specialized[name] = Known(value.reshape(-1).tolist(), tuple(value.shape), value.dtype)
    name = os.path.basename(path)[: -len(".onnx")] or "model"
    program = cap.program_from_exported(ep, inputs, name=name, source=path, original=module)
    name_onnx_nodes(program, module)
    guard_specialized_inputs(program, module)
    return program


def value_sources(module: OnnxModule, node: _Node, inputs: tuple) -> list[str]:
    """The graph inputs whose *values* the attribute-like inputs of ``node`` are computed from (walking the
    graph back, into If/Loop bodies, not through ops that read only shapes) and that can be specialized (rank <= 1, at
    most KNOWN_LIMIT elements, integers or float scalars, not yet specialized); ``[]`` when there are none."""
    producers = {out: n for n in _all_nodes(module.graph) for out in n.outputs if out}
    start = node.inputs if node.op in _VALUE_INPUTS_FROM_ZERO or len(node.inputs) == 1 else node.inputs[1:]
    stack, seen, found = [name for name in start if name], set(), []
    while stack:
        name = stack.pop()
        if name in seen:
            continue
        seen.add(name)
        if name in module.input_names:
            found.append(name)
            continue
        producer = producers.get(name)
        if producer is None:
            continue
        skip = _SHAPE_ONLY.get(producer.op, None)
        stack += [v for i, v in enumerate(producer.inputs) if v and (skip is None or i not in skip)]
        for value in producer.attrs.values():  # an If/Loop body reads outer values by name
            for sub in value if isinstance(value, list) else [value]:
                if isinstance(sub, _Graph):
                    stack += [v for n in _all_nodes(sub) for v in n.inputs if v]
    out = []
    for name in found:
        value = inputs[module.input_names.index(name)]
        # attribute-like values are integers (axes, sizes, pads) or float scalars (Range's bounds); a float
        # vector is data (specializing it would bake the data into the graph)
        value_like = not value.dtype.is_floating_point or value.dim() == 0
        if name not in module.specialized and value_like and value.dim() <= 1 and value.numel() <= KNOWN_LIMIT:
            out.append(name)
    return out


def _all_nodes(graph: _Graph):
    """Every node of ``graph`` and of its subgraphs (ONNX names are unique across scopes)."""
    for node in graph.nodes:
        yield node
        for value in node.attrs.values():
            for sub in value if isinstance(value, list) else [value]:
                if isinstance(sub, _Graph):
                    yield from _all_nodes(sub)


def specialize_input(module: OnnxModule, need: NeedsValue, inputs: tuple, path: str) -> None:
    """Fix graph input ``need.name`` to its example value in ``inputs`` (the ONNX graph reads its values while
    tracing: an ``axes``, ``k``, ``pads`` or ``sizes`` given as a graph input). Raises a one-line InputError
    when the value cannot be held (more than KNOWN_LIMIT elements, rank > 1) or was already fixed."""
    index = module.input_names.index(need.name)
    value = inputs[index]
    if need.name in module.specialized:
        raise InputError(f"{path}: graph input '{need.name}' was specialized and is still read at run time")
    if value.dim() > 1 or value.numel() > KNOWN_LIMIT:
        raise InputError(f"{path}: graph input '{need.name}' ({list(value.shape)}) gives a node's {need.what}, "
                         f"which must be known while tracing; make it an initializer (a constant) in the model")
    module.specialized[need.name] = Known(value.reshape(-1).tolist(), tuple(value.shape), value.dtype)


def guard_specialized_inputs(program, module: OnnxModule) -> None:
    """Record each specialized input's value on its placeholder (``meta["input_value"]``): running the
    program or its artifact with another value is then a one-line error instead of a silently wrong result."""
    placeholders = program.placeholders()
    for name, known in module.specialized.items():
        index = module.input_names.index(name)
        if index < len(placeholders):
            placeholders[index].meta["input_value"] = list(known.data)


def name_onnx_nodes(program, module: OnnxModule) -> int:
    """Point every captured node's provenance at the ONNX node it came from
    (``source = "model.onnx:node 'Gemm_12' (Gemm)"``, ``module`` = the exporter's scope); returns how many."""
    count = 0
    for node in program.graph.nodes:
        stack = node.meta.get("nn_module_stack") or {}
        index = None
        for path, _type in stack.values():
            m = re.fullmatch(r"node_calls\.n(\d+)", str(path))
            if m:
                index = int(m.group(1))
        if index is None:
            continue
        name, op, scope = module.node_info[index]
        prov = dict(node.meta.get("provenance") or {})
        prov.update({"source": f"{module.file}:node '{name}' ({op})", "module": scope})
        node.meta["provenance"] = prov
        count += 1
    return count
