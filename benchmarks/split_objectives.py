"""``split``'s objectives side by side on ranking models: where the ops go and what each objective estimates.

``python -m benchmarks.split_objectives [--batches 64,512,2048] [--targets neuron,tensorrt,xla]``

Models: ``zoo:ranking`` (embedding bags, a cross network, MoE experts, MLPs) and a two-tower ranker written here
(user and item towers over EmbeddingBags, a dot product and a small head), not tuned against. For each model,
batch and target it runs ``split{objective=latency}`` and ``split{objective=throughput}`` (``policy=cost``) and
``policy=support`` and prints, per run: ops on the accelerator, partitions, transfers, where the embedding
bags went, and the throughput estimate (us per request at the busiest resource) next to all-CPU's. These are
the cost model's estimates on the built-in profiles (neuron: inf1, tensorrt: t4, xla: h100), not
measurements.
"""
from __future__ import annotations

import argparse
import dataclasses

import torch
from torch import nn


class TwoTower(nn.Module):
    """A two-tower ranker: user and item features through EmbeddingBags and MLP towers, scored by a dot
    product and a small head over [dot, user, item]."""

    def __init__(self, batch: int, rows: int = 30000, dim: int = 48, hidden: int = 128) -> None:
        super().__init__()
        self.batch = batch
        self.user_bags = nn.ModuleList(nn.EmbeddingBag(rows, dim, mode="sum") for _ in range(3))
        self.item_bags = nn.ModuleList(nn.EmbeddingBag(rows, dim, mode="mean") for _ in range(2))
        self.user = nn.Sequential(nn.Linear(3 * dim + 16, hidden), nn.ReLU(), nn.Linear(hidden, 64))
        self.item = nn.Sequential(nn.Linear(2 * dim + 8, hidden), nn.ReLU(), nn.Linear(hidden, 64))
        self.head = nn.Sequential(nn.Linear(129, 64), nn.GELU(), nn.Linear(64, 1))
        self.rows = rows

    def forward(self, user_dense, item_dense, u0, u1, u2, i0, i1):
        u = torch.cat([b(x) for b, x in zip(self.user_bags, (u0, u1, u2))] + [user_dense], dim=1)
        i = torch.cat([b(x) for b, x in zip(self.item_bags, (i0, i1))] + [item_dense], dim=1)
        u, i = self.user(u), self.item(i)
        dot = (u * i).sum(dim=1, keepdim=True)
        return self.head(torch.cat([dot, u, i], dim=1))

    def example_inputs(self):
        gen = torch.Generator().manual_seed(0)
        b = self.batch
        ids = [torch.randint(0, self.rows, (b, k), generator=gen) for k in (5, 3, 8, 4, 2)]
        return (torch.randn(b, 16, generator=gen), torch.randn(b, 8, generator=gen), *ids)


def _models(batch: int):
    from fxopt.zoo import ranking
    zoo_model = ranking.RankingModel(dataclasses.replace(ranking.DEFAULT, batch=batch)).eval()
    torch.manual_seed(0)
    yield "zoo:ranking", zoo_model
    yield "two-tower", TwoTower(batch).eval()


def main(argv: list[str] | None = None) -> int:
    """Print one table row per (model, batch, target, run); returns 0."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", default="64,512,2048")
    parser.add_argument("--targets", default="neuron,tensorrt,xla")
    args = parser.parse_args(argv)
    import fxopt
    from fxopt.passes.split import Split

    runs = [("latency", dict(objective="latency")), ("throughput", dict(objective="throughput")),
            ("support", dict(policy="support", objective="throughput"))]
    print(f"{'model':12} {'batch':>5} {'target':8} {'run':10} {'acc ops':>7} {'parts':>5} {'xfers':>5} "
          f"{'bags on':8} {'thru us':>9} {'all-cpu us':>10} {'x better':>8}")
    for batch in [int(b) for b in args.batches.split(",")]:
        for name, model in _models(batch):
            program = fxopt.capture(model, model.example_inputs())
            for target in args.targets.split(","):
                for label, options in runs:
                    work = program.copy()
                    result = Split(target=target, **options).run(work)
                    d = result.details
                    est = d["estimate"]
                    if label == "latency":  # the latency placement scored under throughput
                        busy = est["busy_us_after"]
                        after = max(busy.values())
                        before = max(est["busy_us_before"].values())
                    else:
                        after, before = est["after"], est["before"]
                    bags = {n.meta["placement"] for n in work.graph.nodes
                            if n.op == "call_function" and "embedding_bag" in str(n.target)}
                    parts = sum(d["partitions"].values())
                    print(f"{name:12} {batch:>5} {target:8} {label:10} {d['ops'][target]:>7} {parts:>5} "
                          f"{d['transfers']:>5} {','.join(sorted(bags)):8} {after:>9.3f} {before:>10.3f} "
                          f"{before / after if after else float('inf'):>8.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
