"""Decomposing ``scaled_dot_product_attention`` in the memory layout export recorded for it.

On the CPU, eager sdpa runs the flash kernel, whose output is a (batch, heads, seq, dim) tensor laid out as
(batch, seq, heads, dim) in memory. torch.export records that layout, and a model that transposes the result
back to (batch, seq, heads, dim) and reshapes it (GPT-2: ``attn_output.transpose(1, 2).reshape(b, s, -1)``)
gets a ``view`` in the graph. torch's default decomposition computes attention in contiguous layout, so that
``view`` fails ("Cannot view a tensor with shape ... and strides ...") and the model cannot be lowered to
core ATen. :func:`sdpa_in_recorded_layout` gives a decomposition table whose sdpa is the math composite
followed by a copy into the layout each sdpa node recorded.
"""
from __future__ import annotations

import torch

aten = torch.ops.aten


def has_sdpa(ep: torch.export.ExportedProgram) -> bool:
    """Whether ``ep``'s graph calls ``aten.scaled_dot_product_attention``."""
    return any(n.target is aten.scaled_dot_product_attention.default for n in ep.graph.nodes)


def sdpa_in_recorded_layout(ep: torch.export.ExportedProgram) -> dict:
    """torch.export's default decomposition table with sdpa decomposed into the math composite, each
    call's result copied into the dim order its node recorded in ``ep`` (nodes are decomposed in graph
    order, so the i-th call takes the i-th node's order). Returns the table for ``run_decompositions``."""
    orders = [_dim_order(n.meta.get("val")) for n in ep.graph.nodes
              if n.target is aten.scaled_dot_product_attention.default]
    calls = iter(orders)

    def sdpa(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, *, scale=None,
             enable_gqa=False):
        if attn_mask is not None and attn_mask.dtype == torch.bool:
            # sdpa turns a boolean mask into an additive one before its kernels; the math op adds it as is
            attn_mask = torch.zeros(attn_mask.shape, dtype=query.dtype, device=attn_mask.device).masked_fill(
                attn_mask.logical_not(), float("-inf"))
        out = aten._scaled_dot_product_attention_math.default(query, key, value, attn_mask, dropout_p, is_causal,
                                                              None, scale=scale, enable_gqa=enable_gqa)[0]
        order = next(calls, None)
        if order is None or order == list(range(out.dim())):
            return out
        # lay the values out in memory in `order` (outermost first), keeping the logical shape
        inverse = sorted(range(len(order)), key=order.__getitem__)
        return out.permute(order).contiguous().permute(inverse)

    table = torch.export.default_decompositions()
    table[aten.scaled_dot_product_attention.default] = sdpa
    return table


def _dim_order(val) -> list[int] | None:
    """The dims of ``val`` from outermost to innermost in memory (strides descending), or None."""
    if not isinstance(val, torch.Tensor):
        return None
    try:
        strides = [int(s) for s in val.stride()]
    except (TypeError, ValueError, RuntimeError):   # symbolic strides: keep the default layout
        return None
    return sorted(range(val.dim()), key=lambda d: -strides[d])
