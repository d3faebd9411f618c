"""`Program`: the unit every pass and backend works on.

A Program is a *flat* ATen-level FX GraphModule (placeholders are the flattened user inputs, the output node
returns a tuple of tensors) plus what passes need around it:

- ``example_inputs`` / ``example_kwargs``: the user-level example inputs (a positional tuple, and keyword
  inputs as a dict) used for verification;
- ``in_spec`` / ``out_spec``: pytree specs mapping user-level args/results to the flat graph and back;
- ``dynamic_dims``: for each symbolic dim, which input dim it came from (``{"s0": [("x", 0)]}``);
- ``regions``: loop regions and other structure recorded by capture or passes (e.g. the decode loop);
- ``reports`` / ``trace``: what the pass manager recorded.

Per node, ``node.meta`` carries ``"val"`` (FakeTensor), ``"provenance"``, ``"cost"`` and, once split has run,
``"placement"``. FX stays the source of truth; :meth:`Program.to_networkx` is a view for graph algorithms.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import networkx as nx
import torch
import torch.fx
import torch.utils._pytree as pytree
from torch.fx.graph_module import _WrappedCall

from fxopt.errors import InputError
from fxopt.ir.gc_pause import collections_paused


def signature_text(spec: Any) -> str:
    """An ``(args, kwargs)`` TreeSpec in a few words, for one-line errors: "2 positional arguments and keyword
    'mask' (3 leaves in all)"."""
    try:
        args, kwargs = spec.children_specs
        text = f"{args.num_children} positional argument{'s' if args.num_children != 1 else ''}"
        if kwargs.context:
            text += f" and keyword{'s' if len(kwargs.context) > 1 else ''} " + ", ".join(
                repr(k) for k in kwargs.context)
        return f"{text} ({spec.num_leaves} {'leaf' if spec.num_leaves == 1 else 'leaves'} in all)"
    except (AttributeError, TypeError, ValueError):
        return f"{getattr(spec, 'num_leaves', '?')} leaves"


@dataclass
class Program:
    """A flat FX GraphModule plus the example inputs, pytree specs and metadata that passes need."""

    graph_module: torch.fx.GraphModule
    example_inputs: tuple
    in_spec: Any = None
    out_spec: Any = None
    name: str = "model"
    source: str = ""
    dynamic_dims: dict = field(default_factory=dict)
    target: str = "reference"
    regions: list = field(default_factory=list)
    reports: list = field(default_factory=list)
    trace: Any = None  # a fxopt.ir.trace.Trace after optimize; see trace_json()
    # The module the user handed us (never modified); kept for numeric checks against the original.
    original: Any = field(default=None, repr=False)
    # True when the graph changed since the last recompile (see ``ensure_compiled``).
    dirty: bool = False
    # What capture wants the user told, one line each (e.g. that a model in train mode was captured in
    # eval mode); saved in the artifact's manifest as ``capture_notes``.
    notes: list = field(default_factory=list)
    # Keyword example inputs (``model(**batch)``), beside the positional ``example_inputs``.
    example_kwargs: dict = field(default_factory=dict)
    # How capture built the graph when it did not export the whole model at once (block-wise capture:
    # "captured block-wise: 6 blocks from 1 export(s) (ConformerBlock x6)"); "" for whole-model export.
    capture_summary: str = ""

    # ----------------------------------------------------------------- running
    def flatten_inputs(self, args: tuple, kwargs: dict | None = None) -> list:
        """Flatten user-level ``args``/``kwargs`` to the graph's placeholder order; checks the structure."""
        flat, spec = pytree.tree_flatten((tuple(args), dict(kwargs or {})))
        if self.in_spec is not None and spec != self.in_spec:
            raise InputError(f"inputs to '{self.name}' do not match the captured signature: expected "
                             f"{signature_text(self.in_spec)}, got {signature_text(spec)}; pass inputs shaped "
                             "like the example inputs")
        return flat

    def unflatten_outputs(self, flat_outputs) -> Any:
        """Turn the graph's flat output tuple back into the model's output structure."""
        if self.out_spec is None:
            return flat_outputs
        return pytree.tree_unflatten(list(flat_outputs), self.out_spec)

    def ensure_compiled(self) -> None:
        """Regenerate the GraphModule's Python code if a pass changed the graph (lazy recompile)."""
        if self.dirty:
            self.graph_module.recompile()
            self.dirty = False

    def run_flat(self, flat_inputs) -> tuple:
        """Run the graph on flat inputs and return its flat outputs as a tuple."""
        self.ensure_compiled()
        with torch.no_grad():
            out = self.graph_module(*flat_inputs)
        return tuple(out) if isinstance(out, (tuple, list)) else (out,)

    def __call__(self, *args, **kwargs):
        """Run the program like the original model: same argument and result structure."""
        flat = self.flatten_inputs(args, kwargs)
        for node, x in zip(self.placeholders(), flat):
            if "input_value" in node.meta:
                check_input_value(x, node.meta["input_value"], f"input '{node.name}'")
        return self.unflatten_outputs(self.run_flat(flat))

    def flat_example_inputs(self) -> list:
        """The example inputs, flattened to placeholder order; cloned when the graph writes into an input
        (a model's ``x.add_(1)`` is captured as ``copy_`` into the placeholder), so that running the program
        never changes the caller's tensors, nor the inputs the next check runs on."""
        flat = self.flatten_inputs(self.example_inputs, self.example_kwargs)
        if writes_into_inputs(self.graph):
            flat = [t.clone() if isinstance(t, torch.Tensor) else t for t in flat]
        return flat

    def trace_json(self) -> dict | None:
        """The pass trace as a JSON-able dict (None before any pipeline ran)."""
        if self.trace is None or isinstance(self.trace, dict):
            return self.trace
        return self.trace.to_json()

    # ----------------------------------------------------------------- structure
    @property
    def graph(self) -> torch.fx.Graph:
        """The FX graph (shorthand for ``graph_module.graph``)."""
        return self.graph_module.graph

    def placeholders(self) -> list[torch.fx.Node]:
        """The graph's input nodes in order."""
        return [n for n in self.graph.nodes if n.op == "placeholder"]

    def output_node(self) -> torch.fx.Node:
        """The graph's single output node."""
        return next(n for n in reversed(self.graph.nodes) if n.op == "output")

    def num_nodes(self) -> int:
        """Number of nodes in the graph (all kinds)."""
        return len(self.graph.nodes)

    def num_nodes_with_submodules(self) -> int:
        """Nodes of the graph plus those of every submodule graph it calls (each graph once): the size of what
        runs. A decode loop's step loop or ``unroll`` partitions hold most of their nodes in submodules."""
        seen: set[str] = set()
        total = len(self.graph.nodes)
        for node in self.graph.nodes:
            if node.op == "call_module" and node.target not in seen:
                seen.add(node.target)
                sub = fetch_attr(self.graph_module, node.target)
                total += len(sub.graph.nodes) if isinstance(sub, torch.fx.GraphModule) else 0
        return total

    def op_histogram(self) -> dict[str, int]:
        """Count of call_function nodes per target name, most frequent first."""
        counts: dict[str, int] = {}
        for n in self.graph.nodes:
            if n.op == "call_function":
                key = target_name(n.target)
                counts[key] = counts.get(key, 0) + 1
        return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))

    def parameters(self) -> dict[str, torch.Tensor]:
        """Every tensor reached by a get_attr node, by target name."""
        out = {}
        for n in self.graph.nodes:
            if n.op == "get_attr":
                value = fetch_attr(self.graph_module, n.target)
                if isinstance(value, torch.Tensor):
                    out[n.target] = value
        return out

    def parameter_bytes(self, unique: bool = True) -> int:
        """Bytes of get_attr'd tensors; with ``unique`` a tensor shared by several names counts once."""
        seen: set = set()
        total = 0
        for t in self.parameters().values():
            key = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), t.dtype)
            if unique and key in seen:
                continue
            seen.add(key)
            total += t.numel() * t.element_size()
        return total

    def to_networkx(self) -> nx.DiGraph:
        """A networkx DiGraph view: one vertex per FX node (by name), an edge per data dependency.

        Vertex attributes: ``op``, ``target`` (string), ``placement``; edge attribute ``bytes`` (size of the
        producer's value when known). FX stays the source of truth: edit the graph, not this view.
        """
        g = nx.DiGraph()
        for n in self.graph.nodes:
            g.add_node(n.name, op=n.op, target=target_name(n.target), placement=n.meta.get("placement"))
        for n in self.graph.nodes:
            nbytes = value_bytes(n.meta.get("val"))
            for user in n.users:
                g.add_edge(n.name, user.name, bytes=nbytes)
        return g

    def copy(self) -> "Program":
        """A copy whose graph can be rewritten freely; weight tensors are shared, not copied.

        Passes never modify tensors in place (they bind new tensors instead), so sharing the weights is safe
        and keeps copies cheap for large models. The module tree is copied (so rebinding an attribute in the
        copy leaves this program alone) and the generated code is reused until the copy's graph changes,
        so copying costs no recompile.
        """
        dup = copy.copy(self)
        with collections_paused():
            dup.graph_module = copy_graph_module(self.graph_module)
        dup.regions = copy.deepcopy(self.regions)
        dup.reports = list(self.reports)
        dup.dynamic_dims = dict(self.dynamic_dims)
        dup.notes = list(self.notes)
        return dup


def _copy_module_tree(module: torch.nn.Module) -> torch.nn.Module:
    """A copy of ``module`` and its submodules that shares their tensors (graph modules get own graphs)."""
    if isinstance(module, torch.fx.GraphModule):
        return copy_graph_module(module)
    new = module.__class__.__new__(module.__class__)
    new.__dict__ = module.__dict__.copy()
    new._parameters = module._parameters.copy()
    new._buffers = module._buffers.copy()
    new._modules = type(module._modules)((k, _copy_module_tree(v) if v is not None else None)
                                         for k, v in module._modules.items())
    return new


def copy_graph_module(gm: torch.fx.GraphModule) -> torch.fx.GraphModule:
    """Copy a GraphModule without regenerating its code: a deep copy of the graph, a copied module tree
    sharing the tensors, and the original's compiled ``forward`` (valid while the graphs are equal; the
    copy recompiles once its graph changes). Returns the new GraphModule."""
    # GraphModule.__new__ makes a fresh subclass per instance, so a later recompile of the copy (which sets
    # `forward` on its class) cannot change the original.
    new = torch.fx.GraphModule.__new__(torch.fx.GraphModule)
    new.__dict__ = gm.__dict__.copy()
    new._parameters = gm._parameters.copy()
    new._buffers = gm._buffers.copy()
    new._modules = type(gm._modules)((k, _copy_module_tree(v) if v is not None else None)
                                     for k, v in gm._modules.items())
    new.meta = dict(getattr(gm, "meta", {}))
    graph = copy.deepcopy(gm.graph)
    graph.owning_module = new
    new.__dict__["_graph"] = graph
    cls = type(new)
    cls.forward = type(gm).forward
    # What GraphModule.recompile() installs besides `forward`, bound to the copy's own class.
    cls._wrapped_call = _WrappedCall(cls, None)
    cls.__call__ = _call_wrapped
    return new


def _call_wrapped(self, *args, **kwargs):
    return self._wrapped_call(self, *args, **kwargs)


def fetch_attr(module: torch.nn.Module, target: str) -> Any:
    """Resolve a dotted get_attr target (``"layers.0.weight"``) on ``module``."""
    obj: Any = module
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj


def delete_attr(module: torch.nn.Module, target: str) -> None:
    """Unbind the dotted attribute ``target`` (parameter, buffer or plain attribute) from ``module``."""
    *path, leaf = target.split(".")
    owner = module.get_submodule(".".join(path)) if path else module
    if leaf in owner._parameters:
        del owner._parameters[leaf]
    elif leaf in owner._buffers:
        del owner._buffers[leaf]
    elif hasattr(owner, leaf):
        delattr(owner, leaf)


def set_attr(module: torch.nn.Module, target: str, tensor: torch.Tensor) -> None:
    """Bind ``tensor`` at dotted ``target`` of ``module`` as a plain (non-trainable) buffer, creating empty
    intermediate modules as needed and replacing whatever was bound there."""
    *path, leaf = target.split(".")
    owner = module
    for part in path:
        if not hasattr(owner, part):
            owner.add_module(part, torch.nn.Module())
        owner = getattr(owner, part)
    if hasattr(owner, leaf):
        delete_attr(owner, leaf)
    owner.register_buffer(leaf, tensor)


def fresh_attr_name(module: torch.nn.Module, stem: str) -> str:
    """A top-level attribute name ``stem``, ``stem_1``, ... not yet bound on ``module``."""
    name, i = stem, 0
    while hasattr(module, name):
        i += 1
        name = f"{stem}_{i}"
    return name


def target_name(target: Any) -> str:
    """A stable, readable name for a node target: ``aten.addmm.default``, ``getitem``, ``layers.0``."""
    if isinstance(target, str):
        return target
    if isinstance(target, torch._ops.OpOverload):
        return f"{target.namespace}.{target._opname}.{target._overloadname}"
    if isinstance(target, torch._ops.HigherOrderOperator):
        return f"higher_order.{target.name()}"
    name = getattr(target, "__name__", None) or repr(target)
    return name


def value_bytes(val: Any) -> int:
    """Bytes of a meta value (FakeTensor or nested tuple of them) with concrete sizes, hints for symbols."""
    if isinstance(val, torch.Tensor):
        numel = 1
        for d in val.shape:
            numel *= concrete_int(d)
        return numel * val.element_size()
    if isinstance(val, (tuple, list)):
        return sum(value_bytes(v) for v in val)
    return 0


def concrete_int(d: Any) -> int:
    """An int for a dim: ints as they are, a SymInt by its example value (hint)."""
    if isinstance(d, int):
        return d
    if isinstance(d, torch.SymInt):
        node = d.node
        hint = getattr(node, "hint", None)
        if hint is not None:
            return int(hint)
        try:
            return int(node.shape_env.size_hint(node.expr))
        except Exception:  # noqa: BLE001 - an unbacked symbol has no hint; count it as 1
            return 1
    return int(d)


def writes_into_inputs(graph: torch.fx.Graph) -> bool:
    """Whether a node of ``graph`` writes into a placeholder: an op whose schema marks the argument it is
    given the placeholder in as written (``aten.copy_``, ``index_put_``, ...)."""
    for node in graph.nodes:
        if node.op != "call_function":
            continue
        schema = getattr(node.target, "_schema", None)
        if schema is None:
            continue
        for arg, spec in zip(node.args, schema.arguments):
            if isinstance(arg, torch.fx.Node) and arg.op == "placeholder" and spec.alias_info is not None \
                    and spec.alias_info.is_write:
                return True
    return False


def check_input_value(x: Any, expected: list, label: str) -> None:
    """Raise a one-line InputError unless tensor ``x`` holds exactly ``expected`` (flattened): the guard of an
    input that capture specialized to its example value (an ONNX graph reading an ``axes`` input's values)."""
    got = x.reshape(-1).tolist() if isinstance(x, torch.Tensor) else x
    if got != list(expected):
        raise InputError(f"{label}: the model was captured for the value {list(expected)} (the graph needs it "
                         f"while tracing, e.g. as axes or sizes), got {got}; capture again with this value")
