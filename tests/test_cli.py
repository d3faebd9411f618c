"""Tests for the ``fxopt`` command line (fxopt.tools.cli).

Most tests call ``main([...])`` in-process (fast, with capsys); one runs the installed ``fxopt`` console
script in a subprocess. The models are tiny ``nn.Module``s written into a temporary ``file.py``.

Decision tested here (see the cli module docstring): ``--no-verify`` turns off the per-pass checks only; the
final check of the compiled artifact against the captured model still runs, so a wrong pass still fails
the run (exit 1, no output directory), just without being named.
"""
from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import textwrap

import pytest
import torch

import fxopt
from fxopt.tools import cli
from fxopt.tools.cli import main

MODEL_SOURCE = textwrap.dedent('''
    import torch
    from torch import nn


    class Tiny(nn.Module):
        """A linear layer wrapped in no-op views, clones and arithmetic (work for canonicalize)."""

        def __init__(self):
            super().__init__()
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(0)
                self.lin = nn.Linear(8, 4)

        def forward(self, x):
            y = x.view(2, 8).clone()
            y = y.reshape(2, 8) * 1.0
            return self.lin(y).relu() + 0.0

        def example_inputs(self):
            g = torch.Generator().manual_seed(1)
            return (torch.randn(2, 8, generator=g),)


    class Branchy(nn.Module):
        """Data-dependent control flow: torch.export cannot capture it."""

        def forward(self, x):
            if x.sum() > 0:
                return x * 2
            return x - 1

        def example_inputs(self):
            return (torch.ones(3),)


    class NotAModule:
        pass
''')


@pytest.fixture
def model_file(tmp_path):
    """Path of a model file defining Tiny, Branchy and NotAModule."""
    path = tmp_path / "tiny_model.py"
    path.write_text(MODEL_SOURCE)
    return str(path)


@pytest.fixture
def out_dir(tmp_path):
    """An output path that does not exist yet."""
    return str(tmp_path / "artifact")


def _one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line on stderr, got:\n{err}"
    assert "Traceback" not in err
    assert lines[0].startswith("fxopt: error: ")
    return lines[0]


def _load_module(path: str):
    spec = importlib.util.spec_from_file_location("_test_cli_tiny_model", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ------------------------------------------------------------------------------------------ fxopt run
def test_run_writes_artifact_that_reproduces_the_model(model_file, out_dir, capsys):
    code = main(["run", f"{model_file}:Tiny", "-o", out_dir])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert captured.err == ""  # no progress, warnings or log noise when not on a terminal
    assert os.path.isfile(os.path.join(out_dir, "manifest.json"))
    assert os.path.isfile(os.path.join(out_dir, "trace.json"))
    out = captured.out
    for spec in ("canonicalize", "fold-constants", "dce"):
        assert spec in out
    assert "FLOP" in out and "max abs error" in out
    assert "artifact:" in out and "backend reference" in out and "left for the target host" in out
    assert "\x1b[" not in out  # no terminal control codes in captured output

    model = _load_module(model_file).Tiny()
    inputs = model.example_inputs()
    with torch.no_grad():
        expected = model(*inputs)
    actual = fxopt.load(out_dir)(*inputs)
    torch.testing.assert_close(actual, expected)


def test_run_default_output_dir_is_out_slash_name(model_file, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["run", "--passes", "dce", f"{model_file}:Tiny"]) == 0
    assert os.path.isfile(tmp_path / "out" / "Tiny" / "manifest.json")
    assert os.path.join("out", "Tiny") in capsys.readouterr().out


def test_default_output_dir_is_a_safe_name():
    assert cli.default_output_dir("zoo:ranking") == os.path.join("out", "ranking")
    assert cli.default_output_dir("model.pt2") == os.path.join("out", "model")
    assert cli.default_output_dir("a b/c") == os.path.join("out", "c")


def test_unknown_pass_is_one_line_and_leaves_no_output(model_file, out_dir, capsys):
    code = main(["run", "--passes", "dce,no-such-pass", f"{model_file}:Tiny", "-o", out_dir])
    assert code == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "no-such-pass" in line
    assert not os.path.exists(out_dir)


def test_bad_pass_option_is_an_input_error(model_file, out_dir, capsys):
    assert main(["run", "--passes", "canonicalize{foo=1}", f"{model_file}:Tiny", "-o", out_dir]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "foo" in line and "canonicalize" in line
    assert not os.path.exists(out_dir)


def test_bad_option_value_is_an_input_error(model_file, out_dir, wrong_pass, capsys):
    assert main(["run", "--passes", f"{wrong_pass}{{factor=abc}}", f"{model_file}:Tiny", "-o", out_dir]) == 2
    assert "factor" in _one_error_line(capsys.readouterr().err)


def test_missing_file(tmp_path, out_dir, capsys):
    assert main(["run", str(tmp_path / "missing.py") + ":Model", "-o", out_dir]) == 2
    assert "missing.py" in _one_error_line(capsys.readouterr().err)
    assert main(["run", str(tmp_path / "missing.pt2"), "-o", out_dir]) == 2
    assert "missing.pt2" in _one_error_line(capsys.readouterr().err)
    assert not os.path.exists(out_dir)


def test_garbage_pt2(tmp_path, out_dir, capsys):
    path = tmp_path / "garbage.pt2"
    path.write_bytes(b"this is not a zip archive\x00\x01\x02")
    assert main(["run", str(path), "-o", out_dir]) == 2
    assert "garbage.pt2" in _one_error_line(capsys.readouterr().err)
    assert not os.path.exists(out_dir)


def test_attr_that_is_not_a_module(model_file, out_dir, capsys):
    assert main(["run", f"{model_file}:NotAModule", "-o", out_dir]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "NotAModule" in line and "nn.Module" in line
    assert main(["run", f"{model_file}:NoSuchAttr", "-o", out_dir]) == 2
    assert "NoSuchAttr" in _one_error_line(capsys.readouterr().err)


def test_data_dependent_control_flow(model_file, out_dir, capsys):
    assert main(["run", f"{model_file}:Branchy", "-o", out_dir]) == 2
    line = _one_error_line(capsys.readouterr().err)  # torch's partial-graph dump is not shown
    assert "torch.cond" in line and "decode-loop" in line
    assert not os.path.exists(out_dir)


def test_wrong_pass_fails_verification_naming_it(model_file, out_dir, wrong_pass, capsys):
    code = main(["run", "--passes", f"canonicalize,{wrong_pass},dce", f"{model_file}:Tiny", "-o", out_dir])
    assert code == 1
    line = _one_error_line(capsys.readouterr().err)
    assert wrong_pass in line
    assert not os.path.exists(out_dir)


def test_bisect_limit_skips_the_wrong_pass(model_file, out_dir, wrong_pass, capsys):
    code = main(["run", "--passes", f"{wrong_pass},dce", "--bisect-limit", "0", f"{model_file}:Tiny",
                 "-o", out_dir])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "skipped" in captured.out and "ran the first 0 of 2 passes" in captured.out
    assert os.path.isfile(os.path.join(out_dir, "manifest.json"))


def test_no_verify_is_caught_by_the_artifact_check(model_file, out_dir, wrong_pass, capsys):
    code = main(["run", "--no-verify", "--passes", wrong_pass, f"{model_file}:Tiny", "-o", out_dir])
    assert code == 1
    line = _one_error_line(capsys.readouterr().err)
    assert "compiled artifact" in line and "max abs error" in line
    assert not os.path.exists(out_dir)


def test_existing_non_artifact_output_dir_is_refused_before_capture(model_file, tmp_path, monkeypatch, capsys):
    target = tmp_path / "precious"
    target.mkdir()
    (target / "notes.txt").write_text("keep me")
    monkeypatch.setattr("fxopt.ir.capture.capture", lambda *a, **k: pytest.fail("captured anyway"))
    assert main(["run", f"{model_file}:Tiny", "-o", str(target)]) == 2
    assert "not an fxopt artifact" in _one_error_line(capsys.readouterr().err)
    assert (target / "notes.txt").read_text() == "keep me"


def test_unknown_backend_and_usage_errors(model_file, capsys):
    assert main(["run", "--backend", "nope", f"{model_file}:Tiny"]) == 2
    assert "nope" in _one_error_line(capsys.readouterr().err)
    assert main(["run", "--bisect-limit", "-1", f"{model_file}:Tiny"]) == 2
    assert main([]) == 2
    assert main(["frobnicate"]) == 2
    capsys.readouterr()


# ------------------------------------------------------------------------------------------ errors
def test_internal_error_is_one_line_without_debug(model_file, monkeypatch, capsys):
    def boom(target):
        raise RuntimeError("boom\nsecond line")

    monkeypatch.setattr("fxopt.passes.registry.default_pipeline", boom)
    assert main(["run", f"{model_file}:Tiny"]) == 3
    err = capsys.readouterr().err
    assert err.strip() == ("fxopt: internal error: RuntimeError: boom "
                           "(rerun with --debug for the traceback)")


@pytest.mark.parametrize("where", ["before", "after"])
def test_debug_shows_the_traceback(model_file, monkeypatch, capsys, where):
    def boom(target):
        raise RuntimeError("boom")

    monkeypatch.setattr("fxopt.passes.registry.default_pipeline", boom)
    argv = ["run", f"{model_file}:Tiny"]
    argv = ["--debug", *argv] if where == "before" else [*argv, "--debug"]
    assert main(argv) == 3
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err
    assert "in boom" in err
    assert err.strip().splitlines()[-1] == "fxopt: internal error: RuntimeError: boom"


def test_version(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"fxopt {fxopt.__version__}"


# ------------------------------------------------------------------------------------------ other commands
def test_passes_lists_passes_with_options(wrong_pass, capsys):
    assert main(["passes"]) == 0
    out = capsys.readouterr().out
    for name in ("dce", "canonicalize", "fold-constants", wrong_pass):
        assert name in out
    assert "Remove" in out  # a docstring summary
    assert "factor: float = 1.5" in out  # the option of the registered test pass
    assert "default pipeline" in out


def test_inspect_model(model_file, capsys):
    assert main(["inspect", f"{model_file}:Tiny"]) == 0
    out = capsys.readouterr().out
    assert "op histogram" in out and "aten.addmm.default" in out and "aten.view.default" in out
    assert "parameter bytes" in out and "144 B" in out  # 8*4 weights + 4 biases, float32
    assert "FLOPs" in out and "bytes moved" in out
    assert "dynamic dims" in out and "float32[2, 8]" in out


def test_inspect_artifact(model_file, out_dir, capsys):
    assert main(["run", f"{model_file}:Tiny", "-o", out_dir]) == 0
    capsys.readouterr()
    assert main(["inspect", out_dir]) == 0
    out = capsys.readouterr().out
    assert "reference" in out and "Tiny" in out and "graph.safetensors" in out
    assert "partitions" in out and "float32[2, 8]" in out


def test_inspect_directory_that_is_not_an_artifact(tmp_path, capsys):
    assert main(["inspect", str(tmp_path)]) == 2
    assert "manifest.json" in _one_error_line(capsys.readouterr().err)


def test_zoo_lists_models(capsys):
    assert main(["zoo"]) == 0
    out = capsys.readouterr().out
    for name in fxopt.zoo.names():
        assert f"zoo:{name}" in out


# ------------------------------------------------------------------------------------------ console script
def test_console_script(model_file, out_dir):
    exe = shutil.which("fxopt")
    command = [exe] if exe else [sys.executable, "-m", "fxopt.tools"]
    proc = subprocess.run([*command, "run", f"{model_file}:Tiny", "-o", out_dir],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""  # piped: no progress display, no warnings
    assert "artifact:" in proc.stdout and "\x1b[" not in proc.stdout
    assert os.path.isfile(os.path.join(out_dir, "manifest.json"))
    proc = subprocess.run([*command, "run", "--passes", "nope", f"{model_file}:Tiny"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("fxopt: error: unknown pass 'nope'")


# ------------------------------------------------------------------------------------------ formatting
def test_human_readable_sizes():
    from fxopt.tools.report import before_after, human_bytes, human_flops, human_seconds

    assert human_flops(0) == "0 FLOP"
    assert human_flops(1.23e9) == "1.2 GFLOP"
    assert human_bytes(3_400_000) == "3.4 MB"
    assert human_bytes(999) == "999 B"
    assert human_bytes(123_456) == "123 kB"
    assert human_seconds(0.012) == "12 ms" and human_seconds(75) == "1m15s"
    assert before_after(11, 8) == "11 → 8" and before_after(5, 5) == "5"
    assert before_after(152, 144, human_flops) == "152 → 144 FLOP"
    assert before_after(1500, 1_200_000, human_flops) == "1.5 kFLOP → 1.2 MFLOP"
    assert before_after(20_600_000, 20_599_488, human_bytes) == "20.6 MB (-512 B)"


def test_run_dynamic_batch_gives_one_artifact_for_any_batch(tmp_path):
    model_file = tmp_path / "mlp.py"
    model_file.write_text(
        "import torch\n\n"
        "class MLP(torch.nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.lin = torch.nn.Linear(6, 3)\n\n"
        "    def forward(self, x):\n"
        "        return torch.relu(self.lin(x))\n\n"
        "    def example_inputs(self):\n"
        "        return (torch.randn(4, 6),)\n")
    out = tmp_path / "art"
    assert main(["run", f"{model_file}:MLP", "--dynamic-batch", "--passes", "dce", "-o", str(out)]) == 0
    loaded = fxopt.load(str(out))
    assert isinstance(loaded.input_specs[0]["shape"][0], str)       # the batch dim is a symbol
    for batch in (1, 7):
        assert loaded(torch.randn(batch, 6)).shape == (batch, 3)
