"""Graph surgery for ``unroll`` on higher-order loops: copy a loop's subgraph (a ``scan`` combine graph, a
``while_loop`` cond/body graph) into the enclosing graph, replace a loop node's ``getitem`` outputs, and build
the predicated K-step body of a partitioned ``while_loop``.

The copies keep the subgraph's ``meta["val"]`` (the subgraphs share the program's FakeTensorMode, and a
loop's per-step shapes are the same at every step) and get provenance naming the loop node they came from,
the pass, and the step.
"""
from __future__ import annotations

import operator
from typing import Any

import torch
import torch.fx

from fxopt.ir import provenance
from fxopt.ir.program import fetch_attr, fresh_attr_name

WHILE_LOOP = torch.ops.higher_order.while_loop
SCAN = torch.ops.higher_order.scan
ATEN = torch.ops.aten


def placeholders(gm: torch.fx.GraphModule) -> list[torch.fx.Node]:
    """The placeholder nodes of ``gm``'s graph, in order."""
    return [n for n in gm.graph.nodes if n.op == "placeholder"]


def outputs(gm: torch.fx.GraphModule) -> list[Any]:
    """The values ``gm``'s graph returns, as a list (a single returned node becomes a one-element list)."""
    out = next(n for n in reversed(gm.graph.nodes) if n.op == "output").args[0]
    return list(out) if isinstance(out, (list, tuple)) else [out]


def inline(gm: torch.fx.GraphModule, sub: torch.fx.GraphModule, inputs: list, origin: torch.fx.Node,
           pass_name: str, step: int | None = None, graph: torch.fx.Graph | None = None) -> list:
    """Copy ``sub``'s nodes into ``graph`` (default ``gm.graph``, at its current insertion point), its
    placeholders bound to ``inputs`` in order; returns the copies of what ``sub`` returns.

    ``gm`` owns ``graph``: attributes ``sub`` reads with get_attr (nested loop subgraphs, constants) are bound
    on ``gm`` under fresh names. New nodes take ``origin``'s provenance (the loop node), ``pass_name``, and
    the step index in ``meta["unroll_step"]``.
    """
    graph = gm.graph if graph is None else graph
    phs = placeholders(sub)
    if len(phs) != len(inputs):
        raise ValueError(f"subgraph of '{origin.name}' takes {len(phs)} inputs, got {len(inputs)}")
    env: dict[torch.fx.Node, Any] = dict(zip(phs, inputs))
    for node in sub.graph.nodes:
        if node.op == "placeholder":
            continue
        if node.op == "output":
            return [torch.fx.map_arg(v, lambda a: env[a]) for v in outputs(sub)]
        if node.op == "get_attr":
            new = graph.get_attr(_bind_attr(gm, sub, node.target))
            new.meta.update({k: v for k, v in node.meta.items() if k == "val"})
        else:
            new = graph.node_copy(node, lambda a: env[a])
        _mark(new, node, origin, pass_name, step)
        env[node] = new
    raise ValueError(f"subgraph of '{origin.name}' has no output node")


def _bind_attr(gm: torch.fx.GraphModule, sub: torch.fx.GraphModule, target: str) -> str:
    """Bind ``sub``'s attribute ``target`` on ``gm`` (reusing a top-level attribute of ``gm`` that already is
    the same object) and return its name there."""
    value = fetch_attr(sub, target)
    for table in (gm._modules, gm._buffers, gm._parameters):
        for name, bound in table.items():
            if bound is value:
                return name
    name = fresh_attr_name(gm, target.replace(".", "_"))
    if isinstance(value, torch.nn.Module):
        gm.add_module(name, value)
    elif isinstance(value, torch.Tensor):
        gm.register_buffer(name, value)
    else:
        setattr(gm, name, value)
    return name


def loop_source(loop: torch.fx.Node) -> str | None:
    """The model's line that called the loop (``file.py:20``): the innermost frame of the loop node's
    ``stack_trace`` that is neither torch's nor generated code (dynamo's ``<eval_with_key>`` frames, which
    ``provenance.user_frame`` would pick for HOP nodes); None when there is none."""
    frames = [(m["file"], m["line"]) for m in provenance._FRAME.finditer(loop.meta.get("stack_trace") or "")]
    for file, line in reversed(frames):
        if not file.startswith("<") and not file.startswith(provenance._TORCH_DIR) \
                and not provenance._is_fxopt_runtime(file):
            return f"{provenance.portable_path(file)}:{line}"
    return None


def _provenance(new: torch.fx.Node, origin: torch.fx.Node, pass_name: str, step: int | None) -> None:
    """``provenance.derive`` from the loop node, with the model's call line when torch recorded only
    generated code as the loop's source, and the step index in ``meta["unroll_step"]``."""
    provenance.derive(new, origin, pass_name)
    source = new.meta["provenance"].get("source")
    if not source or str(source).startswith("<"):
        new.meta["provenance"]["source"] = loop_source(origin) or source
    if step is not None:
        new.meta["unroll_step"] = step


def _mark(new: torch.fx.Node, src: torch.fx.Node, origin: torch.fx.Node, pass_name: str,
          step: int | None) -> None:
    """Give ``new`` (a copy of subgraph node ``src``) the loop node's provenance and the step index."""
    new.meta.pop("provenance", None)
    new.meta.pop("nn_module_stack", None)
    _provenance(new, origin, pass_name, step)
    if src.meta.get("stack_trace"):
        new.meta["stack_trace"] = src.meta["stack_trace"]


def new_node(graph: torch.fx.Graph, target: Any, args: tuple, origin: torch.fx.Node, pass_name: str,
             step: int | None = None) -> torch.fx.Node:
    """A call_function node ``target(*args)`` at the insertion point, with provenance from ``origin``."""
    node = graph.call_function(target, args)
    _provenance(node, origin, pass_name, step)
    return node


def replace_results(gm: torch.fx.GraphModule, loop: torch.fx.Node, results: list, pass_name: str) -> None:
    """Point every ``getitem(loop, i)`` user at ``results[i]`` and erase the loop node (and its subgraph
    get_attrs and submodules once unused).

    A result that is a graph input or weight, or one already used for another output, is copied
    (``aten.clone``) so that the program's outputs never alias its inputs or each other.
    """
    graph = gm.graph
    used: set = set()
    for user in list(loop.users):
        if user.op != "call_function" or user.target is not operator.getitem:
            raise ValueError(f"loop node '{loop.name}' is used by '{user.name}' other than through getitem")
        value = results[user.args[1]]
        if isinstance(value, torch.fx.Node) and (value.op in ("placeholder", "get_attr") or value in used):
            with graph.inserting_before(user):
                value = new_node(graph, ATEN.clone.default, (value,), loop, pass_name)
            value.meta["val"] = user.meta.get("val")
            if value.meta["val"] is None:
                del value.meta["val"]
        if isinstance(value, torch.fx.Node):
            used.add(value)
            user.replace_all_uses_with(value)
        else:  # a constant carry (a Python int the loop never changed): substitute it into the users
            for use in list(user.users):
                use.args, use.kwargs = torch.fx.map_arg((use.args, use.kwargs), lambda a: value if a is user else a)
        graph.erase_node(user)
    subs = [a for a in loop.args[:2] if isinstance(a, torch.fx.Node) and a.op == "get_attr"]
    graph.erase_node(loop)
    drop_unused_subgraphs(gm, subs)


def drop_unused_subgraphs(gm: torch.fx.GraphModule, nodes: list[torch.fx.Node]) -> None:
    """Erase get_attr ``nodes`` that have no users left, and unbind their submodules when no other
    get_attr names them."""
    for node in nodes:
        if node.users or node.graph is not gm.graph:
            continue
        target = node.target
        gm.graph.erase_node(node)
        if not any(n.op == "get_attr" and n.target == target for n in gm.graph.nodes) and hasattr(gm, target):
            delattr(gm, target)


def predicated_body(gm: torch.fx.GraphModule, loop: torch.fx.Node, k: int, pass_name: str) -> torch.fx.GraphModule:
    """The body of a ``while_loop`` doing ``k`` steps per iteration: the first step as is (the loop's own
    condition was just checked), then ``k - 1`` copies of ``carry = where(cond(carry), body(carry), carry)``.

    Returns a new GraphModule with the original body's signature (carries, then additional inputs).
    """
    cond_gm = fetch_attr(gm, loop.args[0].target)
    body_gm = fetch_attr(gm, loop.args[1].target)
    n_carry = len(loop.args[2])
    owner = torch.fx.GraphModule(torch.nn.Module(), torch.fx.Graph())
    graph = owner.graph
    phs = []
    for ph in placeholders(body_gm):
        new = graph.placeholder(ph.name)
        new.meta.update({key: v for key, v in ph.meta.items() if key == "val"})
        phs.append(new)
    carry, extra = phs[:n_carry], phs[n_carry:]
    carry = inline(owner, body_gm, carry + extra, loop, pass_name, 0, graph)
    for step in range(1, k):
        (pred,) = inline(owner, cond_gm, carry + extra, loop, pass_name, step, graph)
        nxt = inline(owner, body_gm, carry + extra, loop, pass_name, step, graph)
        carry = [new_node(graph, ATEN.where.self, (pred, b, a), loop, pass_name, step) for a, b in zip(carry, nxt)]
    graph.output(tuple(carry))
    owner.recompile()
    return owner
