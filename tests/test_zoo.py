"""Tests for fxopt.zoo: the built-in example models (small variants only)."""
from __future__ import annotations

import importlib
import inspect

import pytest
import torch

import fxopt
from fxopt import zoo
from fxopt.errors import InputError

NAMES = ["moderation", "ocr", "ranking", "resnet50"]

EXPECTED_SHAPES = {
    "moderation": [(2, 3), (2, 2), (2, 2), (2, 2)],
    "ocr": [(2, 5)],
    "ranking": [(4, 1)],
    "resnet50": [(2, 10)],
}


def _flat(out):
    return list(out) if isinstance(out, (tuple, list)) else [out]


def _assert_same(expected, actual):
    for e, a in zip(_flat(expected), _flat(actual), strict=True):
        assert e.shape == a.shape and e.dtype == a.dtype
        if e.is_floating_point():
            torch.testing.assert_close(a, e, rtol=1e-4, atol=1e-5)
        else:
            assert torch.equal(a, e)


def test_names_sorted():
    assert zoo.names() == NAMES


@pytest.mark.parametrize("name", NAMES)
def test_forward_output_shape(name):
    model, inputs = zoo.get(name, small=True)
    with torch.no_grad():
        out = _flat(model(*inputs))
    assert [tuple(t.shape) for t in out] == EXPECTED_SHAPES[name]
    assert all(torch.isfinite(t.float()).all() for t in out)


@pytest.mark.parametrize("name", NAMES)
def test_model_is_eval_and_inputs_are_tensors(name):
    model, inputs = zoo.get(name, small=True)
    assert not any(m.training for m in model.modules())
    assert isinstance(inputs, tuple) and all(isinstance(t, torch.Tensor) for t in inputs)
    _assert_same(inputs, model.example_inputs())


@pytest.mark.parametrize("name", NAMES)
def test_export_matches_eager(name):
    model, inputs = zoo.get(name, small=True)
    ep = torch.export.export(model, inputs, strict=False).run_decompositions()
    with torch.no_grad():
        _assert_same(model(*inputs), ep.module()(*inputs))


@pytest.mark.parametrize("name", NAMES)
def test_forward_ignores_global_rng(name):
    model, inputs = zoo.get(name, small=True)
    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        first = model(*inputs)
        torch.manual_seed(2)
        second = model(*inputs)
    _assert_same(first, second)


@pytest.mark.parametrize("name", NAMES)
def test_module_has_zero_arg_factory(name):
    module = importlib.import_module(f"fxopt.zoo.{name}")
    factory = getattr(module, name)
    assert callable(factory) and not inspect.signature(factory).parameters
    assert factory.__doc__


def _ocr_with_early_eos():
    """Returns the first small OCR model (by seed) whose greedy output has EOS at a step in the middle."""
    for seed in range(20):
        model, inputs = zoo.get("ocr", small=True, seed=seed)
        with torch.no_grad():
            tokens = model(*inputs)
        hits = (tokens == model.eos_id).nonzero()
        if len(hits) and 0 < hits[:, 1].min() < model.max_len - 1:
            return model, inputs, tokens
    pytest.fail("no seed in 0..19 gives an OCR decode with EOS mid-sequence")


def test_ocr_protocol_loop_matches_forward():
    model, inputs, tokens = _ocr_with_early_eos()
    batch = inputs[0].shape[0]
    with torch.no_grad():
        memory = model.encode(*inputs)
        state = model.init_state(memory)
        token = torch.full((batch,), model.bos_id, dtype=torch.long)
        finished = torch.zeros(batch, dtype=torch.bool)
        emitted = []
        for _ in range(model.max_len):
            logits, state = model.step(token, state, memory)
            assert logits.shape == (batch, model.config.vocab)
            token = torch.where(finished, torch.full_like(token, model.eos_id), logits.argmax(-1))
            finished |= token == model.eos_id
            emitted.append(token)
            if bool(finished.all()):
                break
    manual = torch.full((batch, model.max_len), model.eos_id, dtype=torch.long)
    manual[:, : len(emitted)] = torch.stack(emitted, 1)
    assert len(emitted) < model.max_len  # the early break really happened
    assert torch.equal(manual, tokens)


def test_ocr_tokens_after_eos_are_eos():
    model, _, tokens = _ocr_with_early_eos()
    for row in tokens:
        hits = (row == model.eos_id).nonzero()
        if len(hits):
            assert bool((row[hits[0, 0]:] == model.eos_id).all())


def test_ocr_state_caches_grow_one_position_per_step():
    model, inputs = zoo.get("ocr", small=True)
    with torch.no_grad():
        memory = model.encode(*inputs)
        state = model.init_state(memory)
        assert isinstance(memory, tuple) and isinstance(state, tuple)
        token = torch.full((inputs[0].shape[0],), model.bos_id, dtype=torch.long)
        for t in range(3):
            assert all(cache.shape[2] == t for cache in state)
            _, state = model.step(token, state, memory)
    assert all(isinstance(v, int) for v in (model.max_len, model.bos_id, model.eos_id))


def test_moderation_has_duplicated_towers():
    model, _ = zoo.get("moderation", small=True)
    a, b = model.title_tower, model.description_tower
    pa, pb = dict(a.named_parameters()), dict(b.named_parameters())
    assert pa.keys() == pb.keys() and len(pa) > 0
    for key in pa:
        assert pa[key] is not pb[key]
        assert pa[key].data_ptr() != pb[key].data_ptr()
        assert torch.equal(pa[key], pb[key])
    # The OCR-text tower is a genuinely different encoder.
    assert not torch.equal(model.ocr_tower.token_embed.weight, a.token_embed.weight)


def test_get_is_deterministic_per_seed():
    first, _ = zoo.get("ranking", small=True, seed=3)
    second, _ = zoo.get("ranking", small=True, seed=3)
    other, _ = zoo.get("ranking", small=True, seed=4)
    s1, s2, s3 = first.state_dict(), second.state_dict(), other.state_dict()
    assert all(torch.equal(s1[k], s2[k]) for k in s1)
    assert not all(torch.equal(s1[k], s3[k]) for k in s1)


def test_get_leaves_global_rng_state_untouched():
    before = torch.random.get_rng_state()
    for name in NAMES:
        zoo.get(name, small=True)
    assert torch.equal(torch.random.get_rng_state(), before)


def test_unknown_name_raises_input_error():
    message = "unknown zoo model 'foo': choose one of moderation, ocr, ranking, resnet50"
    with pytest.raises(InputError, match=message):
        zoo.get("foo")
    assert fxopt.zoo is zoo
