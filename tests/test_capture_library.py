"""Capture of models as model libraries write them: keyword inputs, cache objects in the output, library
operators, and sdpa whose output layout a later view relies on (ir/capture/library_outputs.py,
library_ops.py, attention_layout.py). Written without transformers; tests/test_corpus_models.py covers the
real Hugging Face models."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import fxopt
from fxopt.errors import InputError
from fxopt.ir.fields import Fields


class Layer:
    """A cache layer as libraries keep them: tensors plus bookkeeping attributes."""

    def __init__(self, keys, values):
        self.keys, self.values, self.is_initialized = keys, values, True


class Cache:
    """A KV cache object (like transformers' DynamicCache): a list of layers; not a pytree type."""

    def __init__(self):
        self.layers: list[Layer] = []


class CachingDecoder(torch.nn.Module):
    """Returns (logits, cache) where the cache is a library object, like a Hugging Face decoder."""

    def __init__(self):
        super().__init__()
        self.k = torch.nn.Linear(8, 8)
        self.v = torch.nn.Linear(8, 8)
        self.out = torch.nn.Linear(8, 5)

    def forward(self, x, scale=None):
        cache = Cache()
        h = x
        for _ in range(2):
            k, v = self.k(h), self.v(h)
            cache.layers.append(Layer(k, v))
            h = h + (k.softmax(-1) * v)
        logits = self.out(h)
        return {"logits": logits if scale is None else logits * scale, "cache": cache}


def test_a_cache_object_in_the_output_becomes_fields_per_layer_with_a_note():
    model = CachingDecoder().eval()
    x = torch.randn(2, 8)
    prog = fxopt.capture(model, (x,))
    assert any("output 'cache' (Cache) is returned as plain tensors" in n for n in prog.notes)
    out = fxopt.compile(prog)(x)
    want = model(x)
    assert isinstance(out["cache"], tuple) and len(out["cache"]) == 2
    layer = out["cache"][1]
    assert isinstance(layer, Fields) and list(layer) == ["keys", "values"]   # is_initialized holds no tensor
    torch.testing.assert_close(layer.keys, want["cache"].layers[1].keys)
    torch.testing.assert_close(out["logits"], want["logits"])


def test_capture_leaves_no_hook_on_the_users_model():
    model = CachingDecoder().eval()
    fxopt.capture(model, (torch.randn(2, 8),))
    assert not model._forward_hooks
    assert isinstance(model(torch.randn(2, 8))["cache"], Cache)


def test_keyword_inputs_are_captured_and_the_artifact_takes_them():
    model = CachingDecoder().eval()
    x, scale = torch.randn(2, 8), torch.tensor(3.0)
    compiled, report = fxopt.export(model, example_kwargs={"x": x, "scale": scale})
    torch.testing.assert_close(compiled(x=x, scale=scale)["logits"], model(x, scale=scale)["logits"])
    with pytest.raises(InputError, match="do not match its signature"):
        compiled(x, scale)


class SdpaThenView(torch.nn.Module):
    """GPT-2's attention tail: sdpa, transpose back to (batch, seq, heads, dim), then a reshape that export
    records as a view of the CPU kernel's (batch, seq, heads, dim) memory layout."""

    def __init__(self, d=16, heads=4):
        super().__init__()
        self.heads = heads
        self.qkv = torch.nn.Linear(d, 3 * d)
        self.proj = torch.nn.Linear(d, d)

    def forward(self, x, mask):
        b, s, d = x.shape
        q, k, v = (t.view(b, s, self.heads, d // self.heads).transpose(1, 2) for t in self.qkv(x).split(d, -1))
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.proj(y.transpose(1, 2).reshape(b, s, d).view(b * s, d))


def test_sdpa_whose_layout_a_view_relies_on_decomposes_and_keeps_numerics():
    model = SdpaThenView().eval()
    x = torch.randn(2, 6, 16)
    mask = torch.ones(6, 6, dtype=torch.bool).tril()        # a boolean mask: False means "not attended"
    prog = fxopt.capture(model, (x, mask))
    assert not any("scaled_dot_product" in str(n.target) for n in prog.graph.nodes)
    torch.testing.assert_close(prog(x, mask), model(x, mask), rtol=1e-5, atol=1e-6)


_LIB = torch.library.Library("fxopt_testlib", "DEF")
_LIB.define("twice(Tensor x) -> Tensor")
_LIB.impl("twice", lambda x: x * 2, "CompositeExplicitAutograd")
torch.library.register_fake("fxopt_testlib::twice", lambda x: torch.empty_like(x), lib=_LIB)


class CallsALibraryOp(torch.nn.Module):
    def forward(self, x):
        return torch.ops.fxopt_testlib.twice(x) + 1


def test_a_library_operator_without_a_rule_is_refused_at_capture_naming_it():
    with pytest.raises(InputError) as err:
        fxopt.capture(CallsALibraryOp(), (torch.randn(3),))
    text = str(err.value)
    assert "\n" not in text
    assert "fxopt_testlib::twice" in text and "node 'twice'" in text and "test_capture_library.py" in text
