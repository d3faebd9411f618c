"""The user's model is never mutated (issue #10): capture, every registered pass (alone and as one pipeline)
and compile + save + load leave a zoo model's weights (values, identity, storage), ``requires_grad``,
training flags, hooks and outputs exactly as they were — with the model in a mixed train/eval state, some
parameters frozen, and a user hook installed, so a restore-to-default would show."""
from __future__ import annotations

import pytest
import torch

import fxopt
from fxopt.passes.registry import pass_names

PASSES = [name for name in pass_names() if not name.startswith("test-")]
_HOOK_DICTS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks",
               "_state_dict_hooks", "_load_state_dict_pre_hooks")


def snapshot(model: torch.nn.Module) -> dict:
    """Everything about ``model`` a compiler could disturb."""
    return {
        "state": {k: (v.clone(), v.data_ptr(), v.dtype, v.device) for k, v in model.state_dict(keep_vars=True).items()},
        "params": {k: (id(p), p.requires_grad, p.grad) for k, p in model.named_parameters()},
        "buffers": {k: id(b) for k, b in model.named_buffers()},
        "training": {k: m.training for k, m in model.named_modules()},
        "hooks": {k: tuple(len(getattr(m, d)) for d in _HOOK_DICTS) for k, m in model.named_modules()},
        "modules": [k for k, _ in model.named_modules()],
    }


def assert_unchanged(before: dict, after: dict, what: str) -> None:
    assert after["modules"] == before["modules"], f"{what} changed the module tree"
    assert after["state"].keys() == before["state"].keys(), f"{what} changed the state_dict keys"
    for k, (value, ptr, dtype, device) in before["state"].items():
        v2, ptr2, dtype2, device2 = after["state"][k]
        assert (ptr2, dtype2, device2) == (ptr, dtype, device), f"{what} replaced or moved {k}"
        assert torch.equal(v2, value), f"{what} changed the values of {k}"
    for key in ("params", "buffers", "training", "hooks"):
        assert after[key] == before[key], f"{what} changed the model's {key}"


@pytest.fixture(scope="module")
def user_model():
    """ranking (small): embedding bags, experts, MLP; half of it in train mode, its first parameter frozen,
    a forward hook counting calls."""
    model, inputs = fxopt.zoo.get("ranking", small=True)
    modules = list(model.modules())
    for m in modules[1::2]:
        m.train()
    next(model.parameters()).requires_grad_(False)
    calls = []
    model.register_forward_hook(lambda mod, args, out: calls.append(1))
    return model, inputs, calls


@pytest.fixture(scope="module")
def captured(user_model):
    model, inputs, _ = user_model
    before = snapshot(model)
    program = fxopt.capture(model, inputs)
    return program, before


def test_capture_leaves_the_model_unchanged(user_model, captured):
    model, _, _ = user_model
    _, before = captured
    assert_unchanged(before, snapshot(model), "capture")


def test_every_pass_leaves_the_model_unchanged(user_model, captured):
    model, _, _ = user_model
    program, _ = captured
    before = snapshot(model)
    for name in PASSES:
        fxopt.optimize(program, [name], verify=True)
        assert_unchanged(before, snapshot(model), f"pass {name}")
    fxopt.optimize(program, PASSES, verify=True)
    assert_unchanged(before, snapshot(model), "the pipeline " + ",".join(PASSES))


def test_compile_save_load_leave_the_model_unchanged(user_model, captured, tmp_path):
    model, inputs, _ = user_model
    program, _ = captured
    before = snapshot(model)
    optimized = fxopt.optimize(program, "canonicalize,fold-constants,dedupe,moe,dce")
    loaded = fxopt.load(fxopt.compile(optimized).save(str(tmp_path / "art")))
    assert_unchanged(before, snapshot(model), "compile + save + load")
    model.eval()
    try:
        torch.testing.assert_close(loaded(*inputs), model(*inputs))
    finally:  # back to the fixture's mixed state for any later test
        for m in list(model.modules())[1::2]:
            m.train()


def test_user_hook_still_runs_after_everything(user_model, captured):
    model, inputs, calls = user_model
    count = len(calls)
    model(*inputs)
    assert len(calls) == count + 1


def test_weights_in_the_program_are_not_the_models(user_model, captured):
    """Capture clones: rewriting the program's weights cannot reach the model."""
    model, _, _ = user_model
    program, _ = captured
    model_ptrs = {t.data_ptr() for t in model.state_dict().values()}
    assert not model_ptrs & {t.data_ptr() for t in program.parameters().values()}
