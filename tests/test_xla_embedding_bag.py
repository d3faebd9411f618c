"""The XLA lowering of embedding bags of equal, constant length (what nn.EmbeddingBag makes of 2-D input):
a gather and a sum instead of segment sums (scatters), with the same numbers as PyTorch; other bags keep the
general rule."""
from __future__ import annotations

import pytest
import torch

pytest.importorskip("jax")

import fxopt  # noqa: E402
from fxopt.backends.xla.backend import xla_stages  # noqa: E402
from fxopt.backends.xla import lower  # noqa: E402
from fxopt.ir.numerics import assert_outputs_close  # noqa: E402


class Bags(torch.nn.Module):
    def __init__(self, mode: str) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.a = torch.nn.EmbeddingBag(100, 8, mode=mode)
        self.b = torch.nn.EmbeddingBag(50, 8, mode=mode)

    def forward(self, ids_a, ids_b):
        return torch.cat([self.a(ids_a), self.b(ids_b)], dim=1)


def _hlo(compiled, inputs) -> str:
    stage = xla_stages(compiled)[0]
    return stage._jitted.lower(stage.params, *[lower.to_jax(t) for t in inputs]).as_text()


@pytest.mark.numerics
@pytest.mark.parametrize("mode", ["sum", "mean"])
def test_equal_bags_lower_without_scatters_and_match_pytorch(mode):
    model = Bags(mode).eval()
    inputs = (torch.randint(0, 100, (6, 4)), torch.randint(0, 50, (6, 1)))
    compiled, _ = fxopt.export(model, inputs, backend="xla", passes="canonicalize,fold-constants,dce")
    with torch.no_grad():
        assert_outputs_close(compiled(*inputs), model(*inputs))
    hlo = _hlo(compiled, inputs)
    assert "scatter" not in hlo and "gather" in hlo


@pytest.mark.numerics
def test_bags_of_different_lengths_keep_the_general_rule():
    class Ragged(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(0)
            self.bag = torch.nn.EmbeddingBag(100, 8, mode="mean")

        def forward(self, ids, offsets):
            return self.bag(ids, offsets)

    model = Ragged().eval()
    inputs = (torch.randint(0, 100, (10,)), torch.tensor([0, 3, 4, 9]))
    compiled, _ = fxopt.export(model, inputs, backend="xla", passes="canonicalize,dce")
    with torch.no_grad():
        assert_outputs_close(compiled(*inputs), model(*inputs))
    assert "scatter" in _hlo(compiled, inputs)   # offsets are an input: segment sums
