"""Shared fixtures: small real models (transformer-style blocks, MLPs) captured through torch.export."""
from __future__ import annotations

import math
import warnings

import pytest
import torch

warnings.filterwarnings("ignore", category=FutureWarning)


class AttentionBlock(torch.nn.Module):
    """A pre-norm transformer block (multi-head self-attention + GELU MLP), like a BERT/GPT layer."""

    def __init__(self, d: int = 32, heads: int = 4):
        super().__init__()
        self.heads = heads
        self.ln1 = torch.nn.LayerNorm(d)
        self.q = torch.nn.Linear(d, d)
        self.k = torch.nn.Linear(d, d)
        self.v = torch.nn.Linear(d, d)
        self.o = torch.nn.Linear(d, d)
        self.ln2 = torch.nn.LayerNorm(d)
        self.fc1 = torch.nn.Linear(d, 4 * d)
        self.fc2 = torch.nn.Linear(4 * d, d)

    def forward(self, x):
        b, t, d = x.shape
        h = self.ln1(x)
        q = self.q(h).view(b, t, self.heads, d // self.heads).transpose(1, 2)
        k = self.k(h).view(b, t, self.heads, d // self.heads).transpose(1, 2)
        v = self.v(h).view(b, t, self.heads, d // self.heads).transpose(1, 2)
        att = (q @ k.transpose(-1, -2)) / math.sqrt(d // self.heads)
        y = att.softmax(-1) @ v
        x = x + self.o(y.transpose(1, 2).reshape(b, t, d))
        return x + self.fc2(torch.nn.functional.gelu(self.fc1(self.ln2(x))))

    def example_inputs(self):
        return (torch.randn(2, 8, 32),)


class TinyEncoder(torch.nn.Module):
    """Embedding + two attention blocks + pooled classifier head: a small transformers-style model."""

    def __init__(self, vocab: int = 100, d: int = 32):
        super().__init__()
        self.emb = torch.nn.Embedding(vocab, d)
        self.blocks = torch.nn.ModuleList([AttentionBlock(d), AttentionBlock(d)])
        self.head = torch.nn.Linear(d, 3)

    def forward(self, ids):
        x = self.emb(ids)
        for blk in self.blocks:
            x = blk(x)
        return self.head(x.mean(1))

    def example_inputs(self):
        return (torch.randint(0, 100, (2, 8)),)


@pytest.fixture
def encoder():
    """A seeded TinyEncoder in eval mode and its example inputs."""
    torch.manual_seed(0)
    model = TinyEncoder().eval()
    return model, model.example_inputs()


@pytest.fixture
def block():
    """A seeded AttentionBlock in eval mode and its example inputs."""
    torch.manual_seed(0)
    model = AttentionBlock().eval()
    return model, model.example_inputs()
