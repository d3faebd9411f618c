"""Bad inputs (issue #10) not already covered elsewhere: each is one line, the right exit code, and no output
left behind.

Already covered (not repeated here): tests/test_cli.py — unknown pass, bad option / option value, missing
``.py``/``.pt2``, garbage ``.pt2``, attribute that is not a module, data-dependent control flow through
``fxopt run``, existing non-artifact output directory, unknown backend; tests/test_capture.py — the same
through the API plus a model that raises (line named), corrupt ``.pt2``; tests/test_reference_backend.py —
wrong input shape/dtype to a loaded artifact, newer/foreign/incomplete manifests and an unknown backend
through ``fxopt.load``, corrupt manifest, missing directory, failed save leaves nothing; tests/test_serialize.py
— missing/corrupt graph JSON, truncated safetensors, callables outside the allowlist, code in names.
"""
from __future__ import annotations

import json
import os
import shutil
import textwrap

import pytest
import torch

import fxopt
from fxopt.backends import base as backends_base
from fxopt.backends.reference import ReferenceBackend
from fxopt.errors import BackendError, InputError
from fxopt.tools.cli import main
from fxopt.tools.fuzz import main as fuzz_main

MODELS = textwrap.dedent('''
    import torch
    from torch import nn


    class Tiny(nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.lin = nn.Linear(4, 3)

        def forward(self, x, y):
            return self.lin(x).abs() + y

        def example_inputs(self):
            return (torch.randn(2, 4), torch.randn(2, 3))


    class RaisesWhileTracing(nn.Module):
        def forward(self, x):
            return x @ torch.ones(7, 7)  # wrong inner dim: raises on line 21

        def example_inputs(self):
            return (torch.randn(2, 3),)


    class Branchy(nn.Module):
        def forward(self, x):
            if x.max() > 0:
                return x + 1
            return x

        def example_inputs(self):
            return (torch.randn(3),)
''')


@pytest.fixture
def model_file(tmp_path):
    path = tmp_path / "bad_models.py"
    path.write_text(MODELS)
    return str(path)


@pytest.fixture
def out_dir(tmp_path):
    return str(tmp_path / "out")


def one_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


def leftovers(out_dir: str) -> list:
    """Anything left at or beside ``out_dir`` (the temp dirs of an atomic save included)."""
    parent = os.path.dirname(out_dir)
    return [n for n in os.listdir(parent) if n == os.path.basename(out_dir) or n.startswith(".fxopt-tmp")]


@pytest.fixture(scope="module")
def pristine_artifact(tmp_path_factory):
    """A saved reference artifact of Tiny (2 inputs: f32[2, 4], f32[2, 3]), made once per module, never edited."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3))

    class Two(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.m = model

        def forward(self, x, y):
            return self.m(x) + y

    program = fxopt.capture(Two().eval(), (torch.randn(2, 4), torch.randn(2, 3)))
    return fxopt.compile(fxopt.optimize(program, "canonicalize,dce")).save(
        str(tmp_path_factory.mktemp("bad_inputs") / "art"))


@pytest.fixture
def artifact(pristine_artifact, tmp_path):
    """This test's own copy of the saved Tiny artifact (tests corrupt it)."""
    return shutil.copytree(pristine_artifact, str(tmp_path / "art"))


# ------------------------------------------------------------------------------------------ capture
def test_cli_model_that_raises_while_tracing(model_file, out_dir, capsys):
    assert main(["run", f"{model_file}:RaisesWhileTracing", "-o", out_dir]) == 2
    line = one_line(capsys.readouterr().err)
    assert "bad_models.py:21" in line
    assert leftovers(out_dir) == []


def test_cli_bisect_data_dependent_control_flow(model_file, capsys):
    assert main(["bisect", f"{model_file}:Branchy", "--passes", "dce"]) == 2
    line = one_line(capsys.readouterr().err)
    assert "torch.cond" in line and "decode-loop" in line and "bad_models.py" in line


def test_cli_inspect_empty_pt2(tmp_path, capsys):
    path = tmp_path / "empty.pt2"
    path.write_bytes(b"")
    assert main(["inspect", str(path)]) == 2
    assert "empty.pt2" in one_line(capsys.readouterr().err)


def test_cli_pt2_that_is_a_pickle_is_not_unpickled(tmp_path, out_dir, capsys, monkeypatch):
    path = tmp_path / "model.pt2"
    torch.save(torch.nn.Linear(2, 2), str(path))  # a pickle under a .pt2 name
    assert main(["run", str(path), "-o", out_dir]) == 2
    assert "model.pt2" in one_line(capsys.readouterr().err)
    assert leftovers(out_dir) == []


# ------------------------------------------------------------------------------------------ passes
def test_cli_unknown_pass_option_in_bisect(model_file, capsys):
    assert main(["bisect", f"{model_file}:Tiny", "--passes", "dedupe{nope=1}"]) == 2
    line = one_line(capsys.readouterr().err)
    assert "nope" in line and "dedupe" in line


def test_fuzz_unknown_pass_is_exit_2(capsys):
    assert fuzz_main(["--passes", "dce,warp", "--examples", "1"]) == 2
    assert "unknown pass 'warp'" in one_line(capsys.readouterr().err)


# ------------------------------------------------------------------------------------------ strict backend
class StrictNoAbs(ReferenceBackend):
    """A strict backend: refuses a graph with an op outside its support table (here: aten.abs)."""

    name = "test-strict"

    def compile(self, program):
        for node in program.graph.nodes:
            if node.op == "call_function" and node.target is torch.ops.aten.abs.default:
                raise BackendError(f"backend 'test-strict' does not support aten::abs (node '{node.name}'); "
                                   "run it on the CPU with split, or choose another backend")
        return super().compile(program)


@pytest.fixture
def strict_backend():
    backends_base.register_backend("test-strict", StrictNoAbs)
    yield "test-strict"
    backends_base.BACKENDS.unregister("test-strict")


def test_cli_op_unsupported_by_a_strict_backend(model_file, out_dir, strict_backend, capsys):
    assert main(["run", f"{model_file}:Tiny", "--backend", strict_backend, "-o", out_dir]) == 2
    line = one_line(capsys.readouterr().err)
    assert "aten::abs" in line and "test-strict" in line
    assert leftovers(out_dir) == []


# ------------------------------------------------------------------------------------------ artifacts
def test_cli_inspect_newer_manifest_version(artifact, capsys):
    path = os.path.join(artifact, "manifest.json")
    manifest = json.load(open(path))
    manifest["version"] = 2
    json.dump(manifest, open(path, "w"))
    assert main(["inspect", artifact]) == 2
    assert "newer than this fxopt reads" in one_line(capsys.readouterr().err)


def test_cli_inspect_corrupt_manifest(artifact, capsys):
    with open(os.path.join(artifact, "manifest.json"), "w") as f:
        f.write('{"format": "fxopt-artifact", "version"')
    assert main(["inspect", artifact]) == 2
    assert "corrupt manifest" in one_line(capsys.readouterr().err)


@pytest.mark.parametrize("damage, words", [
    (lambda d: os.remove(os.path.join(d, "graph.json")), "graph.json does not exist"),
    (lambda d: open(os.path.join(d, "graph.json"), "w").write("[1, 2"), "graph.json is not a readable"),
    (lambda d: os.remove(os.path.join(d, "graph.safetensors")), "graph.safetensors does not exist"),
    (lambda d: open(os.path.join(d, "graph.safetensors"), "r+b").truncate(40), "graph.safetensors could not"),
])
def test_corrupt_artifact_directory_is_one_line(artifact, damage, words):
    damage(artifact)
    with pytest.raises(InputError) as info:
        fxopt.load(artifact)
    assert words in str(info.value) and "\n" not in str(info.value)


def test_loaded_artifact_wrong_dtype(artifact):
    loaded = fxopt.load(artifact)
    with pytest.raises(InputError, match=r"input 1 \('y'\): expected float32\[2, 3\], got float64\[2, 3\]"):
        loaded(torch.randn(2, 4), torch.randn(2, 3, dtype=torch.float64))


def test_loaded_artifact_wrong_rank(artifact):
    with pytest.raises(InputError, match=r"input 0 \('x'\): expected float32\[2, 4\], got float32\[8\]"):
        fxopt.load(artifact)(torch.randn(8), torch.randn(2, 3))


def test_loaded_artifact_wrong_input_count_and_structure(artifact):
    loaded = fxopt.load(artifact)
    with pytest.raises(InputError, match=r"do not match its signature: expected 2 positional arguments \(2 leaves "
                                         r"in all\), got 1 positional argument \(1 leaf in all\)") as info:
        loaded(torch.randn(2, 4))
    assert "\n" not in str(info.value)
    with pytest.raises(InputError, match=r"got 1 positional argument and keyword 'y' \(2 leaves in all\)"):
        loaded(torch.randn(2, 4), y=torch.randn(2, 3))


def test_loaded_dynamic_artifact_disagreeing_symbol(tmp_path):
    """Two inputs sharing the batch symbol must agree on it."""
    class Add(torch.nn.Module):
        def forward(self, x, y):
            return x + y

    batch = torch.export.Dim("batch")
    program = fxopt.capture(Add(), (torch.randn(3, 2), torch.randn(3, 2)),
                            dynamic_shapes=({0: batch}, {0: batch}))
    loaded = fxopt.load(fxopt.compile(program).save(str(tmp_path / "dyn")))
    assert loaded(torch.ones(5, 2), torch.ones(5, 2)).shape == (5, 2)
    with pytest.raises(InputError, match="must agree"):
        loaded(torch.ones(5, 2), torch.ones(4, 2))


def test_fuzz_unknown_op_kind_is_exit_2(capsys):
    assert fuzz_main(["--ops", "linear,warp-drive", "--examples", "1"]) == 2
    assert "unknown op kind 'warp-drive'" in one_line(capsys.readouterr().err)


def test_loaded_artifact_checks_a_specialized_auto_dim(tmp_path):
    class FixedBatch(torch.nn.Module):
        def forward(self, x):
            return x.view(4, 3) + 1

    program = fxopt.capture(FixedBatch(), (torch.randn(4, 3),), dynamic_shapes=({0: torch.export.Dim.AUTO},))
    loaded = fxopt.load(fxopt.compile(program).save(str(tmp_path / "auto")))
    with pytest.raises(InputError, match=r"expected float32\[4, 3\], got float32\[5, 3\]"):
        loaded(torch.randn(5, 3))
