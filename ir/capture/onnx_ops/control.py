"""ONNX control flow and sequences: If, Loop (unrolled when its count is known), Sequence*."""
from __future__ import annotations

from typing import Any

import torch

from fxopt.ir.capture.onnx_ops.base import Ctx, Known, NotKnown, ints, rule, scalar, tensor


# ---------------------------------------------------------------------------------------------- control flow
@rule("If")
def _if(ctx: Ctx, inputs: list, attrs: dict) -> list:
    """If: a condition known while tracing (shapes, constants) runs one branch inline. A condition computed
    from tensor values runs both branches and selects each output with ``torch.where``: exact, since ONNX
    branches have no side effects, provided both give outputs of one shape and dtype (else a one-line error).
    (``torch.cond`` would run only one branch, but it traces branches with dynamo, which refuses this
    interpreter's bookkeeping as a side effect.)"""
    cond = inputs[0]
    if isinstance(cond, Known):
        branch = attrs["then_branch"] if bool(cond.scalar()) else attrs["else_branch"]
        return ctx.run_graph(branch, [], ctx.env)
    then_outs = [tensor(v) for v in ctx.run_graph(attrs["then_branch"], [], ctx.env)]
    else_outs = [tensor(v) for v in ctx.run_graph(attrs["else_branch"], [], ctx.env)]
    pred = tensor(cond).reshape(())
    pred = pred if pred.dtype == torch.bool else pred != 0
    outs = []
    for k, (a, b) in enumerate(zip(then_outs, else_outs)):
        if not isinstance(a, torch.Tensor) or not isinstance(b, torch.Tensor) or a.dtype != b.dtype \
                or list(a.shape) != list(b.shape):
            raise NotKnown(f"its condition depends on tensor values and output {k} differs between the branches "
                           f"({_describe(a)} vs {_describe(b)}); only branches giving equal shapes and dtypes "
                           "are supported then")
        outs.append(torch.where(pred, a, b))
    return outs


def _describe(v: Any) -> str:
    if isinstance(v, torch.Tensor):
        return f"{str(v.dtype).replace('torch.', '')}{list(v.shape)}"
    return type(v).__name__


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


@rule("Scan")
def _scan(ctx: Ctx, inputs: list, attrs: dict) -> list:
    """Scan, unrolled over the (static) scan length: the body runs once per slice of the scan inputs, carrying
    the state variables; scan outputs are stacked. Opset 8's form (a leading batch axis and an optional
    ``sequence_lens`` input) runs the opset-9 form once per batch item; only full-length sequences."""
    body = attrs["body"]
    n_scan = attrs["num_scan_inputs"]
    if ctx.opset < 9:
        if inputs and inputs[0] is not None:
            raise ValueError("Scan's sequence_lens input (opset 8) is not supported; re-export with opset >= 9")
        states, scans = [tensor(v) for v in inputs[1:len(inputs) - n_scan]], [tensor(v) for v in inputs[-n_scan:]]
        per_item = [_scan_once(ctx, body, attrs, [s[b] for s in states], [x[b] for x in scans], n_scan)
                    for b in range(scans[0].shape[0])]
        return [torch.stack([item[k] for item in per_item]) for k in range(len(per_item[0]))]
    states = [tensor(v) for v in inputs[: len(inputs) - n_scan]]
    return _scan_once(ctx, body, attrs, states, [tensor(v) for v in inputs[len(inputs) - n_scan:]], n_scan)


def _scan_once(ctx: Ctx, body: Any, attrs: dict, states: list, scans: list, n_scan: int) -> list:
    in_axes = list(attrs.get("scan_input_axes", [0] * n_scan))
    in_dirs = list(attrs.get("scan_input_directions", [0] * n_scan))
    n_out = len(body.outputs) - len(states)
    out_axes = list(attrs.get("scan_output_axes", [0] * n_out))
    out_dirs = list(attrs.get("scan_output_directions", [0] * n_out))
    in_axes = [a + x.dim() if a < 0 else a for a, x in zip(in_axes, scans)]
    length = scans[0].shape[in_axes[0]]
    collected: list[list] = [[] for _ in range(n_out)]
    for t in range(length):
        slices = [torch.select(x, a, length - 1 - t if d else t) for x, a, d in zip(scans, in_axes, in_dirs)]
        outs = ctx.run_graph(body, [*states, *slices], ctx.env)
        states = [tensor(v) for v in outs[: len(states)]]
        for k, v in enumerate(outs[len(states):]):
            collected[k].append(tensor(v))
    results = []
    for items, axis, direction in zip(collected, out_axes, out_dirs):
        if direction:
            items = items[::-1]
        rank = items[0].dim() + 1
        results.append(torch.stack(items, axis + rank if axis < 0 else axis))
    return states + results


@rule("OptionalHasElement")
def _optional_has_element(ctx: Ctx, inputs: list, attrs: dict) -> list:
    """OptionalHasElement: whether the (optional) input is present; an absent input is an empty optional."""
    present = bool(inputs) and inputs[0] is not None
    return [Known([present], (), torch.bool)]


@rule("OptionalGetElement")
def _optional_get_element(ctx: Ctx, inputs: list, attrs: dict) -> list:
    """OptionalGetElement: the element of a present optional (a plain tensor input passes through)."""
    if not inputs or inputs[0] is None:
        raise ValueError("OptionalGetElement of an empty optional")
    return [inputs[0]]


@rule("SplitToSequence")
def _split_to_sequence(ctx: Ctx, inputs: list, attrs: dict) -> list:
    """SplitToSequence: the input split along ``axis`` into a sequence (a Python list): chunks of size 1
    (squeezed unless keepdims=1) without ``split``, of ``split`` elements for a scalar, of the given sizes
    for a 1-D ``split``."""
    x = tensor(inputs[0])
    axis = attrs.get("axis", 0)
    split = inputs[1] if len(inputs) > 1 else None
    if split is None:
        parts = list(torch.split(x, 1, dim=axis))
        if not attrs.get("keepdims", 1):
            parts = [torch.squeeze(p, axis) for p in parts]
        return [parts]
    sizes = ints(split, "split")
    if isinstance(split, Known) and split.shape == ():
        return [list(torch.split(x, sizes[0], dim=axis))]
    return [list(torch.split(x, sizes, dim=axis))]


@rule("SequenceErase")
def _sequence_erase(ctx: Ctx, inputs: list, attrs: dict) -> list:
    """SequenceErase: the sequence without the element at ``position`` (default: the last)."""
    seq = list(inputs[0])
    pos = int(scalar(inputs[1], "position")) if len(inputs) > 1 and inputs[1] is not None else -1
    del seq[pos]
    return [seq]
