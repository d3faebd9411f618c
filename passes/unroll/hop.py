"""``unroll`` for loops already in the graph: torch.export's ``scan`` and ``while_loop`` higher-order ops.

Called by :class:`fxopt.passes.unroll.Unroll` when the program has no decode-loop region but has such loop
nodes (``torch.ops.higher_order.scan`` / ``.while_loop`` in ``program.graph_module``).

- ``scan`` (static length): unrolled in both modes: the combine graph is inlined once per element
  (``select(xs, 0, t)`` per step, the carry chained, per-step outputs stacked with ``aten.stack``).
- ``while_loop``, ``mode=full``: unrolled when its trip count is provable at compile time
  (:mod:`fxopt.passes.unroll.hop_trip`), else left alone with a note naming the node and the reason.
- ``while_loop``, ``mode=partitioned,partition=K``: replaced by a while_loop whose body does K steps
  (the first as is, then ``carry = where(cond(carry), body(carry), carry)``), so the host checks the stop
  only every K steps; a loop with a provable trip count ``n <= K`` is unrolled fully instead.

Loops nested in a loop's subgraph surface in the program's graph when their parent is inlined and are then
handled the same way. ``max_len`` (when > 0) caps the steps one loop may be unrolled to (default
:data:`DEFAULT_MAX_STEPS`); longer loops are left alone with a note.
"""
from __future__ import annotations

import operator
from typing import Any

import torch
import torch.fx

from fxopt.ir import provenance
from fxopt.ir.program import Program, fetch_attr, fresh_attr_name
from fxopt.passes.unroll import hop_inline as inl
from fxopt.passes.base import PassResult
from fxopt.passes.unroll.hop_trip import trip_count

#: Most steps a loop is unrolled to when the pass's ``max_len`` is 0.
DEFAULT_MAX_STEPS = 1024
#: The attribute a partitioned body module carries: its steps per iteration (idempotence marker).
PARTITION_ATTR = "_fxopt_unroll_partition"


def is_loop(node: torch.fx.Node) -> bool:
    """True for a ``scan`` or ``while_loop`` higher-order op node."""
    return node.op == "call_function" and node.target in (inl.SCAN, inl.WHILE_LOOP)


def find_loops(gm: torch.fx.GraphModule) -> list[torch.fx.Node]:
    """The scan/while_loop nodes of ``gm``'s top-level graph, in graph order."""
    return [n for n in gm.graph.nodes if is_loop(n)]


def has_hop_loops(program: Program) -> bool:
    """True when ``program``'s graph has a scan or while_loop node."""
    return bool(find_loops(program.graph_module))


def run(pass_: Any, program: Program) -> PassResult:
    """Unroll ``program``'s HOP loops in place as ``pass_`` (an ``Unroll`` instance: ``mode``,
    ``partition``, ``max_len``, ``name``) asks; returns the PassResult with details ``variant``, ``loops``
    (found), ``unrolled``, ``partitioned``, ``left``, ``steps_inlined``, ``nodes_added`` and ``per_loop``
    (one record per loop: node, kind, action, steps / partition / reason), and a note per loop left alone."""
    gm = program.graph_module
    limit = pass_.max_len or DEFAULT_MAX_STEPS
    nodes_before = len(gm.graph.nodes)
    old_nodes = set(gm.graph.nodes)
    records: list[dict] = []
    notes: list[str] = []
    done: set[torch.fx.Node] = set()
    if pass_.boundaries or pass_.lengths:
        notes.append("boundaries/lengths apply to decode loops; HOP loops use partition=K")
    while True:
        todo = [n for n in find_loops(gm) if n not in done]
        if not todo:
            break
        loop = todo[0]
        done.add(loop)
        record = _handle(pass_, gm, loop, limit)
        done.update(record.pop("new_nodes", ()))
        records.append(record)
        if record["action"] == "left":
            notes.append(f"{record['kind']} '{record['node']}' left as a loop: {record['reason']}")
        elif record["action"] == "already":
            notes.append(f"while_loop '{record['node']}' already runs {record['partition']} steps per iteration")
    changed = [r for r in records if r["action"] in ("unrolled", "partitioned")]
    if changed:
        _drop_dead_copies(gm, old_nodes)
    details = {
        "variant": pass_.mode,
        "loops": len(records),
        "unrolled": sum(r["action"] == "unrolled" for r in records),
        "partitioned": sum(r["action"] == "partitioned" for r in records),
        "left": sum(r["action"] == "left" for r in records),
        "already": sum(r["action"] == "already" for r in records),
        "steps_inlined": sum(r.get("steps_inlined", 0) for r in records),
        "nodes_added": len(gm.graph.nodes) - nodes_before,
        "per_loop": records,
    }
    if changed:
        notes.append(f"HOP loops: {details['unrolled']} unrolled, {details['partitioned']} partitioned, "
                     f"{details['left']} left; {details['steps_inlined']} steps inlined")
    return PassResult(bool(changed), details, notes)


def _drop_dead_copies(gm: torch.fx.GraphModule, old_nodes: set) -> None:
    """Erase the pure nodes this pass made that nothing uses (e.g. a loop counter's last increment)."""
    for node in reversed(list(gm.graph.nodes)):
        if node not in old_nodes and not node.users and node.op in ("call_function", "get_attr") \
                and not node.is_impure():
            gm.graph.erase_node(node)


def _handle(pass_: Any, gm: torch.fx.GraphModule, loop: torch.fx.Node, limit: int) -> dict:
    """Rewrite one loop node; returns its report record."""
    if any(u.op != "call_function" or u.target is not operator.getitem for u in loop.users):
        return {"node": loop.name, "kind": str(loop.target.name()), "action": "left",
                "reason": "its result is used other than through getitem"}
    if loop.target is inl.SCAN:
        record = {"node": loop.name, "kind": "scan"}
        steps, reason = _scan_length(loop, limit)
        if steps is None:
            return {**record, "action": "left", "reason": reason}
        _unroll_scan(gm, loop, steps, pass_.name)
        return {**record, "action": "unrolled", "steps": steps, "steps_inlined": steps}
    record = {"node": loop.name, "kind": "while_loop"}
    body = fetch_attr(gm, loop.args[1].target)
    marked = getattr(body, PARTITION_ATTR, None)
    if marked is not None and pass_.mode == "partitioned" and marked == pass_.partition:
        return {**record, "action": "already", "partition": marked}
    if marked is not None:
        return {**record, "action": "left",
                "reason": f"already partitioned into {marked} steps per iteration by unroll (re-capture the model "
                          "to change the variant)"}
    steps, reason = trip_count(gm, loop, limit)
    if steps is not None and (pass_.mode == "full" or steps <= pass_.partition):
        _unroll_while(gm, loop, steps, pass_.name)
        return {**record, "action": "unrolled", "steps": steps, "steps_inlined": steps}
    if pass_.mode == "full":
        return {**record, "action": "left",
                "reason": f"{reason}; use unroll{{mode=partitioned,partition=K}} to check the stop every K steps"}
    if pass_.partition < 2:
        return {**record, "action": "left", "reason": "partition=1 would not change the loop"}
    new = _partition_while(gm, loop, pass_.partition, pass_.name)
    out = {**record, "action": "partitioned", "partition": pass_.partition,
           "steps_inlined": pass_.partition, "new_nodes": [new]}
    if steps is not None:
        out["steps"] = steps
    return out


# ----------------------------------------------------------------------------------------------- scan
def _scan_length(loop: torch.fx.Node, limit: int) -> tuple[int | None, str]:
    """The static number of scan steps, or ``(None, reason)``."""
    xs = list(loop.args[2])
    if not xs:
        return None, "scan has no xs (its length is not in the graph)"
    val = xs[0].meta.get("val") if isinstance(xs[0], torch.fx.Node) else None
    if not isinstance(val, torch.Tensor) or val.dim() == 0:
        return None, f"the length of xs '{getattr(xs[0], 'name', xs[0])}' is unknown"
    length = val.shape[0]
    if not isinstance(length, int):
        return None, f"its length {length} is dynamic (capture with a static sequence length)"
    if length == 0:
        return None, "its length is 0"
    if length > limit:
        return None, f"it runs {length} steps, more than {limit} (raise max_len to unroll it)"
    return length, ""


def _unroll_scan(gm: torch.fx.GraphModule, loop: torch.fx.Node, steps: int, pass_name: str) -> None:
    """Replace scan node ``loop`` with ``steps`` inlined copies of its combine graph."""
    graph = gm.graph
    combine = fetch_attr(gm, loop.args[0].target)
    carry, xs, extra = list(loop.args[1]), list(loop.args[2]), list(loop.args[3])
    ys: list[list] = []
    with graph.inserting_before(loop):
        for t in range(steps):
            x_t = [inl.new_node(graph, inl.ATEN.select.int, (x, 0, t), loop, pass_name, t) for x in xs]
            out = inl.inline(gm, combine, carry + x_t + extra, loop, pass_name, t)
            carry = out[:len(carry)]
            if not ys:
                ys = [[] for _ in out[len(carry):]]
            for acc, y in zip(ys, out[len(carry):]):
                acc.append(y)
        stacked = [inl.new_node(graph, inl.ATEN.stack.default, (acc, 0), loop, pass_name) for acc in ys]
    inl.replace_results(gm, loop, carry + stacked, pass_name)


# ----------------------------------------------------------------------------------------------- while_loop
def _unroll_while(gm: torch.fx.GraphModule, loop: torch.fx.Node, steps: int, pass_name: str) -> None:
    """Replace while_loop node ``loop`` with ``steps`` inlined copies of its body."""
    body = fetch_attr(gm, loop.args[1].target)
    carry, extra = list(loop.args[2]), list(loop.args[3])
    with gm.graph.inserting_before(loop):
        for t in range(steps):
            carry = inl.inline(gm, body, carry + extra, loop, pass_name, t)
    inl.replace_results(gm, loop, carry, pass_name)


def _partition_while(gm: torch.fx.GraphModule, loop: torch.fx.Node, k: int, pass_name: str) -> torch.fx.Node:
    """Replace while_loop node ``loop`` with one whose body runs ``k`` predicated steps; returns the new
    node."""
    graph = gm.graph
    body = inl.predicated_body(gm, loop, k, pass_name)
    setattr(body, PARTITION_ATTR, k)
    name = fresh_attr_name(gm, f"{loop.args[1].target}_x{k}")
    gm.add_module(name, body)
    old_body = loop.args[1]
    with graph.inserting_before(loop):
        body_node = graph.get_attr(name)
        provenance.derive(body_node, old_body, pass_name)
        new = graph.call_function(inl.WHILE_LOOP, (loop.args[0], body_node, loop.args[2], loop.args[3]),
                                  dict(loop.kwargs))
    provenance.derive(new, loop, pass_name)
    new.meta["provenance"]["source"] = inl.loop_source(loop) or new.meta["provenance"]["source"]
    if "val" in loop.meta:
        new.meta["val"] = loop.meta["val"]
    loop.replace_all_uses_with(new)
    graph.erase_node(loop)
    inl.drop_unused_subgraphs(gm, [old_body])
    return new
