"""Proving a ``while_loop``'s trip count at compile time.

A trip count is provable when the loop's condition depends only on carries (and additional inputs) whose
values at every iteration are compile-time constants: the cond graph's inputs, closed under the body's
dependencies, all start from values computed without graph inputs (``full``, ``zeros``, lifted constants,
weights). The typical case is a counter ``i`` starting at a constant, compared with a constant bound in
cond and bumped by a constant in body, while the other carries never reach cond. The count is then found
by running that slice of cond and body eagerly (the same ATen ops, dtypes and rounding as the loop itself)
until cond is false, up to a limit.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.fx

from fxopt.ir.program import fetch_attr
from fxopt.passes.unroll.hop_inline import outputs, placeholders

_MISSING = object()


def _depends(gm: torch.fx.GraphModule, values: list) -> set[int]:
    """Indices of ``gm``'s placeholders that the nodes in ``values`` (transitively) read."""
    index = {ph: i for i, ph in enumerate(placeholders(gm))}
    seen, stack, found = set(), [v for v in values if isinstance(v, torch.fx.Node)], set()
    while stack:
        node = stack.pop()
        if node in seen:
            continue
        seen.add(node)
        if node in index:
            found.add(index[node])
        stack.extend(node.all_input_nodes)
    return found


def _impure(node: torch.fx.Node) -> bool:
    """True for random ops (their value differs run to run)."""
    tags = getattr(node.target, "tags", ())
    return torch.Tag.nondeterministic_seeded in tags


def const_value(gm: torch.fx.GraphModule, node: Any, cache: dict | None = None) -> Any:
    """The value of ``node`` in graph module ``gm`` when it does not depend on a graph input (evaluated
    eagerly: get_attr tensors, constant-argument ATen ops such as ``full``), else ``_MISSING``."""
    cache = {} if cache is None else cache
    if not isinstance(node, torch.fx.Node):
        return node
    if node in cache:
        return cache[node]
    if node.op == "get_attr":
        value = fetch_attr(gm, node.target)
    elif node.op != "call_function" or _impure(node):
        value = _MISSING
    else:
        args = torch.fx.map_arg((node.args, node.kwargs), lambda a: const_value(gm, a, cache))
        flat = torch.utils._pytree.tree_leaves(args)
        value = _MISSING if any(v is _MISSING for v in flat) else node.target(*args[0], **args[1])
    cache[node] = value
    return value


def _eval(sub: torch.fx.GraphModule, targets: list, env: dict[int, Any]) -> list:
    """Evaluate ``targets`` (nodes of ``sub``) with placeholder ``i`` bound to ``env[i]``; only the nodes
    they depend on run."""
    index = {ph: i for i, ph in enumerate(placeholders(sub))}
    values: dict = {}

    def get(node: torch.fx.Node) -> Any:
        if node in values:
            return values[node]
        if node in index:
            value = env[index[node]]
        elif node.op == "get_attr":
            value = fetch_attr(sub, node.target)
        else:
            args = torch.fx.map_arg((node.args, node.kwargs), get)
            value = node.target(*args[0], **args[1])
        values[node] = value
        return value

    return [get(t) if isinstance(t, torch.fx.Node) else t for t in targets]


def trip_count(gm: torch.fx.GraphModule, loop: torch.fx.Node, limit: int) -> tuple[int | None, str]:
    """``(n, "")`` when ``loop`` (a while_loop node of ``gm``) provably runs its body exactly ``n <= limit``
    times, else ``(None, reason)`` naming the carry or condition that prevents the proof."""
    cond_gm, body_gm = fetch_attr(gm, loop.args[0].target), fetch_attr(gm, loop.args[1].target)
    carried, extra = list(loop.args[2]), list(loop.args[3])
    inputs = carried + extra
    n_carry = len(carried)
    body_out = outputs(body_gm)
    needed = _depends(cond_gm, outputs(cond_gm))
    stack = sorted(needed)
    while stack:
        j = stack.pop()
        if j < n_carry:
            for k in _depends(body_gm, [body_out[j]]) - needed:
                needed.add(k)
                stack.append(k)
    for sub, targets in ((cond_gm, outputs(cond_gm)), (body_gm, [body_out[j] for j in needed if j < n_carry])):
        for node in _slice(targets):
            if _impure(node):
                return None, f"the stop condition depends on the random op '{node.name}'"
    env, cache = {}, {}
    for j in sorted(needed):
        value = const_value(gm, inputs[j], cache)
        if value is _MISSING:
            what = f"carry {j}" if j < n_carry else f"additional input {j - n_carry}"
            return None, (f"the stop condition depends on {what} ('{_name(inputs[j])}'), which is not a "
                          "compile-time constant")
        env[j] = value
    steps = [j for j in sorted(needed) if j < n_carry]
    for n in range(limit + 1):
        (go,) = _eval(cond_gm, outputs(cond_gm), env)
        if not bool(go):
            return n, ""
        env.update(zip(steps, _eval(body_gm, [body_out[j] for j in steps], env)))
    return None, f"it runs more than {limit} steps (raise max_len to unroll it)"


def _slice(targets: list) -> set[torch.fx.Node]:
    """The call_function nodes ``targets`` depend on (themselves included)."""
    seen, stack = set(), [t for t in targets if isinstance(t, torch.fx.Node)]
    while stack:
        node = stack.pop()
        if node in seen:
            continue
        seen.add(node)
        stack.extend(node.all_input_nodes)
    return {n for n in seen if n.op == "call_function"}


def _name(value: Any) -> str:
    return value.name if isinstance(value, torch.fx.Node) else repr(value)
