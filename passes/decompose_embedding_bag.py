"""`decompose-embedding-bag`: rewrite ``aten._embedding_bag`` (sum/mean) as a gather plus a segment sum.

``torch.onnx`` exports ``_embedding_bag`` as a ``Loop`` over bags that builds ``Sequence`` values, which
TensorRT rejects (and which most ONNX consumers run slowly). The rewrite keeps the numerics with ops every
accelerator route takes:

- fixed-size bags (``offsets`` is ``arange(0, N, L)``, as ``nn.EmbeddingBag`` makes for 2-D inputs, or a
  constant holding those values after fold-constants):
  ``embedding(weight, indices.view(B, L))`` then ``sum``/``mean`` over dim 1;
- general offsets: ``rows = embedding(weight, indices)`` ([N, D], times ``per_sample_weights`` when given);
  the bag of each index is ``cumsum`` of a 0/1 start marker (``scatter_add`` of ones at ``offsets[1:]``),
  then ``out = zeros(B, D).scatter_add(0, bag, rows)``; ``mean`` divides by the bag sizes (empty bags give 0,
  as in PyTorch). The marker cumsum runs in float32 (TensorRT's CumSum takes floats only): exact for up to
  2**24 indices per call.

Rewritten only when the op's extra outputs (offset2bag, bag_size, max_indices) are unused, ``mode`` is sum (0)
or mean (1), ``padding_idx`` is unset (-1) and ``per_sample_weights`` is absent or ``mode`` is sum; other
calls are left alone and counted in the report.
"""
from __future__ import annotations

import operator
from dataclasses import dataclass

import torch
import torch.fx

from fxopt.ir import provenance
from fxopt.ir.program import Program, fetch_attr
from fxopt.passes.base import Pass, PassResult

aten = torch.ops.aten
_EMBEDDING_BAG = (aten._embedding_bag.default, aten._embedding_bag_forward_only.default)


def _arg(node: torch.fx.Node, index: int, name: str, default):
    if len(node.args) > index:
        return node.args[index]
    return node.kwargs.get(name, default)


def _static_int(value) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _fixed_bag_size(offsets: torch.fx.Node, indices: torch.fx.Node, gm: torch.fx.GraphModule) -> int | None:
    """L when ``offsets`` is ``arange(0, N, L)`` (or ``arange(N)`` with L = 1, or a weight holding those
    values, as fold-constants leaves it) for the static N of ``indices``."""
    val = indices.meta.get("val")
    if not isinstance(offsets, torch.fx.Node) or not isinstance(val, torch.Tensor):
        return None
    if val.dim() != 1 or not isinstance(val.shape[0], int):
        return None
    n = int(val.shape[0])
    if offsets.op == "get_attr":
        const = fetch_attr(gm, offsets.target)
        if not isinstance(const, torch.Tensor) or const.dim() != 1 or const.numel() == 0 or n == 0:
            return None
        step = int(const[1] - const[0]) if const.numel() > 1 else n
        if step <= 0 or n % step or not torch.equal(const.cpu().long(), torch.arange(0, n, step)):
            return None
        return step
    if offsets.op != "call_function":
        return None
    if offsets.target is aten.arange.start_step:
        start, end, step = (list(offsets.args) + [1])[:3]
    elif offsets.target is aten.arange.start:
        start, end, step = offsets.args[0], offsets.args[1], 1
    elif offsets.target is aten.arange.default:
        start, end, step = 0, offsets.args[0], 1
    else:
        return None
    if start != 0 or _static_int(step) is None or _static_int(end) is None or step <= 0:
        return None
    if end != n or n % step != 0:
        return None
    return int(step)


@dataclass(frozen=True)
class DecomposeEmbeddingBag(Pass):
    """Rewrite ``_embedding_bag`` (sum/mean, first output only) as gather + segment sum (no Loop)."""

    name = "decompose-embedding-bag"

    def run(self, program: Program) -> PassResult:
        """Rewrite every eligible ``_embedding_bag`` node; report how many were rewritten and skipped."""
        graph = program.graph
        rewritten, skipped = 0, []
        for node in list(graph.nodes):
            if node.op != "call_function" or node.target not in _EMBEDDING_BAG:
                continue
            why = self._why_not(node)
            if why:
                skipped.append(f"{node.name}: {why}")
                continue
            self._rewrite(program.graph_module, node)
            rewritten += 1
        return PassResult(modified=rewritten > 0, details={"rewritten": rewritten, "skipped": len(skipped)},
                          notes=skipped)

    @staticmethod
    def _why_not(node: torch.fx.Node) -> str | None:
        mode = _arg(node, 4, "mode", 0)
        if mode not in (0, 1):
            return f"mode {mode} (max) is not decomposed"
        if _arg(node, 8, "padding_idx", -1) not in (-1, None):
            return "padding_idx is set"
        if _arg(node, 6, "per_sample_weights", None) is not None and mode != 0:
            return "per_sample_weights with mode mean"
        for user in node.users:
            if not (user.target is operator.getitem and user.args[1] == 0):
                return "its offset2bag/bag_size/max_indices outputs are used"
        weight, indices = node.args[0], node.args[1]
        for v in (weight, indices):
            val = v.meta.get("val") if isinstance(v, torch.fx.Node) else None
            if not isinstance(val, torch.Tensor):
                return "operand shapes unknown"
        if indices.meta["val"].dim() != 1 or weight.meta["val"].dim() != 2:
            return "indices must be 1-D and weight 2-D"
        return None

    def _rewrite(self, gm: torch.fx.GraphModule, node: torch.fx.Node) -> None:
        graph = gm.graph
        weight, indices, offsets = node.args[0], node.args[1], node.args[2]
        mode = _arg(node, 4, "mode", 0)
        psw = _arg(node, 6, "per_sample_weights", None)
        last = bool(_arg(node, 7, "include_last_offset", False))
        made: list[torch.fx.Node] = []

        def call(target, *args):
            new = graph.call_function(target, tuple(args))
            made.append(new)
            return new

        size = _fixed_bag_size(offsets, indices, gm) if psw is None and not last else None
        with graph.inserting_before(node):
            if size is not None:
                n = int(indices.meta["val"].shape[0])
                ids = call(aten.view.default, indices, [n // size, size])
                rows = call(aten.embedding.default, weight, ids)
                out = call(aten.sum.dim_IntList if mode == 0 else aten.mean.dim, rows, [1])
            else:
                out = self._segment_sum(call, weight, indices, offsets, psw, mode, last)
        for new in made:
            provenance.derive(new, node, self.name)
        for user in list(node.users):
            user.replace_all_uses_with(out)
            graph.erase_node(user)
        graph.erase_node(node)

    @staticmethod
    def _segment_sum(call, weight, indices, offsets, psw, mode, last):
        dtype = weight.meta["val"].dtype
        dim = weight.meta["val"].shape[1]
        rows = call(aten.embedding.default, weight, indices)                                 # [N, D]
        if psw is not None:
            rows = call(aten.mul.Tensor, rows, call(aten.unsqueeze.default, psw, 1))
        bag_offsets = call(aten.slice.Tensor, offsets, 0, 0, -1) if last else offsets        # [B]
        starts = call(aten.slice.Tensor, bag_offsets, 0, 1, 9223372036854775807)             # [B-1]
        marks = call(aten.zeros_like.default, indices)
        marks = call(aten._to_copy.default, marks)
        marks.kwargs = {"dtype": torch.float32}
        marks = call(aten.constant_pad_nd.default, marks, [0, 1])                            # [N+1]
        ones = call(aten.ones_like.default, starts)
        ones.kwargs = {"dtype": torch.float32}
        marks = call(aten.scatter_add.default, marks, 0, starts, ones)
        marks = call(aten.slice.Tensor, marks, 0, 0, -1)                                     # [N]
        bag = call(aten.cumsum.default, marks, 0)
        bag = call(aten._to_copy.default, bag)
        bag.kwargs = {"dtype": torch.int64}                                                  # bag of each index
        base = call(aten.zeros_like.default, bag_offsets)
        base.kwargs = {"dtype": dtype}
        base = call(aten.unsqueeze.default, base, 1)
        base = call(aten.expand.default, base, [-1, dim])                                    # [B, D]
        index = call(aten.expand.default, call(aten.unsqueeze.default, bag, 1), [-1, dim])   # [N, D]
        out = call(aten.scatter_add.default, base, 0, index, rows)
        if mode == 1:
            counts = call(aten.zeros_like.default, bag_offsets)
            counts.kwargs = {"dtype": dtype}
            per_index = call(aten.ones_like.default, indices)
            per_index.kwargs = {"dtype": dtype}
            counts = call(aten.scatter_add.default, counts, 0, bag, per_index)
            counts = call(aten.clamp_min.default, counts, 1)
            out = call(aten.div.Tensor, out, call(aten.unsqueeze.default, counts, 1))
        return out
