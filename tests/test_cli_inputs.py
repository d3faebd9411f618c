"""The CLI's model inputs (``--input``, ``--inputs``, ``--small``), its catalog, and a start without torch.

A model without ``example_inputs()`` is written into a temporary file, as a user would write it.
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch

import fxopt
from fxopt.tools import catalog
from fxopt.tools.cli import main
from fxopt.tools.model_inputs import InputSpec, bind, parse_input_spec

USER_MODEL = textwrap.dedent('''
    import torch
    from torch import nn


    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.emb = nn.Embedding(5000, 8)
            self.fc = nn.Linear(16 + 8, 4)

        def forward(self, x, ids):
            return self.fc(torch.cat([x, self.emb(ids).mean(1)], dim=1))
''')


@pytest.fixture
def user_model(tmp_path):
    path = tmp_path / "net.py"
    path.write_text(USER_MODEL)
    return f"{path}:Net"


@pytest.mark.parametrize("text, spec", [
    ("x=float32[8,128]", InputSpec("x", "float32", (8, 128))),
    ("ids=int64[8,20]:0..5000", InputSpec("ids", "int64", (8, 20), 0.0, 5000.0)),
    ("bool[3]", InputSpec(None, "bool", (3,))),
    ("s=float64[]", InputSpec("s", "float64", ())),
])
def test_input_specs_parse(text, spec):
    assert parse_input_spec(text) == spec
    assert parse_input_spec(spec.text()) == spec


@pytest.mark.parametrize("text, message", [
    ("x=float33[8]", "unknown dtype 'float33'"),
    ("x=float32[8,a]", "dims must be integers"),
    ("x=float32(8)", "expected [NAME=]DTYPE"),
    ("ids=int64[8]:5..5", "is empty"),
    ("ids=int64[8]:0..2.5", "integer range"),
])
def test_a_bad_input_spec_is_a_usage_error_naming_it(text, message, capsys):
    assert main(["run", "zoo:ranking", "--input", text]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_named_inputs_bind_by_forward_argument_and_the_run_reproduces_the_model(user_model, tmp_path, capsys):
    out = str(tmp_path / "art")
    code = main(["run", user_model, "--input", "ids=int64[2,5]:0..5000", "--input", "x=float32[2,16]", "-o", out])
    assert code == 0, capsys.readouterr().err
    loaded = fxopt.load(out)
    assert [s["shape"] for s in loaded.input_specs] == [[2, 16], [2, 5]]   # x first: forward's order
    x, ids = torch.randn(2, 16), torch.randint(0, 5000, (2, 5))
    from fxopt.ir.capture import resolve_model
    model = resolve_model(user_model, ())[0]
    torch.testing.assert_close(loaded(x, ids), model(x, ids))


def test_integer_inputs_are_drawn_inside_their_range():
    from fxopt.tools.model_inputs import make_tensor
    t = make_tensor(parse_input_spec("ids=int64[1000]:10..20"), torch.Generator().manual_seed(0))
    assert t.dtype == torch.int64 and int(t.min()) >= 10 and int(t.max()) < 20


@pytest.mark.parametrize("inputs, message", [
    (["--input", "ids=int64[2,5]:0..5000"], "give input 'x' too"),
    (["--input", "y=float32[2,16]"], "no input named 'y' (its inputs: x, ids)"),
    (["--input", "x=float32[2,16]", "--input", "int64[2,5]"], "name every input"),
    ([], "--input 'x=float32[8,128]'"),
])
def test_wrong_or_missing_inputs_are_one_line_errors(user_model, inputs, message, capsys):
    assert main(["run", user_model, *inputs]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


@pytest.mark.parametrize("saved", ["dict", "tuple"])
def test_inputs_from_a_torch_save_file(user_model, tmp_path, saved, capsys):
    x, ids = torch.randn(3, 16), torch.randint(0, 5000, (3, 4))
    path = tmp_path / "inputs.pt"
    torch.save({"ids": ids, "x": x} if saved == "dict" else (x, ids), path)
    out = str(tmp_path / "art")
    assert main(["run", user_model, "--inputs", str(path), "-o", out]) == 0, capsys.readouterr().err
    assert [s["shape"] for s in fxopt.load(out).input_specs] == [[3, 16], [3, 4]]


def test_an_inputs_file_that_needs_a_full_unpickler_is_refused(user_model, tmp_path, capsys):
    class Evil:
        def __reduce__(self):
            return (os.system, ("touch " + str(tmp_path / "pwned"),))

    path = tmp_path / "evil.pt"
    torch.save({"x": Evil()}, path)
    assert main(["run", user_model, "--inputs", str(path)]) == 2
    assert "not a file torch.load reads as tensors" in capsys.readouterr().err
    assert not (tmp_path / "pwned").exists()


def test_bind_orders_named_values_by_the_parameters():
    class M(torch.nn.Module):
        def forward(self, a, b, c=None):
            return a

    assert bind(M(), [("b", 2), ("a", 1)], "--input") == (1, 2)


def test_small_runs_the_small_zoo_variant_and_names_it(tmp_path, capsys):
    out = str(tmp_path / "ranking")
    assert main(["run", "--small", "zoo:ranking", "-o", out]) == 0
    loaded = fxopt.load(out)
    assert loaded.name == "zoo:ranking{small=true}"
    _, small_inputs = fxopt.zoo.get("ranking", small=True)
    assert [list(t.shape) for t in small_inputs] == [s["shape"] for s in loaded.input_specs]


def test_small_is_refused_for_a_model_outside_the_zoo(user_model, capsys):
    assert main(["inspect", "--small", user_model]) == 2
    assert "--small applies to zoo:NAME models only" in capsys.readouterr().err


@pytest.mark.parametrize("spec, message", [
    ("zoo:ranking{small=maybe}", "small must be true or false"),
    ("zoo:ranking{tiny=true}", "unknown option 'tiny'"),
    ("zoo:rankin{small=true}", "unknown zoo model 'rankin'"),
])
def test_zoo_spec_options_are_checked(spec, message):
    with pytest.raises(fxopt.InputError, match=message):
        fxopt.capture(spec)


# ------------------------------------------------------------------------------------------ catalog, startup
def test_the_saved_catalog_equals_the_live_registries():
    assert catalog.load() == catalog.build(), (
        "tools/catalog.json is stale: run `python -m fxopt.tools.catalog --write` and commit it")


def test_help_passes_zoo_and_usage_errors_answer_without_importing_torch():
    code = textwrap.dedent('''
        import contextlib, io, sys
        from fxopt.tools.cli import main
        codes = []
        with contextlib.redirect_stdout(io.StringIO()) as out, contextlib.redirect_stderr(io.StringIO()):
            for argv in (["--help"], ["passes"], ["zoo"], ["rnu"], ["run", "--input", "x=f[1]", "zoo:ocr"],
                         ["run", "-h"], ["bench", "-h"], ["bisect", "-h"], ["viz", "-h"]):
                codes.append(main(argv))
        assert "zoo:ranking" in out.getvalue() and "fold-constants" in out.getvalue()
        print(codes, sorted(m for m in ("torch", "sympy", "numpy", "jax") if m in sys.modules))
    ''')
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[0, 0, 0, 2, 2, 0, 0, 0, 0] []"


def test_import_fxopt_is_lazy_and_its_names_resolve():
    code = ("import sys, fxopt\n"
            "assert 'torch' not in sys.modules\n"
            "assert callable(fxopt.export) and callable(fxopt.capture) and fxopt.zoo.names()\n"
            "print('torch' in sys.modules)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "True", done.stderr[-2000:]


def test_named_inputs_bind_to_an_onnx_files_input_names(tmp_path, capsys):
    pytest.importorskip("onnx")

    class TwoInputs(torch.nn.Module):
        def forward(self, a, b):
            return a * 2 + b.sum(1, keepdim=True)

    path = tmp_path / "two.onnx"
    with torch.no_grad():
        torch.onnx.export(TwoInputs(), (torch.randn(2, 3), torch.randn(2, 4)), str(path), dynamo=False,
                          opset_version=17, input_names=["a", "b"])
    out = str(tmp_path / "art")
    code = main(["run", str(path), "--input", "b=float32[2,4]", "--input", "a=float32[2,3]", "-o", out])
    assert code == 0, capsys.readouterr().err
    assert [s["shape"] for s in fxopt.load(out).input_specs] == [[2, 3], [2, 4]]
    assert main(["run", str(path), "--input", "c=float32[2,3]", "-o", out]) == 2
    assert "no input named 'c' (its inputs: a, b)" in capsys.readouterr().err


def test_named_inputs_bind_to_a_pt2s_input_names(tmp_path, capsys):
    class TwoInputs(torch.nn.Module):
        def forward(self, a, b):
            return a * 2 + b.sum(1, keepdim=True)

    path = tmp_path / "two.pt2"
    torch.export.save(torch.export.export(TwoInputs(), (torch.randn(2, 3), torch.randn(2, 4))), str(path))
    out = str(tmp_path / "art")
    code = main(["run", str(path), "--input", "b=float32[2,4]", "--input", "a=float32[2,3]", "-o", out])
    assert code == 0, capsys.readouterr().err
    assert [s["shape"] for s in fxopt.load(out).input_specs] == [[2, 3], [2, 4]]


# ------------------------------------------------------------------------------------------ --batch
def test_rebatch_repeats_or_cuts_the_batch_dim_only():
    from fxopt.tools.model_inputs import rebatch
    ids, dense, other = torch.arange(12).reshape(4, 3), torch.randn(4, 2), torch.arange(7)
    big = rebatch((ids, dense, other, 1.5), 10)
    assert big[0].shape == (10, 3) and big[1].shape == (10, 2)
    assert torch.equal(big[0][4:8], ids) and torch.equal(big[0][8:], ids[:2])   # rows repeated in order
    assert big[2] is other and big[3] == 1.5                                      # not batch-shaped: kept
    small = rebatch({"ids": ids}, 2)
    assert torch.equal(small["ids"], ids[:2])


def test_batch_flag_captures_and_compiles_at_that_batch(tmp_path, capsys):
    import json
    out = tmp_path / "b"
    assert main(["run", "zoo:ranking", "--small", "--batch", "24", "--no-verify", "-o", str(out)]) == 0
    shapes = [i["shape"] for i in json.loads((out / "manifest.json").read_text())["inputs"]]
    assert shapes and all(s[0] == 24 for s in shapes)


def test_batch_flag_works_with_input_specs(user_model, tmp_path, capsys):
    import json
    out = tmp_path / "c"
    assert main(["run", user_model, "--input", "x=float32[2,16]", "--input", "ids=int64[2,3]:0..5000",
                 "--batch", "5", "--no-verify", "-o", str(out)]) == 0
    assert json.loads((out / "manifest.json").read_text())["inputs"][0]["shape"][0] == 5


@pytest.mark.parametrize("value", ["0", "-3", "two"])
def test_a_bad_batch_is_a_usage_error(value, capsys):
    assert main(["run", "zoo:ranking", "--batch", value]) == 2
    assert "positive integer" in capsys.readouterr().err
