"""The reference backend and the artifact directory: compile, save, load in a new process, bad artifacts."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file, save_file

import fxopt
from fxopt.errors import InputError

from conftest import TinyEncoder


@pytest.fixture(scope="module")
def optimized():
    torch.manual_seed(0)
    model = TinyEncoder().eval()
    inputs = model.example_inputs()
    program = fxopt.capture(model, inputs, dynamic_shapes=({0: torch.export.Dim("batch", max=64)},))
    return model, inputs, fxopt.optimize(program, "canonicalize,fold-constants,dce")


def test_compiled_runs_like_the_model(optimized):
    model, inputs, program = optimized
    compiled = fxopt.compile(program)
    torch.testing.assert_close(compiled(*inputs), model(*inputs))


def test_artifact_has_manifest_graph_weights_and_trace(optimized, tmp_path):
    _, _, program = optimized
    out = fxopt.compile(program).save(str(tmp_path / "art"))
    assert sorted(os.listdir(out)) == ["graph.json", "graph.safetensors", "manifest.json", "timings.json",
                                       "trace.json"]
    manifest = json.load(open(os.path.join(out, "manifest.json")))
    assert manifest["format"] == "fxopt-artifact" and manifest["version"] == 1
    assert manifest["backend"] == "reference"
    assert manifest["inputs"][0]["dtype"] == "int64" and isinstance(manifest["inputs"][0]["shape"][0], str)
    assert manifest["passes"] == ["canonicalize", "fold-constants", "dce"]
    (partition,) = manifest["partitions"]
    assert partition["steps"]["left_for_target"] == []
    trace = json.load(open(os.path.join(out, "trace.json")))
    assert [s["pass"] for s in trace["snapshots"]] == ["capture", "canonicalize", "fold-constants", "dce"]


def test_load_in_a_new_process_gives_the_same_outputs(optimized, tmp_path):
    model, inputs, program = optimized
    out = fxopt.compile(program).save(str(tmp_path / "art"))
    batch = torch.randint(0, 100, (5, 8))  # a batch size other than the example's: the dim is dynamic
    save_file({"ids": batch}, str(tmp_path / "in.safetensors"))
    script = (
        "import sys, fxopt\n"
        "from safetensors.torch import load_file, save_file\n"
        "ids = load_file(sys.argv[2])['ids']\n"
        "save_file({'y': fxopt.load(sys.argv[1])(ids)}, sys.argv[3])\n"
    )
    subprocess.run([sys.executable, "-c", script, out, str(tmp_path / "in.safetensors"),
                    str(tmp_path / "out.safetensors")], check=True, cwd=str(tmp_path))
    got = load_file(str(tmp_path / "out.safetensors"))["y"]
    torch.testing.assert_close(got, model(batch))


def test_saving_twice_is_byte_identical(optimized, tmp_path):
    _, _, program = optimized
    compiled = fxopt.compile(program)
    a, b = compiled.save(str(tmp_path / "a")), compiled.save(str(tmp_path / "b"))
    for name in ("graph.json", "graph.safetensors", "manifest.json"):
        assert open(os.path.join(a, name), "rb").read() == open(os.path.join(b, name), "rb").read(), name


def test_wrong_input_shape_is_a_clear_error(optimized, tmp_path):
    _, _, program = optimized
    loaded = fxopt.load(fxopt.compile(program).save(str(tmp_path / "art")))
    with pytest.raises(InputError, match=r"input 0 \('ids'\): expected int64\[s\d+, 8\], got int64\[2, 9\]"):
        loaded(torch.zeros(2, 9, dtype=torch.long))
    with pytest.raises(InputError, match="expected int64"):
        loaded(torch.zeros(2, 8))


def test_refuses_to_overwrite_a_directory_that_is_not_an_artifact(optimized, tmp_path):
    _, _, program = optimized
    target = tmp_path / "precious"
    target.mkdir()
    (target / "notes.txt").write_text("keep me")
    with pytest.raises(InputError, match="not an fxopt artifact"):
        fxopt.compile(program).save(str(target))
    assert os.listdir(target) == ["notes.txt"]


def test_failed_save_leaves_nothing_behind(optimized, tmp_path, monkeypatch):
    _, _, program = optimized
    compiled = fxopt.compile(program)

    def explode(directory):
        raise RuntimeError("disk full")

    monkeypatch.setattr(compiled, "write_partitions", explode)
    with pytest.raises(RuntimeError):
        compiled.save(str(tmp_path / "art"))
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("mutate, words", [
    (lambda m: m.update(version=99), "newer than this fxopt reads"),
    (lambda m: m.update(format="something-else"), "not an fxopt artifact manifest"),
    (lambda m: m.pop("partitions"), "no 'partitions'"),
    (lambda m: m.update(backend="warp-drive"), "unknown backend 'warp-drive'"),
])
def test_bad_manifests_are_one_line_errors(optimized, tmp_path, mutate, words):
    _, _, program = optimized
    out = fxopt.compile(program).save(str(tmp_path / "art"))
    path = os.path.join(out, "manifest.json")
    manifest = json.load(open(path))
    mutate(manifest)
    json.dump(manifest, open(path, "w"))
    with pytest.raises(InputError, match=words):
        fxopt.load(out)


def test_corrupt_manifest_and_missing_directory(optimized, tmp_path):
    _, _, program = optimized
    out = fxopt.compile(program).save(str(tmp_path / "art"))
    with open(os.path.join(out, "manifest.json"), "w") as f:
        f.write("{not json")
    with pytest.raises(InputError, match="corrupt manifest"):
        fxopt.load(out)
    with pytest.raises(InputError, match="no such artifact directory"):
        fxopt.load(str(tmp_path / "nowhere"))


def test_compile_does_not_modify_the_program(optimized):
    _, inputs, program = optimized
    code = program.graph_module.code
    fxopt.compile(program)
    assert program.graph_module.code == code
