"""Shared fixtures: small real models (transformer-style blocks, MLPs) captured through torch.export."""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import pytest
import torch

from fxopt.passes.base import Pass, PassResult
from fxopt.passes.registry import register_pass, unregister_pass

warnings.filterwarnings("ignore", category=FutureWarning)


def pytest_configure(config):
    """One intra-op torch thread for the whole run (``FXOPT_TEST_THREADS=N`` overrides): the test models are
    small, so on the 2-core CI/dev boxes extra threads mostly spin and wait (measured: test_zoo + test_dedupe
    75 s wall / 45-55 s CPU with one thread against 91-104 s / 60-71 s with two, side by side on the shared box),
    and under ``pytest -n 2`` each worker should own one core."""
    import os

    torch.set_num_threads(int(os.environ.get("FXOPT_TEST_THREADS", "1")))
    # `fxopt run` reuses artifacts from ~/.cache/fxopt/compile by default; tests that run the CLI check what a
    # compile does, so the cache is off unless a test names a --cache directory (tests/test_compile_cache.py)
    os.environ["FXOPT_NO_CACHE"] = "1"


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


# ------------------------------------------------------------------------------------ session capture cache
# torch.export dominates the suite's time and many test files capture the same models, so each distinct
# (model, size, seed, dynamic_shapes) is captured once per session and every caller gets an independent copy.
_CAPTURES: dict = {}


def _build(name: str, small: bool, seed: int) -> tuple:
    """(model, example_inputs) for a cache name: a zoo model, "ocr_encoder" (the zoo OCR model's encoder
    alone), or the conftest models "encoder" (TinyEncoder) and "block" (AttentionBlock), seeded with 0."""
    import fxopt

    if name in fxopt.zoo.names():
        return fxopt.zoo.get(name, small=small, seed=seed)
    if name == "ocr_encoder":
        from fxopt.zoo.ocr import OCREncoder

        ocr, inputs = fxopt.zoo.get("ocr", small=small, seed=seed)
        return OCREncoder(ocr).eval(), inputs
    if name in ("encoder", "block"):
        torch.manual_seed(seed)
        model = (TinyEncoder() if name == "encoder" else AttentionBlock()).eval()
        return model, model.example_inputs()
    raise KeyError(f"captured(): unknown model {name!r}")


def _programs_in(program) -> list:
    """``program`` and every Program nested in its regions (decode-loop pieces), depth first."""
    from fxopt.ir.program import Program

    found, stack = [], [program]
    while stack:
        item = stack.pop()
        if isinstance(item, Program):
            found.append(item)
            stack.append(item.regions)
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
    return found


def _fingerprint(program) -> tuple:
    """What a test could change in a shared capture: each graph (code and per-node meta keys/placement,
    including nested graph modules and region programs), the reports, and every tensor's identity."""
    graphs, tensors = [], {}
    for i, prog in enumerate(_programs_in(program)):
        for path, mod in prog.graph_module.named_modules():
            if isinstance(mod, torch.fx.GraphModule):
                graphs.append((i, path, str(mod.graph), tuple((n.name, tuple(sorted(n.meta)),
                                                                repr(n.meta.get("placement")))
                                                               for n in mod.graph.nodes)))
        for key, t in {**prog.graph_module.state_dict(keep_vars=True), **prog.parameters()}.items():
            tensors[(i, key)] = t
        graphs.append((i, len(prog.reports), prog.trace is None, prog.dirty, repr(prog.dynamic_dims)))
    return tuple(graphs), tensors


def _check_unchanged(key, entry) -> None:
    program, graphs, tensors = entry[2], entry[3], entry[4]
    now_graphs, now_tensors = _fingerprint(program)
    assert now_graphs == graphs, f"a test modified the shared capture {key}: use the copy captured() returns"
    assert now_tensors.keys() == tensors.keys(), f"a test rebound tensors of the shared capture {key}"
    for k, (t, saved) in tensors.items():
        assert now_tensors[k] is t and torch.equal(t.detach(), saved), \
            f"a test changed tensor {k} of the shared capture {key} in place"


def captured(name: str, small: bool = True, seed: int = 0, dynamic_shapes=None) -> tuple:
    """Capture a shared test model once per session; returns ``(model, example_inputs, program)``.

    ``name`` is a zoo model name, ``"ocr_encoder"``, ``"encoder"`` or ``"block"`` (see ``_build``);
    ``small``/``seed`` go to ``fxopt.zoo.get``; ``dynamic_shapes`` (None or ``"batch"``) to
    ``fxopt.capture``. Every call returns a deep copy of the model, cloned example inputs and
    ``program.copy()`` of the cached capture, so tests stay isolated; each call also checks that no earlier
    test changed the cached capture (graph, meta, weights) and fails loudly if one did.
    """
    import copy

    import fxopt

    key = (name, small, seed, dynamic_shapes)
    entry = _CAPTURES.get(key)
    if entry is None:
        model, inputs = _build(name, small, seed)
        program = fxopt.capture(model, inputs, dynamic_shapes=dynamic_shapes)
        graphs, tensors = _fingerprint(program)
        entry = (model, inputs, program, graphs, {k: (t, t.detach().clone()) for k, t in tensors.items()})
        _CAPTURES[key] = entry
    else:
        _check_unchanged(key, entry)
    program = entry[2]
    if name in ("encoder", "block"):   # cheap to rebuild, and rebuilding leaves the global RNG as capturing did
        model, inputs = _build(name, small, seed)
        return model, inputs, program.copy()
    clone = [t.clone() if isinstance(t, torch.Tensor) else t for t in entry[1]]
    return copy.deepcopy(entry[0]), tuple(clone), program.copy()


@pytest.fixture(scope="session", autouse=True)
def _shared_captures_stay_unchanged():
    """After the session, checks that no test modified a capture shared through :func:`captured`."""
    yield
    for key, entry in _CAPTURES.items():
        _check_unchanged(key, entry)


# ------------------------------------------------------------------------------ a deliberately wrong pass
@dataclass(frozen=True)
class ScaleOutputs(Pass):
    """Multiply every output by ``factor`` (deliberately wrong, to test verification)."""

    name = "test-scale-outputs"
    factor: float = 1.5

    def run(self, program):
        graph = program.graph
        out = program.output_node()
        outs = out.args[0] if isinstance(out.args[0], (tuple, list)) else (out.args[0],)
        with graph.inserting_before(out):
            scaled = tuple(graph.call_function(torch.ops.aten.mul.Tensor, (o, self.factor)) for o in outs)
        out.args = (scaled,)
        return PassResult(modified=True, details={"scaled": len(scaled)})


@pytest.fixture
def wrong_pass():
    """Register ScaleOutputs for the test and unregister it afterwards; yields its name."""
    register_pass(ScaleOutputs)
    try:
        yield ScaleOutputs.name
    finally:
        unregister_pass(ScaleOutputs.name)
