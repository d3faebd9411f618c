"""Recommender ranking model: EmbeddingBag tables + bottom MLP + DCN-v2 cross + mixture of experts + top MLP.

Inputs are ``(dense, ids_0, ..., ids_7)``: dense float features [B, num_dense] and one LongTensor
[B, bag_i] of categorical ids per table (fixed-size bags, so ``nn.EmbeddingBag`` needs no offsets).
The output is the click logit [B, 1]. ``forward`` spells out its nine parameters (no ``*args``) so that
``torch.export`` ``dynamic_shapes`` can be given as one flat spec per input.

Default: batch 64, 8 tables x 20 000 rows x 32 dims, 16 experts (~7.1 M parameters, ~29 MB).
Small: batch 4, 8 tables x 50 rows x 8 dims, 4 experts.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from fxopt.zoo._common import generator, seeded


@dataclass(frozen=True)
class RankingConfig:
    """Hyper-parameters of :class:`RankingModel`; ``bag_sizes`` and ``modes`` have one entry per table
    (:data:`NUM_TABLES` tables)."""

    batch: int = 64
    num_dense: int = 13
    rows: int = 20_000
    dim: int = 32
    bag_sizes: tuple[int, ...] = (1, 1, 4, 8, 16, 20, 32, 50)
    modes: tuple[str, ...] = ("sum", "sum", "mean", "mean", "sum", "mean", "sum", "mean")
    bottom: tuple[int, ...] = (256, 128)
    cross_layers: int = 3
    num_experts: int = 16
    expert_hidden: int = 256
    expert_out: int = 128
    top: tuple[int, ...] = (128, 64)


NUM_TABLES = 8
DEFAULT = RankingConfig()
SMALL = RankingConfig(batch=4, num_dense=5, rows=50, dim=8, bag_sizes=(1, 3, 5, 2, 1, 4, 2, 6),
                      bottom=(16,), cross_layers=2, num_experts=4, expert_hidden=16, expert_out=8, top=(8,))


def mlp(sizes: list[int], final_activation: bool = True) -> nn.Sequential:
    """Returns ``Linear -> ReLU`` layers through ``sizes``; the last ReLU only if ``final_activation``."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if final_activation or i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class CrossNetwork(nn.Module):
    """DCN-v2 cross layers ``x_{l+1} = x_0 * (W_l x_l + b_l) + x_l``; takes and returns [B, D]."""

    def __init__(self, dim: int, num_layers: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(dim, dim) for _ in range(num_layers))

    def forward(self, x0: torch.Tensor) -> torch.Tensor:
        """Takes x0 [B, D]; returns the crossed features [B, D]."""
        x = x0
        for layer in self.layers:
            x = x0 * layer(x) + x
        return x


class MixtureOfExperts(nn.Module):
    """Dense mixture of light experts: every expert (Linear-ReLU-Linear) runs; a softmax gate mixes them.

    ``experts`` is an ``nn.ModuleList`` of structurally identical experts (what an expert-batching pass
    would stack). Takes [B, in_dim]; returns [B, out_dim].
    """

    def __init__(self, in_dim: int, hidden: int, out_dim: int, num_experts: int) -> None:
        super().__init__()
        self.experts = nn.ModuleList(
            nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, out_dim))
            for _ in range(num_experts))
        self.gate = nn.Linear(in_dim, num_experts)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Takes x [B, in_dim]; returns the gate-weighted sum of expert outputs [B, out_dim]."""
        weights = torch.softmax(self.gate(x), dim=-1)                     # [B, E]
        outputs = torch.stack([expert(x) for expert in self.experts], 1)  # [B, E, out]
        return (weights.unsqueeze(-1) * outputs).sum(dim=1)


class RankingModel(nn.Module):
    """CTR ranking model. ``forward(dense, ids_0, ..., ids_7)`` takes dense [B, num_dense] and one
    LongTensor [B, bag_i] per table, and returns the click logit [B, 1].

    Pipeline: bottom MLP on dense features; sum/mean-pooled EmbeddingBag lookups; concat; DCN-v2 cross
    network; mixture of experts; top MLP.
    """

    def __init__(self, config: RankingConfig = DEFAULT, input_seed: int = 0) -> None:
        super().__init__()
        assert len(config.bag_sizes) == len(config.modes) == NUM_TABLES, "one bag size and mode per table"
        self.config = config
        self.input_seed = input_seed
        self.tables = nn.ModuleList(nn.EmbeddingBag(config.rows, config.dim, mode=mode)
                                    for mode in config.modes)
        self.bottom = mlp([config.num_dense, *config.bottom, config.dim])
        feature_dim = config.dim * (len(config.modes) + 1)
        self.cross = CrossNetwork(feature_dim, config.cross_layers)
        self.moe = MixtureOfExperts(feature_dim, config.expert_hidden, config.expert_out, config.num_experts)
        self.top = mlp([config.expert_out, *config.top, 1], final_activation=False)

    def forward(self, dense: torch.Tensor, ids_0: torch.Tensor, ids_1: torch.Tensor, ids_2: torch.Tensor,
                ids_3: torch.Tensor, ids_4: torch.Tensor, ids_5: torch.Tensor, ids_6: torch.Tensor,
                ids_7: torch.Tensor) -> torch.Tensor:
        """Takes dense [B, num_dense] and per-table ids [B, bag_i]; returns click logits [B, 1]."""
        ids = (ids_0, ids_1, ids_2, ids_3, ids_4, ids_5, ids_6, ids_7)
        pooled = [table(table_ids) for table, table_ids in zip(self.tables, ids)]
        features = torch.cat([self.bottom(dense), *pooled], dim=1)
        return self.top(self.moe(self.cross(features)))

    def example_inputs(self) -> tuple[torch.Tensor, ...]:
        """Returns ``(dense, ids_0, ..., ids_7)``: log-scaled dense features and random id bags."""
        c = self.config
        gen = generator(self.input_seed)
        dense = torch.log1p(torch.rand(c.batch, c.num_dense, generator=gen) * 100.0)
        ids = tuple(torch.randint(0, c.rows, (c.batch, bag), generator=gen) for bag in c.bag_sizes)
        return (dense, *ids)


def build(small: bool = False, seed: int = 0) -> RankingModel:
    """Returns a RankingModel in eval mode with weights drawn from ``seed`` (small config if ``small``)."""
    with seeded(seed):
        model = RankingModel(SMALL if small else DEFAULT, input_seed=seed)
        for table in model.tables:  # EmbeddingBag's default N(0, 1) init is far from trained scale
            nn.init.uniform_(table.weight, -0.05, 0.05)
    return model.eval()


def ranking() -> RankingModel:
    """Zero-argument factory for ``file.py:attr`` specs: the default-size ranking model (seed 0)."""
    return build()
