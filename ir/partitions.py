"""The partitions region: the CPU/accelerator cut that ``split`` records on a Program, and the runnable
GraphModule of each partition, which the partitioned backends compile and run.

``program.regions`` holds at most one ``{"kind": "partitions", "partitions": [{"name", "device", "nodes",
"inputs", "outputs"}, ...], ...}`` entry (node names of the program's graph, partitions in execution order).
This is IR structure, read by passes and backends alike, so it lives here rather than in the pass that
writes it.
"""
from __future__ import annotations

import operator
from typing import Callable

import torch
import torch.fx

from fxopt.errors import InputError
from fxopt.ir.cost import at_example_sizes, node_cost
from fxopt.ir.program import Program, fetch_attr

__all__ = ["REGION_KIND", "partitions_region", "extract_partitions", "partition_module", "run_partitions",
           "accelerator_work", "placements", "node_flops"]

REGION_KIND = "partitions"


def partitions_region(program: Program, required: bool = True) -> dict | None:
    """The ``{"kind": "partitions", ...}`` region that ``split`` recorded on ``program`` (the last one).
    Raises InputError when there is none and ``required``; returns None otherwise."""
    for region in reversed(program.regions):
        if isinstance(region, dict) and region.get("kind") == REGION_KIND:
            return region
    if required:
        raise InputError(f"program '{program.name}' has no partitions; run the 'split' pass first")
    return None


def placements(program: Program, target: str | None = None) -> dict[str, str]:
    """``{node name: device}`` for every node of ``program``'s graph, as the partitioned backends run it:
    the device of the ``split`` partition that holds the node when there is a partitions region (nodes in
    none: their ``node.meta["placement"]``, else ``"cpu"``). Without a region the backends run the whole
    graph as one ``target`` stage, so with ``target`` given every call_function node is on ``target``;
    without it, ``node.meta["placement"]`` (``"cpu"`` when missing)."""
    region = partitions_region(program, required=False)
    if region is None and target is not None:
        return {n.name: (target if n.op == "call_function" else "cpu") for n in program.graph.nodes}
    out = {n.name: n.meta.get("placement") or "cpu" for n in program.graph.nodes}
    for rec in (region or {}).get("partitions", []):
        for name in rec.get("nodes", []):
            if name in out:
                out[name] = rec.get("device", out[name])
    return out


def _structural_bookkeeping(node: torch.fx.Node) -> bool:
    """getitem, or a call whose value is not a tensor (nor a tuple of them): metadata assertions, sym_size,
    SymInt arithmetic. The same nodes as :func:`fxopt.ir.targets.is_bookkeeping`, which this layer does not
    import."""
    if node.target is operator.getitem:
        return True
    if isinstance(node.target, torch._ops.HigherOrderOperator):
        return False
    val = node.meta.get("val")
    return not isinstance(val, (torch.Tensor, tuple, list))


def accelerator_work(program: Program, target: str | None = None,
                     is_bookkeeping: Callable[[torch.fx.Node], bool] | None = None) -> dict:
    """How much of ``program`` runs on an accelerator after ``split``.

    Returns ``{"target": str | None, "accelerator_ops": int, "total_ops": int,
    "accelerator_flops_fraction": float, "flops": float}``:

    - ``target``: the partitions region's target, else the ``target`` argument (None when neither);
    - ops: call_function nodes that are not ``getitem`` or bookkeeping (``is_bookkeeping``, default: a value
      that is not a tensor, as :func:`fxopt.ir.targets.is_bookkeeping` decides); ``accelerator_ops`` are
      those whose placement (:func:`placements`) is not ``"cpu"``;
    - ``accelerator_flops_fraction``: FLOPs placed off the CPU / all FLOPs of those ops, in [0, 1]; 0.0 when
      the graph has no FLOPs. FLOPs are ``node.meta["cost"]`` (:func:`fxopt.ir.cost.node_cost` when missing)
      at the example sizes (data-dependent sizes at their bound, :func:`fxopt.ir.cost.at_example_sizes`);
    - ``flops``: the total FLOPs of those ops at the example sizes (0.0 for a graph with none).

    ``target``: the accelerator the program is compiled for; only used when there is no partitions region
    (then every op runs on it, as in the partitioned backends). Reads the program, changes nothing."""
    region = partitions_region(program, required=False)
    skip = is_bookkeeping or _structural_bookkeeping
    where = placements(program, target)
    gm = program.graph_module
    bounds: dict = {}
    ops = acc_ops = 0
    flops = acc_flops = 0.0
    for node in program.graph.nodes:
        if node.op != "call_function" or node.target is operator.getitem or skip(node):
            continue
        ops += 1
        on_acc = where.get(node.name, "cpu") != "cpu"
        acc_ops += on_acc
        f = node_flops(node, gm, bounds)
        flops += f
        if on_acc:
            acc_flops += f
    return {"target": (region or {}).get("target") or target,
            "accelerator_ops": acc_ops, "total_ops": ops,
            "accelerator_flops_fraction": acc_flops / flops if flops > 0 else 0.0,
            "flops": flops}


def node_flops(node: torch.fx.Node, gm: torch.fx.GraphModule | None = None, bounds: dict | None = None) -> float:
    """FLOPs of ``node`` as a float: ``node.meta["cost"]`` (or :func:`fxopt.ir.cost.node_cost`) at the
    example sizes of ``gm`` (default: the node's owning module); 0.0 when they cannot be made a number.
    ``bounds``: a cache kept across nodes of one graph (see :func:`fxopt.ir.cost.at_example_sizes`)."""
    cost = node.meta.get("cost")
    try:
        if cost is None or not hasattr(cost, "flops"):
            cost = node_cost(node)
        flops = cost.flops
        if not isinstance(flops, (int, float)):
            cost = at_example_sizes(cost, gm if gm is not None else node.graph.owning_module, bounds)
            flops = cost.flops
        value = float(flops)
    except Exception:  # noqa: BLE001 - a cost the model cannot evaluate counts as none (an estimate only)
        return 0.0
    return value if value >= 0 and value != float("inf") else 0.0


def extract_partitions(program: Program) -> list[tuple[str, str, torch.fx.GraphModule, list[str], list[str]]]:
    """Build one runnable GraphModule per partition recorded by ``split``.

    Returns ``[(name, device, module, input_names, output_names), ...]`` in execution order. A module takes
    its inputs (values named ``input_names`` in the original graph: graph inputs or other partitions'
    outputs) positionally and returns a tuple of the values ``output_names``. Weights are shared with
    ``program`` (not copied). The original graph is left as it is."""
    region = partitions_region(program)
    by_name = {n.name: n for n in program.graph.nodes}
    result = []
    for rec in region["partitions"]:
        module = partition_module(program, rec, by_name)
        result.append((rec["name"], rec["device"], module, list(rec["inputs"]), list(rec["outputs"])))
    return result


def partition_module(program: Program, rec: dict, by_name: dict | None = None) -> torch.fx.GraphModule:
    """The GraphModule of one partition record ``rec`` (``name``, ``nodes``, ``inputs``, ``outputs``: node
    names of ``program``'s graph): placeholders named after ``inputs``, the member nodes copied in order,
    weights read with get_attr (shared, not copied), returning the tuple of ``outputs``. ``by_name``: the
    graph's ``{name: node}``, when the caller has it. Raises InputError when the record does not fit the
    graph (it changed after ``split``)."""
    by_name = by_name if by_name is not None else {n.name: n for n in program.graph.nodes}
    g = torch.fx.Graph()
    env: dict = {}
    for name in rec["inputs"]:
        if name not in by_name:
            raise InputError(f"partition '{rec['name']}' reads '{name}', which is not in the graph; "
                             "the graph changed after 'split': run it again")
        ph = g.placeholder(name)
        ph.meta = dict(by_name[name].meta)
        env[by_name[name]] = ph

    def lookup(a: torch.fx.Node) -> torch.fx.Node:
        if a not in env:
            if a.op != "get_attr":
                raise InputError(f"partition '{rec['name']}' uses '{a.name}' without reading it; "
                                 "the graph changed after 'split': run it again")
            env[a] = g.get_attr(a.target)
            env[a].meta = dict(a.meta)
        return env[a]

    for name in rec["nodes"]:
        node = by_name.get(name)
        if node is None:
            raise InputError(f"partition '{rec['name']}' lists '{name}', which is not in the graph; "
                             "run 'split' again")
        for a in node.all_input_nodes:
            lookup(a)
        env[node] = g.node_copy(node, lambda a: env[a])
    g.output(tuple(env[by_name[name]] for name in rec["outputs"]))
    return torch.fx.GraphModule(program.graph_module, g)


def run_partitions(program: Program, flat_inputs, partitions=None) -> tuple:
    """Run ``program``'s partitions one after another on ``flat_inputs`` (placeholder order), feeding each
    partition's outputs forward, and return the graph's flat outputs as a tuple (what ``program.run_flat``
    returns). ``partitions`` defaults to :func:`extract_partitions` (program)."""
    parts = extract_partitions(program) if partitions is None else partitions
    env = {ph.name: value for ph, value in zip(program.placeholders(), flat_inputs)}
    with torch.no_grad():
        for _, _, module, inputs, outputs in parts:
            values = module(*(env[name] for name in inputs))
            env.update(zip(outputs, values))

    def value(a: torch.fx.Node):
        if a.op == "get_attr":
            return fetch_attr(program.graph_module, a.target)
        return env[a.name]

    out = torch.fx.node.map_arg(program.output_node().args[0], value)
    return tuple(out) if isinstance(out, (tuple, list)) else (out,)
