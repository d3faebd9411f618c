"""``fxopt.export``: the one call a training script makes, and ``optimize`` with the target's pipeline."""
from __future__ import annotations

import json
import os

import pytest
import torch
from torch import nn

import fxopt
from fxopt.ir.numerics import assert_outputs_close
from fxopt.passes.registry import build_pipeline, default_pipeline


class Tower(nn.Module):
    """Two identical towers (dedupe has work) with dropout and batch norm, as trained."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        block = lambda: nn.Sequential(nn.Linear(8, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.1))  # noqa: E731
        self.left, self.right = block(), block()
        self.right.load_state_dict(self.left.state_dict())
        self.head = nn.Linear(32, 2)

    def forward(self, x):
        return self.head(torch.cat([self.left(x), self.right(x)], dim=1))


def test_export_returns_the_artifact_and_its_report_and_saves_it(tmp_path):
    model, x = Tower().eval(), torch.randn(4, 8)
    compiled, report = fxopt.export(model, (x,), out=str(tmp_path / "tower"))
    with torch.no_grad():
        assert_outputs_close(compiled(x), model(x))
        assert_outputs_close(fxopt.load(str(tmp_path / "tower"))(x), model(x))
    assert [r.spec for r in report.passes] == [p.spec() for p in build_pipeline(default_pipeline("reference"))]
    assert "dedupe" in [r.spec for r in report.passes if r.modified]
    assert report.path == str(tmp_path / "tower") and report.done_here and report.left_for_target == ()
    assert json.load(open(os.path.join(report.path, "manifest.json")))["backend"] == "reference"
    assert "fxopt export Tower" in report.summary()


def test_export_leaves_a_model_in_training_as_it_was():
    model = Tower().train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    compiled, report = fxopt.export(model, (torch.randn(4, 8),))
    assert all(m.training for m in model.modules())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert any("train mode" in n for n in report.notes)


def test_export_checks_cheap_arguments_before_capturing():
    class Boom(nn.Module):
        def forward(self, x):
            raise AssertionError("captured although the arguments were bad")

    with pytest.raises(fxopt.InputError, match="nosuch"):
        fxopt.export(Boom(), (torch.ones(1),), backend="nosuch")
    with pytest.raises(fxopt.InputError, match="nopass"):
        fxopt.export(Boom(), (torch.ones(1),), passes="dce,nopass")


def test_export_refuses_to_replace_a_folder_that_is_not_an_artifact(tmp_path):
    (tmp_path / "keep.txt").write_text("mine")
    with pytest.raises(fxopt.InputError):
        fxopt.export(Tower().eval(), (torch.randn(2, 8),), out=str(tmp_path))
    assert (tmp_path / "keep.txt").read_text() == "mine"


@pytest.mark.numerics
def test_export_for_xla_runs_the_xla_pipeline_and_matches_the_model():
    model, x = Tower().eval(), torch.randn(4, 8)
    compiled, report = fxopt.export(model, (x,), backend="xla")
    assert report.target == "xla" and compiled.backend == "xla"
    assert any(r.spec.startswith("split") for r in report.passes)
    with torch.no_grad():
        assert_outputs_close(compiled(x), model(x))


def test_optimize_without_passes_runs_the_targets_default_pipeline():
    program = fxopt.capture(Tower().eval(), (torch.randn(2, 8),))
    optimized = fxopt.optimize(program, target="xla")
    assert [r.spec for r in optimized.reports] == [p.spec() for p in build_pipeline(default_pipeline("xla"))]
