"""Train a small click-through model for 20 steps, then translate it with one call: ``fxopt.export``.

    python examples/train_then_export.py [--backend xla] [--out out/ctr]

The translation job after training, as a training script runs it: no CLI, no files of fxopt's own. The
model is written as users write it (no ``example_inputs()`` method); the inputs are one batch of the data.
fxopt captures the trained model (put in eval mode first, as inference runs it), runs the target's default
pipeline with every pass verified, compiles it, checks the artifact against the model, and saves
it. The artifact is then loaded back and compared once more, as a serving process would load it.
"""
from __future__ import annotations

import argparse
import sys

import torch
from torch import nn

import fxopt


class ClickModel(nn.Module):
    """Sparse features through an EmbeddingBag, dense ones through an MLP, a logit out."""

    def __init__(self, ids: int = 1000, dim: int = 16, dense: int = 8) -> None:
        super().__init__()
        self.bag = nn.EmbeddingBag(ids, dim, mode="sum")
        self.dense = nn.Sequential(nn.Linear(dense, dim), nn.ReLU())
        self.top = nn.Sequential(nn.Linear(2 * dim, 32), nn.ReLU(), nn.Dropout(0.1), nn.Linear(32, 1))

    def forward(self, dense: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        return self.top(torch.cat([self.dense(dense), self.bag(ids)], dim=1)).squeeze(1)


def batch(generator: torch.Generator, size: int = 64) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Synthetic data: a click is likelier when the first dense feature is positive."""
    dense = torch.randn(size, 8, generator=generator)
    ids = torch.randint(0, 1000, (size, 5), generator=generator)
    clicks = (dense[:, 0] + 0.5 * torch.randn(size, generator=generator) > 0).float()
    return dense, ids, clicks


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", default="xla", help="fxopt backend (default: xla)")
    parser.add_argument("--out", default="out/ctr", help="artifact directory (default: out/ctr)")
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args(argv)

    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    model = ClickModel()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    loss_fn = nn.BCEWithLogitsLoss()
    for step in range(args.steps):
        dense, ids, clicks = batch(generator)
        loss = loss_fn(model(dense, ids), clicks)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    print(f"trained {args.steps} steps, last loss {loss.item():.3f}")

    dense, ids, _ = batch(generator)
    model.eval()
    compiled, report = fxopt.export(model, (dense, ids), backend=args.backend, out=args.out)
    print(report.summary())

    served = fxopt.load(args.out)
    with torch.no_grad():
        error = (served(dense, ids) - model(dense, ids)).abs().max().item()
    print(f"reloaded {args.out}: max abs error against the trained model {error:.3g}")
    return 0 if error < 1e-4 else 1


if __name__ == "__main__":
    sys.exit(main())
