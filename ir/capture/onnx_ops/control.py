"""ONNX control flow and sequences: If, Loop (unrolled when its count is known), Sequence*."""
from __future__ import annotations

import torch

from fxopt.ir.capture.onnx_ops.base import Ctx, Known, NotKnown, rule, scalar, tensor


# ---------------------------------------------------------------------------------------------- control flow
@rule("If")
def _if(ctx: Ctx, inputs: list, attrs: dict) -> list:
    try:
        cond = bool(scalar(inputs[0], "condition"))
    except NotKnown as exc:
        raise NotKnown("its condition depends on tensor values; only If nodes whose condition follows from "
                       "shapes and constants are supported") from exc
    branch = attrs["then_branch"] if cond else attrs["else_branch"]
    return ctx.run_graph(branch, [], ctx.env)


MAX_LOOP_ITERATIONS = 100_000


@rule("Loop")
def _loop(ctx: Ctx, inputs: list, attrs: dict) -> list:
    """Unroll a Loop whose trip count and condition are known while tracing (from shapes and constants):
    this covers exporters' EmbeddingBag loops (one iteration per bag) for static batch sizes."""
    body = attrs["body"]
    trip = inputs[0] if inputs else None
    cond = inputs[1] if len(inputs) > 1 else None
    carried = list(inputs[2:])
    try:
        limit = int(scalar(trip, "trip count")) if trip is not None else MAX_LOOP_ITERATIONS
        go = bool(scalar(cond, "condition")) if cond is not None else True
    except NotKnown as exc:
        raise NotKnown("its trip count or condition depends on tensor values (or a dynamic dim); only loops "
                       "over a static count unroll. An nn.EmbeddingBag exports to such a loop: export with a "
                       "static batch size, or use nn.Embedding + sum instead") from exc
    n_scan = len(body.outputs) - 1 - len(carried)
    scans: list[list] = [[] for _ in range(n_scan)]
    i = 0
    while go and i < limit:
        outs = ctx.run_graph(body, [Known([i], (), torch.int64), Known([go], (), torch.bool), *carried], ctx.env)
        try:
            go = bool(scalar(outs[0], "condition"))
        except NotKnown as exc:
            raise NotKnown("its loop condition depends on tensor values; only loops over a static count "
                           "unroll") from exc
        carried = list(outs[1:1 + len(carried)])
        for k, v in enumerate(outs[1 + len(carried):]):
            scans[k].append(tensor(v))
        i += 1
        if trip is None and i >= MAX_LOOP_ITERATIONS:
            raise ValueError(f"the loop did not stop after {MAX_LOOP_ITERATIONS} iterations")
    stacked = []
    for k, items in enumerate(scans):
        if not items:
            raise ValueError("a Loop with zero iterations and scan outputs is not supported")
        stacked.append(torch.stack(items))
    return carried + stacked


@rule("SequenceEmpty")
def _sequence_empty(ctx: Ctx, inputs: list, attrs: dict) -> list:
    return [[]]


@rule("SequenceConstruct")
def _sequence_construct(ctx: Ctx, inputs: list, attrs: dict) -> list:
    return [list(inputs)]


@rule("SequenceInsert")
def _sequence_insert(ctx: Ctx, inputs: list, attrs: dict) -> list:
    seq, value = list(inputs[0]), inputs[1]
    if len(inputs) > 2 and inputs[2] is not None:
        pos = int(scalar(inputs[2], "position"))
        seq.insert(pos if pos >= 0 else pos + len(seq), value)
    else:
        seq.append(value)
    return [seq]


@rule("SequenceAt")
def _sequence_at(ctx: Ctx, inputs: list, attrs: dict) -> list:
    return [inputs[0][int(scalar(inputs[1], "position"))]]


@rule("SequenceLength")
def _sequence_length(ctx: Ctx, inputs: list, attrs: dict) -> list:
    return [Known([len(inputs[0])], (), torch.int64)]


@rule("ConcatFromSequence")
def _concat_from_sequence(ctx: Ctx, inputs: list, attrs: dict) -> list:
    items = [tensor(v) for v in inputs[0]]
    if not items:
        raise ValueError("ConcatFromSequence of an empty sequence")
    if attrs.get("new_axis", 0):
        return [torch.stack(items, attrs["axis"])]
    return [torch.cat(items, attrs["axis"])]
