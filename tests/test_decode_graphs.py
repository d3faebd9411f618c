"""Output shapes of a captured step graph read off its symbolic shapes (decode_graphs), against running it."""
from __future__ import annotations

import torch
from torch._subclasses.fake_tensor import FakeTensorMode

from fxopt.ir.decode_graphs import output_shapes_by_substitution


class _Step(torch.nn.Module):
    """A decoder step as capture sees one: the cache grows by one position, the logits do not."""

    def forward(self, token: torch.Tensor, cache: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        new = token.float().reshape(-1, 1, 1).expand(-1, 1, cache.shape[2])
        grown = torch.cat([cache, new], dim=1)
        return grown.sum(1) * 2.0, grown


def _step_graph() -> torch.fx.GraphModule:
    cache = torch.randn(2, 3, 4)
    length = torch.export.Dim("t", min=0, max=64)
    ep = torch.export.export(_Step(), (torch.ones(2, dtype=torch.long), cache),
                             dynamic_shapes=({}, {1: length}))
    return ep.module()


def _fake(shape, dtype=torch.float32):
    return torch.empty(shape, dtype=dtype)


def test_output_shapes_follow_the_cache_length_as_running_the_graph_does() -> None:
    gm = _step_graph()
    for t in (0, 1, 7, 40):
        shapes = output_shapes_by_substitution(gm, [_fake((2,), torch.long), _fake((2, t, 4))])
        with FakeTensorMode(allow_non_fake_inputs=True) as mode:
            ran = gm(mode.from_tensor(torch.ones(2, dtype=torch.long)), mode.from_tensor(torch.zeros(2, t, 4)))
        assert shapes == [(tuple(o.shape), o.dtype) for o in ran]
        assert shapes[1] == ((2, t + 1, 4), torch.float32)


def test_a_static_dim_that_does_not_match_is_left_to_the_fake_run() -> None:
    gm = _step_graph()
    assert output_shapes_by_substitution(gm, [_fake((2,), torch.long), _fake((2, 5, 9))]) is None
    assert output_shapes_by_substitution(gm, [_fake((2,), torch.long), _fake((2, 5, 4), torch.float64)]) is None
    assert output_shapes_by_substitution(gm, [_fake((2,), torch.long)]) is None
