"""Export one partition GraphModule to ONNX, and check an ONNX model against the onnx-tensorrt support matrix.

Export. A partition module (``backends.partitioned.StagePlan.module``) is already a flat core-ATen FX graph
whose nodes carry ``meta["val"]``, so it is handed to ``torch.onnx``'s dynamo exporter *without tracing it
again*: :func:`to_exported_program` wraps it as a ``torch.export.ExportedProgram`` (weights read with
``get_attr`` become lifted constant inputs), and :func:`export_module` translates it with the exporter's
torchlib registry (``torch.onnx._internal.exporter``; the public ``torch.onnx.export(..., dynamo=True)`` is
the fallback when that internal entry point moves). Re-running ``torch.export`` plus the exporter's own
decompositions cost 5-10 s per zoo model here and changed nothing for graphs that are core ATen already;
ops the registry lacks still go through its decomposition table. Dynamic dims (SymInts in the placeholders'
``val``) become ONNX ``dim_param`` names. The ONNX graph is then optimized (onnxscript: constant folding,
dead nodes).

Support check. :func:`unsupported_nodes` walks every node of the model, nested subgraphs of If/Loop/Scan
included, against ``ir/targets/data/tensorrt_onnx_ops.json`` (the onnx-tensorrt operator matrix): the op must be
in the default ONNX domain, marked supported, and take its first input's element type. Every ONNX node the
exporter makes records the FX node it came from (``pkg.torch.onnx.fx_node`` metadata); :class:`Unsupported`
maps that back to the ATen op and the model's source line (the node's ``provenance``).
"""
from __future__ import annotations

# local imports: onnx, onnxscript, onnxruntime and TensorRT are optional (pip install 'fxopt[onnx]'); they are imported where used, so this module loads without them
import contextlib
import functools
import io
import logging
import operator
import re
import warnings
from dataclasses import dataclass, field
from typing import Any, Iterator

import torch
import torch.fx
import torch.utils._pytree as pytree

from fxopt.errors import BackendError
from fxopt.ir.provenance import source_of
from fxopt.ir.program import fetch_attr
from torch.export import graph_signature as gs
from torch.export.exported_program import ExportedProgram, ModuleCallEntry, ModuleCallSignature
from torch.utils._sympy.value_ranges import ValueRanges
from fxopt.ir.targets import tensorrt_operators

__all__ = ["OnnxExport", "Unsupported", "to_exported_program", "export_module", "unsupported_nodes",
           "walk_nodes", "dynamic_axes", "onnx_ops", "inline_functions", "ONNX_ELEM_TYPES"]

#: ONNX TensorProto element type -> the names the onnx-tensorrt matrix uses.
ONNX_ELEM_TYPES = {1: "FP32", 2: "UINT8", 3: "INT8", 5: "INT16", 6: "INT32", 7: "INT64", 9: "BOOL",
                   10: "FP16", 11: "FP64", 16: "BF16", 4: "UINT16", 12: "UINT32", 13: "UINT64", 8: "STRING"}

_ASSERTIONS = ("_assert_tensor_metadata", "_assert_scalar", "_assert_async", "sym_constrain_range_for_size",
               "sym_constrain_range")
# ops whose first input is a shape or indices, not the data the matrix's type list is about
_INDEX_FIRST = frozenset({"ConstantOfShape", "OneHot"})
_FX_NODE = re.compile(r"^%([A-Za-z_][A-Za-z0-9_]*)\s*:")


@dataclass
class OnnxExport:
    """One exported partition: ``model`` (``onnx.ModelProto``, weights inside), its ``opset``, the ONNX
    input/output names (input names are the partition's input value names), ``dynamic`` (``{input name:
    {axis: symbol}}``) and ``origins`` (``{fx node name: {"aten", "source", "module"}}`` of the partition's
    nodes, for reports)."""

    model: Any
    opset: int
    input_names: list[str]
    output_names: list[str]
    dynamic: dict[str, dict[int, str]] = field(default_factory=dict)
    origins: dict[str, dict] = field(default_factory=dict)


@dataclass(frozen=True)
class Unsupported:
    """An ONNX node TensorRT cannot take: ``onnx_op``, ``reason``, and where it came from (``aten`` op,
    ``source`` line of the model, ``fx_node`` name; "?" when the exporter recorded nothing) and the
    ``subgraph`` path ("" for the main graph, e.g. "Loop n3/body")."""

    onnx_op: str
    reason: str
    aten: str
    source: str
    fx_node: str
    subgraph: str = ""

    def line(self) -> str:
        """One line: ``ONNX Loop (aten._embedding_bag.default, zoo/ranking.py:118): not in ...``."""
        where = f" in {self.subgraph}" if self.subgraph else ""
        return f"ONNX {self.onnx_op}{where} (from {self.aten} at {self.source}): {self.reason}"


# ------------------------------------------------------------------------------------------ export
def _attr_value(gm: torch.fx.GraphModule, target: str) -> torch.Tensor:

    return fetch_attr(gm, target)


_SPLITS = (torch.ops.aten.split_with_sizes.default, torch.ops.aten.split.Tensor)


def split_as_slices(node: torch.fx.Node) -> dict[torch.fx.Node, tuple[int, int, int]] | None:
    """``{getitem user: (dim, start, end)}`` when ``node`` is a split with static sizes whose every user
    takes one piece, else None. The exporter turns such a split into ONNX ``SplitToSequence`` where the
    pieces are used apart, which TensorRT's parser rejects although split itself is supported there; the same
    pieces as ``Slice`` ops are what TensorRT takes (one support truth: what split{target=tensorrt} sends,
    the exporter emits as supported ONNX)."""
    if node.op != "call_function" or node.target not in _SPLITS or not node.users:
        return None
    if not all(u.op == "call_function" and u.target is operator.getitem and isinstance(u.args[1], int)
               for u in node.users):
        return None
    val = node.args[0].meta.get("val") if isinstance(node.args[0], torch.fx.Node) else None
    dim = node.args[2] if len(node.args) > 2 else node.kwargs.get("dim", 0)
    if not isinstance(val, torch.Tensor) or not isinstance(dim, int):
        return None
    dim %= val.dim()
    size = val.shape[dim]
    if not isinstance(size, int):
        return None
    if node.target is torch.ops.aten.split.Tensor:
        step = node.args[1]
        if not isinstance(step, int) or step <= 0:
            return None
        sizes = [min(step, size - start) for start in range(0, size, step)]
    else:
        sizes = list(node.args[1])
    if not all(isinstance(k, int) for k in sizes):
        return None
    starts = [sum(sizes[:i]) for i in range(len(sizes))]
    return {u: (dim, starts[u.args[1]], starts[u.args[1]] + sizes[u.args[1]]) for u in node.users}


def to_exported_program(gm: torch.fx.GraphModule, name: str = "partition"):
    """Wrap the flat core-ATen partition module ``gm`` (placeholders = inputs, ``get_attr`` weights, output
    tuple; every node with ``meta["val"]``) as a ``torch.export.ExportedProgram`` without re-tracing: weights
    become lifted constant inputs, ``gm`` is left untouched. Returns the ExportedProgram; BackendError when a
    node lacks its ``val``."""

    g = torch.fx.Graph()
    env: dict[torch.fx.Node, torch.fx.Node] = {}
    in_specs, constants, used = [], {}, set()
    nodes = list(gm.graph.nodes)
    for n in nodes:
        if n.op != "get_attr":
            continue
        value = _attr_value(gm, n.target)
        stem = "c_" + re.sub(r"\W", "_", n.target)
        p = g.placeholder(stem)
        val = n.meta.get("val", value)
        if isinstance(val, torch.Tensor) and val.requires_grad:
            # an inference constant: a parameter's requires_grad would make the exporter's decompositions
            # trace autograd through it (a batch-norm weight deduped with its running_var fails there)
            val = val.detach()
        p.meta = {**n.meta, "val": val}
        env[n] = p
        in_specs.append(gs.InputSpec(gs.InputKind.CONSTANT_TENSOR, gs.TensorArgument(p.name), target=n.target))
        constants[n.target] = value.detach() if isinstance(value, torch.Tensor) else value
        used.add(p.name)
    for n in nodes:
        if n.op == "placeholder":
            if "val" not in n.meta:
                raise BackendError(f"{name}: input '{n.name}' has no recorded shape (meta['val']); "
                                   "re-capture the model with fxopt.capture")
            p = g.placeholder(n.name)
            p.meta = dict(n.meta)
            env[n] = p
            val = n.meta["val"]
            arg = gs.TensorArgument(p.name) if isinstance(val, torch.Tensor) else gs.SymIntArgument(p.name)
            in_specs.append(gs.InputSpec(gs.InputKind.USER_INPUT, arg, target=None))
    out_specs = []
    for n in nodes:
        if n.op in ("placeholder", "get_attr"):
            continue
        if n.op == "output":
            outs = n.args[0] if isinstance(n.args[0], (tuple, list)) else (n.args[0],)
            g.output(tuple(env[a] for a in outs))
            out_specs = [gs.OutputSpec(gs.OutputKind.USER_OUTPUT, gs.TensorArgument(env[a].name), target=None)
                         for a in outs]
            continue
        if n.op == "call_function" and isinstance(n.target, torch._ops.OpOverload) \
                and n.target._opname in _ASSERTIONS and not n.users:
            continue  # metadata checks: the exporter drops them anyway, and they have no val
        if n in env:
            continue   # a getitem already emitted as a slice of its split
        if n.op == "call_function" and "val" not in n.meta:
            raise BackendError(f"{name}: node '{n.name}' has no recorded shape (meta['val']); run it through "
                               "fxopt.optimize, which fills them in")
        slices = split_as_slices(n)
        if slices is not None:
            for user, (dim, start, end) in slices.items():
                env[user] = g.call_function(torch.ops.aten.slice.Tensor, (env[n.args[0]], dim, start, end))
                env[user].meta = dict(user.meta)
            continue
        env[n] = g.node_copy(n, lambda a: env[a])
        if n.target is torch.ops.aten.sort.stable:
            # ONNX TopK breaks ties by the lower index (its spec, since opset 11): the stable order, which
            # the exporter's sort (TopK) then gives; torchlib translates only the default overload
            dim = n.kwargs.get("dim", -1)
            env[n].target = torch.ops.aten.sort.default
            env[n].args, env[n].kwargs = (env[n].args[0], dim, n.kwargs.get("descending", False)), {}
    root = torch.fx.GraphModule(torch.nn.Module(), g)
    # the call signature (flat user inputs in, a tuple out): the exporter's own decompositions rebuild the
    # module from it (ExportedProgram.module() reads call_spec), e.g. for an unbind or sdpa in the partition
    user_inputs = [spec.arg for spec in in_specs if spec.kind == gs.InputKind.USER_INPUT]
    signature = ModuleCallSignature(
        inputs=user_inputs, outputs=[spec.arg for spec in out_specs],
        in_spec=pytree.tree_flatten((tuple(range(len(user_inputs))), {}))[1],
        out_spec=pytree.tree_flatten(tuple(range(len(out_specs))))[1],
        forward_arg_names=[arg.name for arg in user_inputs])
    return ExportedProgram(root=root, graph=root.graph, graph_signature=gs.ExportGraphSignature(in_specs, out_specs),
                           state_dict={}, range_constraints=_range_constraints(nodes),
                           module_call_graph=[ModuleCallEntry("", signature)], constants=constants)


def _range_constraints(nodes: list[torch.fx.Node]) -> dict:

    out = {}
    for n in nodes:
        val = n.meta.get("val")
        if isinstance(val, torch.Tensor):
            for d in val.shape:
                if isinstance(d, torch.SymInt) and d.node.expr.is_Symbol:
                    rng = d.node.shape_env.var_to_range.get(d.node.expr, ValueRanges(2, int(1e9)))
                    out[d.node.expr] = rng
    return out


def dynamic_axes(gm: torch.fx.GraphModule) -> dict[str, dict[int, str]]:
    """``{input name: {axis: symbol}}`` for the placeholders of ``gm`` whose ``val`` has symbolic dims."""
    out: dict[str, dict[int, str]] = {}
    for n in gm.graph.nodes:
        val = n.meta.get("val") if n.op == "placeholder" else None
        if isinstance(val, torch.Tensor):
            axes = {i: str(d.node.expr) for i, d in enumerate(val.shape) if isinstance(d, torch.SymInt)}
            if axes:
                out[n.name] = axes
    return out


def _origins(gm: torch.fx.GraphModule) -> dict[str, dict]:
    out = {}
    for n in gm.graph.nodes:
        if n.op != "call_function":
            continue
        prov = n.meta.get("provenance") or {}
        out[n.name] = {"aten": str(n.target).replace("aten::", "aten."), "source": source_of(n, "?"),
                       "module": prov.get("module") or ""}
    return out


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """Silence the exporter's progress prints, warnings and log lines (it reports through exceptions)."""
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "onnxscript", "onnx_ir", "torch.export")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, lvl in zip(loggers, levels):
            lg.setLevel(lvl)


def export_module(gm: torch.fx.GraphModule, name: str = "partition", optimize: bool = True) -> OnnxExport:
    """Export the partition module ``gm`` (see :func:`to_exported_program`) to ONNX; returns an
    :class:`OnnxExport`. Raises BackendError (one line, naming ``name``) when the exporter fails."""
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as exc:
        raise BackendError(f"{name}: ONNX export needs the 'onnx' and 'onnxscript' packages "
                           f"(pip install 'fxopt[onnx]'): {exc}") from None
    ep = to_exported_program(gm, name)
    try:
        with _quiet_exporter():
            program = _translate(ep)
            if optimize:
                program.optimize()
            proto = program.model_proto
            if proto.functions:  # torchlib functions left as calls (no optimizer run): inline them, so
                proto = inline_functions(proto)  # the check and TensorRT see plain ONNX ops
    except BackendError:
        raise
    except Exception as exc:  # noqa: BLE001 - the exporter raises many kinds
        first = (str(exc).strip().splitlines() or ["?"])[0][:300]
        raise BackendError(f"{name}: torch.onnx could not export the partition: {type(exc).__name__}: {first}; "
                           "keep the failing op on the CPU with split{target=tensorrt}") from exc
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 0)
    return OnnxExport(model=proto, opset=int(opset), input_names=[i.name for i in proto.graph.input],
                      output_names=[o.name for o in proto.graph.output], dynamic=dynamic_axes(gm),
                      origins=_origins(gm))


@functools.lru_cache(maxsize=1)
def _registry():
    """The exporter's torchlib registry and the set of ATen overloads it implements (built once: ~1-4 s)."""
    from torch.onnx._internal.exporter import _decomp, _registration

    with _quiet_exporter():
        registry = _registration.ONNXRegistry.from_torchlib()
    return registry, frozenset(_decomp.get_onnx_implemented_overloads(registry))


def inline_functions(model):
    """Return ``model`` (ModelProto) with its local functions inlined; every inlined node carries the
    metadata (``pkg.torch.onnx.fx_node``, stack trace) of the call it came from, so reports still name
    the ATen op and source line. ``model`` is not modified."""
    import onnx
    import onnx.inliner

    out = onnx.ModelProto()
    out.CopyFrom(model)
    functions = {(f.domain, f.name): f for f in out.functions}
    made: list = []
    _specialize(out.graph.node, functions, None, made)
    del out.functions[:]
    out.functions.extend(made)
    return onnx.inliner.inline_local_functions(out)


def _specialize(nodes, functions: dict, meta, made: list) -> None:
    """Give each call of a local function its own copy whose nodes inherit the call's metadata."""
    for node in nodes:
        if meta is not None and not node.metadata_props:
            node.metadata_props.extend(meta)
        for attr in node.attribute:
            for sub in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                _specialize(sub.node, functions, list(node.metadata_props) or meta, made)
        fn = functions.get((node.domain, node.op_type))
        if fn is None:
            continue
        copy = type(fn)()
        copy.CopyFrom(fn)
        copy.name = f"{fn.name}__call{len(made)}"
        made.append(copy)
        node.op_type = copy.name
        _specialize(copy.node, functions, list(node.metadata_props) or meta, made)


def _translate(ep):
    """ExportedProgram -> torch ONNXProgram, skipping the decomposition pass when every op is implemented."""
    try:
        from torch.onnx._internal.exporter import _core, _fx_passes
    except ImportError:  # pragma: no cover - torch moved its internals: use the public (slower) route
        return torch.onnx.export(ep, (), dynamo=True, optimize=False, verbose=False)
    registry, implemented = _registry()
    missing = [n for n in ep.graph.nodes if n.op == "call_function"
               and isinstance(n.target, torch._ops.OpOverload) and n.target not in implemented
               and n.target._opname not in _ASSERTIONS]
    if missing:
        ep = _core._prepare_exported_program_for_export(ep, registry=registry)
    else:
        with torch.fx.experimental._config.patch(backed_size_oblivious=True):
            _fx_passes.insert_type_promotion_nodes(ep.graph_module)
            _fx_passes.remove_assertion_nodes(ep.graph_module)
    return _core._exported_program_to_onnx_program(ep, registry=registry)


# ------------------------------------------------------------------------------------------ support walk
def walk_nodes(graph, path: str = "") -> Iterator[tuple[Any, str, dict[str, int]]]:
    """Yield ``(node, subgraph path, {value name: elem type})`` for every node of the ONNX ``graph``
    (``onnx.GraphProto``) and of every subgraph nested in its attributes (If/Loop/Scan bodies), depth first.
    Element types come from the graph's inputs, initializers, value_info and outputs, outer scopes included."""
    yield from _walk(graph, path, {})


def _walk(graph, path: str, outer: dict[str, int]):
    types = dict(outer)
    for vi in list(graph.input) + list(graph.value_info) + list(graph.output):
        if vi.type.HasField("tensor_type") and vi.type.tensor_type.elem_type:
            types[vi.name] = vi.type.tensor_type.elem_type
    for init in graph.initializer:
        types[init.name] = init.data_type
    for node in graph.node:
        if node.op_type == "Constant":
            for a in node.attribute:
                if a.name == "value" and a.HasField("t"):
                    types[node.output[0]] = a.t.data_type
        yield node, path, types
        for a in node.attribute:
            subs = [a.g] if a.HasField("g") else list(a.graphs)
            for k, sub in enumerate(subs):
                label = f"{node.op_type} {node.name or '?'}/{a.name}" + (f"[{k}]" if len(subs) > 1 else "")
                yield from _walk(sub, f"{path}/{label}" if path else label, types)


def onnx_ops(model) -> dict[str, int]:
    """``{op_type: count}`` over every node of ``model`` (ModelProto), nested subgraphs included."""
    counts: dict[str, int] = {}
    for node, _, _ in walk_nodes(model.graph):
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return dict(sorted(counts.items()))


def _origin_of(node, origins: dict[str, dict]) -> tuple[str, str, str]:
    meta = {p.key: p.value for p in getattr(node, "metadata_props", [])}
    match = _FX_NODE.match(meta.get("pkg.torch.onnx.fx_node", ""))
    fx_name = match.group(1) if match else ""
    if fx_name in origins:
        o = origins[fx_name]
        return o["aten"], o["source"], fx_name
    target = re.search(r"target=([^\]]+)\]", meta.get("pkg.torch.onnx.fx_node", ""))
    aten = target.group(1).replace("torch.ops.aten.", "aten.") if target else "?"
    stack = re.findall(r'File "([^"]+)", line (\d+)', meta.get("pkg.torch.onnx.stack_trace", ""))
    source = f"{stack[0][0]}:{stack[0][1]}" if stack else "?"
    return aten, source, fx_name or "?"


def unsupported_nodes(model, origins: dict[str, dict] | None = None, matrix: dict | None = None
                      ) -> list[Unsupported]:
    """The nodes of ``model`` (ModelProto, shape-inferred or not) that the onnx-tensorrt matrix rejects,
    nested subgraphs included; ``origins`` as in :class:`OnnxExport`; ``matrix`` defaults to
    :func:`fxopt.ir.targets.tensorrt_operators`. Returns a list of :class:`Unsupported` (empty: all
    supported; ops the matrix lacks come before dtype mismatches)."""
    import onnx

    if matrix is None:

        matrix = tensorrt_operators()
    origins = origins or {}
    try:
        inferred = onnx.shape_inference.infer_shapes(model, check_type=False, strict_mode=False)
    except Exception:  # noqa: BLE001 - types are a bonus; ops are still checked
        inferred = model
    found = []
    for node, path, types in walk_nodes(inferred.graph):
        reason = _reject(node, types, matrix)
        if reason:
            aten, source, fx_name = _origin_of(node, origins)
            found.append(Unsupported(node.op_type, reason, aten, source, fx_name, path))
    # ops TensorRT lacks outright first, then dtype mismatches: the first entry is what a report names
    return sorted(found, key=lambda u: "does not take" in u.reason)


def _reject(node, types: dict[str, int], matrix: dict) -> str | None:
    if node.domain not in ("", "ai.onnx"):
        return f"custom domain '{node.domain}' is not in the onnx-tensorrt matrix"
    info = matrix.get(node.op_type)
    if info is None:
        return "not listed in the onnx-tensorrt operator matrix"
    if not info.get("supported"):
        return "marked unsupported in the onnx-tensorrt operator matrix"
    allowed = info.get("types") or []
    first = node.input[0] if node.input and node.op_type not in _INDEX_FIRST else ""
    if allowed and first and first in types:
        name = ONNX_ELEM_TYPES.get(types[first], str(types[first]))
        if name not in allowed:
            return f"onnx-tensorrt's {node.op_type} does not take {name} (takes {', '.join(allowed)})"
    return None
