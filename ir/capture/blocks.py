"""Block-wise capture: export each structurally distinct repeated submodule once and stitch the graph.

Models repeat blocks (transformer layers, conformer blocks, decoder layers). ``torch.export`` traces and
decomposes every instance again, which is where capture's time goes on deep models. Here:

1. **Candidates**: non-leaf submodules grouped by structure (class, the names/shapes/dtypes of their
   parameters and buffers, the classes of their submodules); a group needs ``MIN_INSTANCES`` members.
2. **One eager run** of the model (with ``torch.compiler.is_exporting()`` True, as while exporting)
   records each candidate's call: inputs and outputs, copied in their memory layout. An instance is used
   only if it ran exactly once with tensors and plain constants (no cache objects); instances are
   regrouped by these call specs and the outermost kept. The repeats after each group's first must hold
   ``MIN_SAVED_FRACTION`` of the leaf modules that ran, or the model is exported whole.
3. **The model's export with opaque blocks**: each instance's ``forward`` is, for the duration, one call
   of ``fxopt_capture::block``, whose fake implementation returns the recorded output shapes, and its
   weights are hidden (not lifted). This export also tells the memory layout each block is called with
   (it may differ from eager's). A group called with other shapes or constants is dropped, and the export
   retried without it.
4. **One export per group**, of its first instance, for export's layouts. A group whose graph writes into
   a buffer or an input, calls a subgraph, or returns another layout than recorded is dropped. Every
   instance is then *checked*: the block graph, run with that instance's own weights on its recorded
   inputs, must reproduce its recorded outputs (fxopt's numeric rule). An instance whose graph depends on
   more than its inputs and weights (a Python attribute choosing a branch) fails the check; then step 3
   runs once more with only the instances that passed, and the others are traced as part of the model.
5. **Stitching**: each operator node is replaced by a copy of its group's graph, its weights bound to the
   instance's own (under the instance's module path, as whole-model export names them), values moved into
   the model's fake mode, module stacks prefixed by the instance's path so provenance reads as before.

The caller (:func:`fxopt.ir.capture.capture`) then checks the stitched program against the eager outputs
of step 2 and falls back to whole-model export on any difference or failure (the reason logged at debug
level). ``FXOPT_BLOCK_CAPTURE=0`` turns block-wise capture off. docs/capture.md has the figures.
"""
from __future__ import annotations

import contextlib
import itertools
import operator
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.fx
import torch.utils._pytree as pytree
from torch._subclasses.fake_tensor import FakeTensor

from fxopt.errors import InputError
from fxopt.ir import numerics
from fxopt.ir.capture import core_export
from fxopt.ir.program import fetch_attr, set_attr

ENV_SWITCH = "FXOPT_BLOCK_CAPTURE"

# A group is exported once only if it has at least this many instances: below that, the block's own export
# (about as slow as tracing two instances in place) and the checks cost more than they save.
MIN_INSTANCES = 3
# ... and only if the instances after the first of each group hold at least this fraction of the model's
# leaf modules that ran: the work a block export saves. ResNet-50's stages repeat 2-5 blocks of four widths
# (42 of 126): block-wise its capture ran at 0.76x the speed of torch.export + decompositions; an 8-layer
# Llama at 1.5x (benchmarks/compile_time.py, 2026-12-03).
MIN_SAVED_FRACTION = 0.5

# Leaves a block's inputs and outputs may hold besides tensors: constants export specializes on.
_CONSTANTS = (int, float, bool, str, type(None), torch.dtype, torch.device)


def enabled() -> bool:
    """Whether block-wise capture is on (``FXOPT_BLOCK_CAPTURE`` unset or not ``0``)."""
    return os.environ.get(ENV_SWITCH, "1").strip().lower() not in ("0", "false", "no", "off")


# --------------------------------------------------------------------------------------- the block operator
@dataclass(frozen=True)
class _TensorSpec:
    shape: tuple[int, ...]
    stride: tuple[int, ...]
    dtype: torch.dtype
    device: torch.device


# call id -> the specs of the tensors that call returns (read by the operator's fake implementation)
_OUTPUT_SPECS: dict[int, list[_TensorSpec]] = {}
_CALL_IDS = itertools.count()


# Defined with torch.library.Library, not custom_op: custom_op's Python autograd and functionalization
# wrappers cost ~5 ms per call while exporting, more than tracing a small block in place.
_LIBRARY = torch.library.Library("fxopt_capture", "DEF")
_LIBRARY.define("block(int call, Tensor[] inputs) -> Tensor[]")


def _block_eager(call: int, inputs: list[torch.Tensor]) -> list[torch.Tensor]:
    raise RuntimeError("fxopt_capture::block only stands in for a block while the model is exported")


def _block_fake(call: int, inputs: list[torch.Tensor]) -> list[torch.Tensor]:
    return [torch.empty_strided(s.shape, s.stride, dtype=s.dtype, device=s.device) for s in _OUTPUT_SPECS[call]]


_LIBRARY.impl("block", _block_eager, "CompositeExplicitAutograd")
torch.library.register_fake("fxopt_capture::block", _block_fake, lib=_LIBRARY)

BLOCK_OP = torch.ops.fxopt_capture.block.default


# --------------------------------------------------------------------------------------- recording
@dataclass
class _Call:
    """One instance's recorded call: its flat inputs/outputs (tensors cloned) and their tree specs."""

    path: str
    module: torch.nn.Module
    in_leaves: list = field(default_factory=list)
    in_spec: Any = None
    out_leaves: list = field(default_factory=list)
    out_spec: Any = None
    calls: int = 0
    plain: bool = True

    def signature(self) -> tuple:
        """What must be equal for two instances to share one block graph (besides their structure)."""
        return (str(self.in_spec), tuple(_leaf_key(x) for x in self.in_leaves),
                str(self.out_spec), tuple(_leaf_key(x) for x in self.out_leaves))


def _leaf_key(x: Any) -> Any:
    if isinstance(x, torch.Tensor):
        return ("T", tuple(x.shape), tuple(x.stride()), x.dtype, str(x.device))
    return ("C", type(x).__name__, repr(x))


def _plain(leaves: list) -> bool:
    return all(isinstance(x, torch.Tensor) and type(x) is torch.Tensor or isinstance(x, _CONSTANTS)
               for x in leaves)


def _clone(leaves: list) -> list:
    """Copies of the tensor leaves in their own memory layout (a slice keeps its strides, an expand its zero
    strides): each block is exported, and checked, for the layout it is called with."""
    return [_copy_with_layout(x) if isinstance(x, torch.Tensor) else x for x in leaves]


def _copy_with_layout(x: torch.Tensor) -> torch.Tensor:
    x = x.detach()
    if x.numel() == 0:
        return torch.empty_strided(x.shape, x.stride(), dtype=x.dtype, device=x.device)
    span = 1 + sum((size - 1) * stride for size, stride in zip(x.shape, x.stride()))
    memory = torch.as_strided(x, (span,), (1,)).clone()   # the elements x's strides reach, from its offset
    return torch.as_strided(memory, x.shape, x.stride(), 0)


def _structure_key(module: torch.nn.Module) -> tuple:
    return (type(module),
            tuple((n, tuple(p.shape), p.dtype) for n, p in module.named_parameters()),
            tuple((n, tuple(b.shape), b.dtype) for n, b in module.named_buffers()),
            tuple((n, type(m)) for n, m in module.named_modules()))


def _candidates(model: torch.nn.Module) -> dict[str, torch.nn.Module]:
    """Non-leaf submodules with at least ``MIN_INSTANCES - 1`` structurally equal ones anywhere in the model."""
    groups: dict[tuple, list[tuple[str, torch.nn.Module]]] = {}
    seen: set[int] = set()
    for path, module in model.named_modules():
        if not path or id(module) in seen or _is_leaf(module):
            continue
        seen.add(id(module))
        groups.setdefault(_structure_key(module), []).append((path, module))
    return {path: m for members in groups.values() if len(members) >= MIN_INSTANCES for path, m in members}


def _is_leaf(module: torch.nn.Module) -> bool:
    return not any(True for _ in module.children())


def _leaves(module: torch.nn.Module) -> int:
    return sum(1 for m in module.modules() if _is_leaf(m))


@contextlib.contextmanager
def _recording(model: torch.nn.Module, candidates: dict[str, torch.nn.Module],
               ran: set[int]) -> Iterator[dict[str, _Call]]:
    """While active, each candidate's call is recorded, and the id of every leaf module of ``model`` that
    runs is added to ``ran``."""
    calls = {path: _Call(path, m) for path, m in candidates.items()}
    handles = [m.register_forward_hook(lambda m, _a, _o: ran.add(id(m)))
               for m in model.modules() if _is_leaf(m)]
    for path, module in candidates.items():
        call = calls[path]

        def pre(_m, args, kwargs, call=call):
            call.calls += 1
            leaves, call.in_spec = pytree.tree_flatten((args, kwargs))
            call.plain = call.plain and _plain(leaves)
            call.in_leaves = _clone(leaves)

        def post(_m, _args, _kwargs, output, call=call):
            leaves, call.out_spec = pytree.tree_flatten(output)
            call.plain = call.plain and _plain(leaves)
            call.out_leaves = _clone(leaves)

        handles.append(module.register_forward_pre_hook(pre, with_kwargs=True))
        handles.append(module.register_forward_hook(post, with_kwargs=True))
    try:
        yield calls
    finally:
        for h in handles:
            h.remove()


def _grouped(calls: list[_Call], key: Callable[[_Call], tuple]) -> list[list[_Call]]:
    """``calls`` grouped by ``key``, groups of ``MIN_INSTANCES`` or more."""
    by_key: dict[tuple, list[_Call]] = {}
    for c in calls:
        by_key.setdefault(key(c), []).append(c)
    return [g for g in by_key.values() if len(g) >= MIN_INSTANCES]


def _structure_and_signature(call: _Call) -> tuple:
    return (_structure_key(call.module), call.signature())


def _groups(calls: dict[str, _Call]) -> list[list[_Call]]:
    """Instances that ran once with plain inputs/outputs, grouped by structure and call specs, outermost
    only, groups of ``MIN_INSTANCES`` or more."""
    ran_once = [c for c in calls.values() if c.calls == 1 and c.plain]
    usable = [c for g in _grouped(ran_once, _structure_and_signature) for c in g]
    paths = {c.path for c in usable}
    outermost = [c for c in usable if not any(p in paths for p in _ancestors(c.path))]
    return _grouped(outermost, _structure_and_signature)


def _ancestors(path: str) -> list[str]:
    parts = path.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


# --------------------------------------------------------------------------------------- one group
@dataclass
class _Block:
    """A group's exported graph (flat placeholders in input-leaf order) and its accepted instances."""

    graph_module: torch.fx.GraphModule
    instances: list[_Call]


def _export_group(group: list[_Call], export: Callable, flatten: Callable, source: str) -> _Block | str:
    """Export the group's first instance and check every instance against it; a reason string when the
    group cannot be used."""
    first = group[0]
    args, kwargs = pytree.tree_unflatten(first.in_leaves, first.in_spec)
    try:
        ep = export(first.module, tuple(args), dict(kwargs), None, f"{source} ({first.path})")
    except InputError as exc:
        return f"{first.path}: {exc}"
    sig = ep.graph_signature
    if sig.buffers_to_mutate or sig.user_inputs_to_mutate:
        return f"{first.path}: writes into a buffer or an input"
    gm = flatten(ep)
    gm.recompile()   # flatten's plain codegen takes effect
    if any(n.op in ("call_module",) or n.op == "get_attr" and not isinstance(fetch_attr(gm, n.target),
                                                                            torch.Tensor)
           for n in gm.graph.nodes):
        return f"{first.path}: calls a subgraph"
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    outputs = pytree.tree_leaves(next(n for n in gm.graph.nodes if n.op == "output").args)
    if len(placeholders) != len(first.in_leaves) or len(outputs) != len(first.out_leaves):
        return f"{first.path}: the exported graph's inputs/outputs do not match the call's"
    for out, recorded in zip(outputs, first.out_leaves):
        val = out.meta.get("val") if isinstance(out, torch.fx.Node) else None
        if isinstance(recorded, torch.Tensor) and isinstance(val, torch.Tensor) \
                and tuple(val.stride()) != tuple(recorded.stride()):
            # the model's export was traced with the recorded (eager) layout of this output
            return f"{first.path}: its graph returns another memory layout than the eager call"
    depths = numerics.output_depths(gm)
    accepted = [c for c in group if _reproduces(gm, c, depths)]
    if len(accepted) < MIN_INSTANCES:
        return f"{first.path}: only {len(accepted)} of {len(group)} instances reproduce the block graph"
    return _Block(gm, accepted)


def _reproduces(gm: torch.fx.GraphModule, call: _Call, depths: list) -> bool:
    """Whether ``gm`` run with ``call``'s module's weights on its recorded inputs gives its recorded outputs."""
    weights = {}
    for node in gm.graph.nodes:
        if node.op == "get_attr":
            own = _own_tensor(call.module, str(node.target))
            if own is not None:
                weights[str(node.target)] = own
    try:
        with torch.no_grad():
            out = torch.func.functional_call(gm, weights, tuple(_clone(call.in_leaves)), strict=False)
    except Exception:  # noqa: BLE001 - an instance the block graph cannot run is traced with the model
        return False
    out = list(out) if isinstance(out, (tuple, list)) else [out]
    return numerics.first_difference(call.out_leaves, out, depths) is None


def _own_tensor(module: torch.nn.Module, target: str) -> torch.Tensor | None:
    try:
        value = fetch_attr(module, target)
    except AttributeError:
        return None
    return value if isinstance(value, torch.Tensor) else None


# --------------------------------------------------------------------------------------- the outer export
class _CallMismatch(Exception):
    """A block was called during export with other inputs than in the recording run."""

    def __init__(self, message: str, path: str | None = None, strides: list | None = None) -> None:
        super().__init__(message)
        self.path = path
        # where only the layouts differed: the strides of each input leaf as export passed it (None for
        # a constant), to export the block again for them
        self.strides = strides


def _mismatch_in(exc: BaseException) -> _CallMismatch | None:
    """The :class:`_CallMismatch` naming an instance in ``exc``'s chain (export wraps it), if any."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, _CallMismatch) and exc.path is not None:
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


def _same_but_layout(leaves: list, recorded: list) -> list | None:
    """The strides of ``leaves`` (None for constants) when they differ from ``recorded`` in strides only."""
    if len(leaves) != len(recorded):
        return None
    strides = []
    for x, r in zip(leaves, recorded):
        if isinstance(x, torch.Tensor) != isinstance(r, torch.Tensor):
            return None
        if isinstance(x, torch.Tensor):
            if tuple(x.shape) != tuple(r.shape) or x.dtype != r.dtype or x.device != r.device:
                return None
            strides.append(tuple(x.stride()))
        else:
            if _leaf_key(x) != _leaf_key(r):
                return None
            strides.append(None)
    return strides


def _relaid(call: _Call, strides: list | None) -> _Call | None:
    """``call`` with its recorded inputs copied into the layouts ``strides`` (None: as recorded); None when
    a layout overlaps itself (an expand), which a copy cannot be written into."""
    if strides is None:
        return call
    leaves = []
    for x, stride in zip(call.in_leaves, strides):
        if stride is not None and tuple(x.stride()) != stride:
            copy = torch.empty_strided(x.shape, stride, dtype=x.dtype, device=x.device)
            try:
                copy.copy_(x)
            except RuntimeError:
                return None
            x = copy
        leaves.append(x)
    return _Call(call.path, call.module, leaves, call.in_spec, call.out_leaves, call.out_spec, call.calls,
                 call.plain)


@contextlib.contextmanager
def _opaque(groups: list[list[_Call]], learn_layouts: bool) -> Iterator[tuple[dict, set, dict]]:
    """While active, every instance in ``groups`` runs as one call of the block operator. Yields ``(call id
    -> call, the ids of the calls made, call id -> the input strides export used where they differ from the
    recorded ones)``; with ``learn_layouts`` False such a call raises _CallMismatch, as any call with other
    shapes or constants than recorded does."""
    by_id: dict[int, _Call] = {}
    used: set[int] = set()
    passes: dict[int, int | None] = {}   # call id -> the trace pass that made it
    seen: dict[int, list] = {}
    patched: list[tuple[torch.nn.Module, bool, Any]] = []
    for group in groups:
        for call in group:
            call_id = next(_CALL_IDS)
            by_id[call_id] = call
            _OUTPUT_SPECS[call_id] = [_TensorSpec(tuple(t.shape), tuple(t.stride()), t.dtype, t.device)
                                      for t in call.out_leaves if isinstance(t, torch.Tensor)]
            module = call.module
            patched.append((module, "forward" in module.__dict__, module.__dict__.get("forward")))
            module.forward = _stand_in(call_id, call, used, passes, seen if learn_layouts else None)
    # The stand-ins read no weights: hidden from the export, the blocks' weights are not lifted into the
    # model's graph (torch.export's signature handling is quadratic in their number); stitching binds them.
    hidden = [(m, m.__dict__["_parameters"], m.__dict__["_buffers"])
              for module, _, _ in patched for m in module.modules()]
    for m, _, _ in hidden:
        m.__dict__["_parameters"], m.__dict__["_buffers"] = {}, {}
    try:
        yield by_id, used, seen
    finally:
        for m, params, buffers in hidden:
            m.__dict__["_parameters"], m.__dict__["_buffers"] = params, buffers
        for module, had_own, own in patched:
            if had_own:
                module.forward = own
            else:
                del module.forward
        for call_id in by_id:
            _OUTPUT_SPECS.pop(call_id, None)


def _trace_pass() -> int | None:
    """Which trace is running: torch.export's ATen-IR path (core_export.py) runs the model twice, once to
    collect metadata without a proxy mode and once with one; a block is called once in each."""
    mode = torch._C._get_dispatch_mode(torch._C._TorchDispatchModeKey.PROXY)
    return id(mode) if mode is not None else None


def _stand_in(call_id: int, call: _Call, used: set[int], passes: dict[int, int | None],
              seen: dict[int, list] | None) -> Callable:
    recorded = [_leaf_key(x) for x in call.in_leaves]

    def forward(*args: Any, **kwargs: Any) -> Any:
        leaves, spec = pytree.tree_flatten((args, kwargs))
        this_pass = _trace_pass()
        twice = call_id in used and passes.get(call_id) == this_pass
        if spec != call.in_spec or [_leaf_key(x) for x in leaves] != recorded or twice:
            strides = _same_but_layout(leaves, call.in_leaves) if spec == call.in_spec else None
            if strides is None or seen is None or twice:
                # called otherwise than in the recording run (its weights are hidden, so it cannot be
                # traced in place either): the caller exports again without this group
                raise _CallMismatch(f"{call.path} was called otherwise while exporting than in the eager run",
                                    call.path)
            seen[call_id] = strides   # only the layouts differ: its block is exported for export's layouts
        used.add(call_id)
        passes[call_id] = this_pass
        outs = iter(BLOCK_OP(call_id, [x for x in leaves if isinstance(x, torch.Tensor)]))
        flat = [next(outs) if isinstance(x, torch.Tensor) else x for x in call.out_leaves]
        return pytree.tree_unflatten(flat, call.out_spec)

    return forward


def _export_opaque(model: torch.nn.Module, inputs: tuple, kwargs: dict, source: str, export: Callable,
                   groups: list[list[_Call]], learn_layouts: bool) -> tuple | str:
    """Export ``model`` with the instances of ``groups`` opaque (see :func:`_opaque`); a group called
    otherwise than recorded is dropped and the export retried. Returns ``(ep, call id -> call, ids used,
    layouts seen, the groups kept)`` or a one-line reason."""
    while True:
        try:
            with _opaque(groups, learn_layouts) as (by_id, used, seen):
                ep = export(model, inputs, kwargs, None, source)
        except (InputError, _CallMismatch) as exc:
            mismatch = _mismatch_in(exc)
            groups = [g for g in groups if mismatch is not None and all(c.path != mismatch.path for c in g)]
            if not groups:
                return f"the model's export with opaque blocks failed: {exc}"
            continue
        if not used:
            return "no block was called while exporting"
        return ep, by_id, used, seen, groups


# --------------------------------------------------------------------------------------- stitching
def _stitch(gm: torch.fx.GraphModule, by_id: dict[int, tuple[_Block, _Call]]) -> None:
    """Replace every block-operator node of ``gm`` by a copy of its block's graph (in place)."""
    graph = gm.graph
    nodes = [n for n in graph.nodes if n.op == "call_function" and n.target == BLOCK_OP]
    if sorted(int(n.args[0]) for n in nodes) != sorted(by_id):
        raise _CallMismatch("the model's graph does not hold each block call once")
    mode = torch._guards.detect_fake_mode([n.meta.get("val") for n in graph.nodes if n.op == "placeholder"])
    for node in nodes:
        block, call = by_id[int(node.args[0])]
        tensors = iter(node.args[1])
        inputs = [next(tensors) if isinstance(x, torch.Tensor) else x for x in call.in_leaves]
        with graph.inserting_before(node):
            outputs = _inline(gm, block.graph_module, inputs, call, node.meta, mode)
        tensor_outputs = [o for o, x in zip(outputs, call.out_leaves) if isinstance(x, torch.Tensor)]
        for user in list(node.users):
            if user.op != "call_function" or user.target is not operator.getitem:
                raise _CallMismatch(f"{call.path}: its result is used other than by index")
            user.replace_all_uses_with(tensor_outputs[int(user.args[1])])
            graph.erase_node(user)
        graph.erase_node(node)


def _inline(gm: torch.fx.GraphModule, block: torch.fx.GraphModule, inputs: list, call: _Call,
            call_meta: dict, mode: Any) -> list:
    """Copy ``block``'s graph into ``gm`` at the insertion point with placeholders bound to ``inputs``;
    returns the copies of its flat outputs."""
    env: dict[torch.fx.Node, Any] = {}
    placeholders = [n for n in block.graph.nodes if n.op == "placeholder"]
    env.update(zip(placeholders, inputs))
    outer_stack = dict(call_meta.get("nn_module_stack") or {})
    for node in block.graph.nodes:
        if node.op == "placeholder":
            continue
        if node.op == "output":
            return [env[o] if isinstance(o, torch.fx.Node) else o for o in pytree.tree_leaves(node.args)]
        if node.op == "get_attr":
            env[node] = gm.graph.get_attr(_bind_weight(gm, block, call, str(node.target)))
            env[node].meta.update(_moved_meta(node.meta, mode, call.path, outer_stack))
            continue
        new = gm.graph.node_copy(node, lambda n: env[n])
        new.meta = _moved_meta(node.meta, mode, call.path, outer_stack)
        env[node] = new
    raise _CallMismatch(f"{call.path}: the block graph has no output")


def _bind_weight(gm: torch.fx.GraphModule, block: torch.fx.GraphModule, call: _Call, target: str) -> str:
    """The target in ``gm`` holding ``call``'s instance's tensor for the block's ``target`` (bound if new)."""
    name = f"{call.path}.{target}"
    try:
        if isinstance(fetch_attr(gm, name), torch.Tensor):
            return name
    except AttributeError:
        pass
    own = _own_tensor(call.module, target)
    set_attr(gm, name, own if own is not None else fetch_attr(block, target))
    return name


def _moved_meta(meta: dict, mode: Any, path: str, outer_stack: dict) -> dict:
    """A block node's meta for the model's graph: values in the model's fake mode, module stack under the
    instance's path."""
    moved = dict(meta)
    if "val" in meta:
        moved["val"] = pytree.tree_map(lambda v: _in_mode(v, mode), meta["val"])
    stack = meta.get("nn_module_stack")
    if stack is not None:
        inner = {f"{path}::{key}": (f"{path}.{p}" if p else path, kind)
                 for key, (p, kind) in stack.items() if p}
        moved["nn_module_stack"] = {**outer_stack, **inner}
    elif outer_stack:
        moved["nn_module_stack"] = dict(outer_stack)
    return moved


def _in_mode(v: Any, mode: Any) -> Any:
    if not isinstance(v, torch.Tensor) or mode is None:
        return v
    if any(isinstance(d, torch.SymInt) for d in (*v.shape, *v.stride())):
        raise _CallMismatch("a block value has a symbolic shape")
    meta = torch.empty_strided(tuple(v.shape), tuple(v.stride()), dtype=v.dtype, device="meta")
    try:   # the constructor itself: 7x cheaper than dispatching empty_strided in the mode
        return FakeTensor(mode, meta, v.device)
    except Exception:  # noqa: BLE001 - a torch whose FakeTensor takes other arguments
        with mode:
            return torch.empty_strided(tuple(v.shape), tuple(v.stride()), dtype=v.dtype, device=v.device)


@contextlib.contextmanager
def _buffers_kept(model: torch.nn.Module) -> Iterator[None]:
    """Every buffer of ``model`` holds on exit the value it held on entry: the recording run is a real run,
    and a forward that counts its calls in a buffer must not change the user's model."""
    before = [(b, b.detach().clone()) for b in model.buffers()]
    try:
        yield
    finally:
        with torch.no_grad():
            for buffer, value in before:
                if not torch.equal(buffer, value):
                    buffer.copy_(value)


@contextlib.contextmanager
def _as_when_exporting() -> Iterator[None]:
    """While active, ``torch.compiler.is_exporting()`` is True, as it is while torch.export traces: libraries
    that build their inputs differently for export (Hugging Face builds an explicit attention mask where
    eager passes None) call the blocks in the recording run as they will in the export."""
    flag = getattr(torch.compiler, "_is_exporting_flag", None)
    if not isinstance(flag, bool):
        yield
        return
    torch.compiler._is_exporting_flag = True
    try:
        yield
    finally:
        torch.compiler._is_exporting_flag = flag


# --------------------------------------------------------------------------------------- entry point
@dataclass
class Stitched:
    """The result of block-wise capture: the model's flat graph with every block inlined, the eager
    outputs (flat tensors) to check it against, and what was done, in one line."""

    graph_module: torch.fx.GraphModule
    expected: list
    summary: str


def capture_blockwise(model: torch.nn.Module, inputs: tuple, kwargs: dict, source: str, export: Callable,
                      flatten: Callable, run_eager: Callable) -> Stitched | str:
    """Capture ``model`` block by block (see the module doc).

    ``export(module, args, kwargs, dynamic_shapes, source)`` returns a decomposed ExportedProgram (or raises
    InputError); ``flatten(ep)`` returns its flat GraphModule; ``run_eager()`` runs the model on its example
    inputs as capture would. Returns :class:`Stitched`, or a one-line reason why block-wise capture does not
    apply or failed (the caller then exports the whole model).
    """
    candidates = _candidates(model)
    if not candidates:
        return "no repeated submodules"
    ran: set[int] = set()
    with _recording(model, candidates, ran) as calls, _as_when_exporting(), _buffers_kept(model), \
            core_export.watch_attention(model):
        try:
            expected = run_eager()
        except Exception as exc:  # noqa: BLE001 - whole-model export reports the model's own error
            return f"the eager run raised {type(exc).__name__}"
    groups = _groups(calls)
    if not groups:
        return "no repeated submodule ran once with tensor inputs"
    saved = sum(_leaves(c.module) for group in groups for c in group[1:])
    if saved < MIN_SAVED_FRACTION * len(ran):
        return f"the repeats hold {saved} of the {len(ran)} leaf modules that ran"
    # Every graph exported from here on is checked against eager outputs (each instance against its recorded
    # call, the stitched graph against the model's run), so these exports may take the one-trace path.
    export = core_export.allowing(export)
    # The model's export first, every group opaque: it tells the layouts export calls the blocks with.
    exported = _export_opaque(model, inputs, kwargs, source, export, groups, learn_layouts=True)
    if isinstance(exported, str):
        return exported
    ep, by_id, used, seen, groups = exported
    path_of = {i: c.path for i, c in by_id.items()}
    seen_at = {path_of[i]: strides for i, strides in seen.items()}
    ran_as_recorded = {path_of[i] for i in used}
    # One export per group, for those layouts; every instance checked against it.
    blocks, dropped = [], []
    for group in groups:
        relaid = [r for c in group if c.path in ran_as_recorded and (r := _relaid(c, seen_at.get(c.path)))]
        for sub in _grouped(relaid, _Call.signature):
            result = _export_group(sub, export, flatten, source)
            (blocks if isinstance(result, _Block) else dropped).append(result)
    if not blocks:
        return "; ".join(dropped) or "no group kept its instances"
    block_of = {c.path: b for b in blocks for c in b.instances}
    if set(block_of) != ran_as_recorded:
        # some instances did not reproduce their group's graph: export again with only the others opaque
        exported = _export_opaque(model, inputs, kwargs, source, export, [b.instances for b in blocks],
                                  learn_layouts=False)
        if isinstance(exported, str):
            return exported
        ep, by_id, used, _, _ = exported
    gm = flatten(ep)
    try:
        _stitch(gm, {i: (block_of[by_id[i].path], by_id[i]) for i in used})
    except _CallMismatch as exc:
        return f"stitching failed: {exc}"
    gm.graph.lint()
    gm.recompile()
    kinds: dict[str, int] = {}
    for i in used:
        kind = type(by_id[i].module).__name__
        kinds[kind] = kinds.get(kind, 0) + 1
    listed = ", ".join(f"{kind} x{n}" for kind, n in kinds.items())
    exports = len({id(block_of[by_id[i].path]) for i in used})
    return Stitched(gm, expected, f"captured block-wise: {len(used)} blocks from {exports} export(s) ({listed})")
