"""Rewrites stated as Before and Expected models (tests/rewriting.py): the pass must turn the first into the
second exactly (structurally), keep numerics and be idempotent."""
from __future__ import annotations

import torch

from rewriting import Fn, assert_rewrites

X = (torch.randn(3, 4, generator=torch.Generator().manual_seed(0)),)
X_OTHER = (torch.randn(3, 4, generator=torch.Generator().manual_seed(1)),)


def test_canonicalize_drops_identities_and_cancelling_permutes():
    # (permute(permute(x * 1 + 0, [1, 0]), [1, 0])).relu() == x.relu()
    before = Fn(lambda x: ((x * 1 + 0).permute(1, 0).permute(1, 0)).relu())
    expected = Fn(lambda x: x.relu())
    assert_rewrites("canonicalize", before, expected, X, X_OTHER)


def test_canonicalize_collapses_a_view_chain():
    # view(view(x, [2, 6]), [4, 3]) == view(x, [4, 3])
    before = Fn(lambda x: x.view(2, 6).view(4, 3) + 1)
    expected = Fn(lambda x: x.view(4, 3) + 1)
    assert_rewrites("canonicalize", before, expected, X, X_OTHER)


def test_stable_sort_makes_a_sort_stable():
    # sort(x, dim, descending) == sort(x, dim, descending, stable=True), up to the order of equal keys
    before = Fn(lambda x: torch.sort(x, dim=0, descending=True))
    expected = Fn(lambda x: torch.sort(x, dim=0, descending=True, stable=True))
    assert_rewrites("stable-sort", before, expected, X, X_OTHER)


def test_dedupe_merges_a_repeated_subexpression():
    # relu(x) + relu(x) == r + r with r = relu(x)
    before = Fn(lambda x: x.relu() + x.relu())

    def once(x):
        r = x.relu()
        return r + r

    assert_rewrites("dedupe", before, Fn(once), X, X_OTHER)


def test_dce_removes_an_unused_computation():
    def dead(x):
        _ = (x * 2).exp()
        return x + 1

    assert_rewrites("dce", Fn(dead), Fn(lambda x: x + 1), X, X_OTHER)


class _ScaledWeight(torch.nn.Module):
    """x @ (w * 2).T: the weight arithmetic runs on every call."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.randn(5, 4, generator=torch.Generator().manual_seed(2)))

    def forward(self, x):
        return x @ (self.w * 2).t()


class _FoldedWeight(torch.nn.Module):
    """The same with (w * 2) computed once, ahead of time."""

    def __init__(self):
        super().__init__()
        self.register_buffer("w2", _ScaledWeight().w.detach() * 2)

    def forward(self, x):
        return x @ self.w2.t()


def test_fold_constants_precomputes_weight_arithmetic():
    assert_rewrites("fold-constants", _ScaledWeight(), _FoldedWeight(), X, X_OTHER)


def test_graph_key_ignores_names_and_sees_every_difference():
    import fxopt
    from fxopt.ir.structure import graph_key

    def key(fn):
        return graph_key(fxopt.capture(Fn(fn).eval(), X).graph_module)

    assert key(lambda x: x.relu() + 1) == key(lambda y: y.relu() + 1)
    assert key(lambda x: x.relu() + 1) != key(lambda x: x.relu() + 2)       # a constant
    assert key(lambda x: x.relu() + 1) != key(lambda x: x.sigmoid() + 1)    # an op
    assert key(lambda x: x - x.relu()) != key(lambda x: x.relu() - x)       # argument order

    program = fxopt.capture(Fn(lambda x: x.relu() + 1).eval(), X)
    x = next(n for n in program.graph.nodes if n.op == "placeholder")
    with program.graph.inserting_after(x):
        program.graph.call_function(torch.ops.aten.exp.default, (x,))   # a dead node
    assert graph_key(program.graph_module) != key(lambda x: x.relu() + 1)
