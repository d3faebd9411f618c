"""Helpers shared by the zoo models: seeded construction, BatchNorm statistics, example-input generators."""
from __future__ import annotations

import contextlib
from typing import Callable, Iterator

import torch
from torch import nn


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Context manager: seeds torch's global CPU RNG with ``seed``, restores the caller's state on exit.

    Module constructors use the global RNG for their default initialisation, so building a model inside
    ``with seeded(s):`` gives the same weights for the same ``s`` and leaves ``torch.random.get_rng_state()``
    unchanged for the caller.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def generator(seed: int) -> torch.Generator:
    """Returns a fresh CPU ``torch.Generator`` seeded with ``seed`` (used for example inputs)."""
    gen = torch.Generator()
    gen.manual_seed(seed)
    return gen


@torch.no_grad()
def randomize_batchnorm(model: nn.Module) -> None:
    """Gives every BatchNorm layer in ``model`` non-trivial affine parameters and running statistics.

    Uses the global RNG (call it inside :func:`seeded`). Freshly constructed BatchNorm layers are the
    identity in eval mode (mean 0, var 1, weight 1, bias 0); real checkpoints are not, and a BN-folding
    pass should be tested against values that are.
    """
    for mod in model.modules():
        if isinstance(mod, nn.modules.batchnorm._BatchNorm):
            mod.weight.uniform_(0.5, 1.5)
            mod.bias.normal_(0.0, 0.1)
            mod.running_mean.normal_(0.0, 0.1)
            mod.running_var.uniform_(0.5, 1.5)


@torch.no_grad()
def calibrate_batchnorm(model: nn.Module, run: Callable[[], object]) -> None:
    """Recomputes every BatchNorm's running statistics from one batch, then puts ``model`` in eval mode.

    ``run`` is a zero-argument callable that does a forward pass of ``model`` (e.g. on random inputs);
    it runs once in train mode with cumulative averaging, so the running stats become that batch's exact
    statistics — what a deep network needs to keep its eval-mode activations well scaled.
    """
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [bn.momentum for bn in bns]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None
    model.train()
    run()
    for bn, momentum in zip(bns, saved):
        bn.momentum = momentum
    model.eval()


def token_ids(gen: torch.Generator, batch: int, length: int, vocab: int, min_len: int = 1) -> torch.Tensor:
    """Returns a LongTensor [batch, length] of token ids in ``[1, vocab)``, right-padded with 0 per row.

    Each row gets a random true length in ``[min_len, length]``; row 0 always has the full length.
    """
    ids = torch.randint(1, vocab, (batch, length), generator=gen)
    lengths = torch.randint(min_len, length + 1, (batch,), generator=gen)
    lengths[0] = length
    positions = torch.arange(length).unsqueeze(0)
    return ids.masked_fill(positions >= lengths.unsqueeze(1), 0)
