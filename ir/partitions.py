"""The partitions region: the CPU/accelerator cut that ``split`` records on a Program, and the runnable
GraphModule of each partition, which the partitioned backends compile and run.

``program.regions`` holds at most one ``{"kind": "partitions", "partitions": [{"name", "device", "nodes",
"inputs", "outputs"}, ...], ...}`` entry (node names of the program's graph, partitions in execution order).
This is IR structure, read by passes and backends alike, so it lives here rather than in the pass that
writes it.
"""
from __future__ import annotations

import torch
import torch.fx

from fxopt.errors import InputError
from fxopt.ir.program import Program, fetch_attr

__all__ = ["REGION_KIND", "partitions_region", "extract_partitions", "partition_module", "run_partitions"]

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
