"""Verification after a pass: the graph is well-formed and computes what it computed before.

The numerics comparison is the one rule every check shares (:mod:`fxopt.ir.numerics`): integers and bools
exactly, floats within ``K * eps(dtype) * sqrt(depth) * max(1, max|expected|)``, with ``depth`` the roundings
on the path to each output of the graph before the pass.
"""
from __future__ import annotations

import torch.fx

from fxopt.ir.numerics import deeper, first_difference, output_depths

__all__ = ["lint", "first_difference", "output_depths", "deeper"]


def lint(gm: torch.fx.GraphModule) -> str | None:
    """Run ``graph.lint()``; returns the problem as one line, or None when the graph is well-formed."""
    try:
        gm.graph.lint()
    except Exception as exc:  # noqa: BLE001 - lint raises plain RuntimeErrors
        return str(exc).strip().splitlines()[0]
    return None
