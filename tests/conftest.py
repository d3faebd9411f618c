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


class Tower(torch.nn.Module):
    """Linear(242, 256) -> LayerNorm -> ReLU -> Linear(256, 72): 81,224 float32 params = 324,896 bytes, of
    which 840 floats (3,360 bytes) sit in tensors of at most 1 KiB."""

    def __init__(self):
        super().__init__()
        self.fc1, self.ln, self.fc2 = torch.nn.Linear(242, 256), torch.nn.LayerNorm(256), torch.nn.Linear(256, 72)

    def forward(self, x):
        return self.fc2(torch.relu(self.ln(self.fc1(x))))


class TwinTowers(torch.nn.Module):
    """Two towers with identical weights (one pretrained encoder loaded twice), one input each: the dedupe
    issue's anchor (649,792 bytes of weights; exact dedupe: 324,896)."""

    def __init__(self):
        super().__init__()
        self.a, self.b = Tower(), Tower()
        self.b.load_state_dict(self.a.state_dict())

    def forward(self, x, y):
        return torch.cat([self.a(x), self.b(y)], dim=1)


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
