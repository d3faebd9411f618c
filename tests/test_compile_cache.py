"""fxopt run's compile cache (tools/compile_cache.py): a run of the same model, passes, backend and versions
reuses the stored artifact; anything that changes the artifact misses."""
from __future__ import annotations

import json
import os
import textwrap

import pytest

from fxopt.tools.cli import main

MODEL = textwrap.dedent('''
    import torch


    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(SEED)
            self.lin = torch.nn.Linear(4, 2)

        def forward(self, x):
            return self.lin(x).relu()

        def example_inputs(self):
            return (torch.randn(2, 4, generator=torch.Generator().manual_seed(0)),)
''')


@pytest.fixture
def model_file(tmp_path):
    path = tmp_path / "net.py"
    path.write_text(MODEL.replace("SEED", "0"))
    return path


def _run(capsys, *argv) -> tuple[int, str]:
    code = main(["run", *argv])
    return code, capsys.readouterr().out


def _reused(out: str) -> bool:
    return "reused from the compile cache" in out


def test_a_zoo_model_is_reused_before_capture(tmp_path, capsys):
    cache, out = str(tmp_path / "cache"), str(tmp_path / "a")
    code, first = _run(capsys, "zoo:ranking", "--small", "--cache", cache, "-o", out)
    assert code == 0 and not _reused(first) and "passes for target" in first
    manifest = json.loads(open(os.path.join(out, "manifest.json")).read())
    code, second = _run(capsys, "zoo:ranking", "--small", "--cache", cache, "-o", str(tmp_path / "b"))
    assert code == 0 and _reused(second) and "same model source" in second
    assert "passes for target" not in second                       # nothing optimized, nothing printed for it
    assert json.loads(open(tmp_path / "b" / "manifest.json").read()) == manifest


def test_a_file_model_is_captured_then_found_by_its_graph(model_file, tmp_path, capsys):
    cache = str(tmp_path / "cache")
    assert _run(capsys, f"{model_file}:Net", "--cache", cache, "-o", str(tmp_path / "a"))[0] == 0
    code, second = _run(capsys, f"{model_file}:Net", "--cache", cache, "-o", str(tmp_path / "b"))
    assert code == 0 and _reused(second) and "same graph and weights" in second


def test_new_weights_other_passes_or_another_backend_miss(model_file, tmp_path, capsys):
    cache = str(tmp_path / "cache")
    spec = f"{model_file}:Net"
    assert _run(capsys, spec, "--cache", cache, "-o", str(tmp_path / "a"))[0] == 0
    assert not _reused(_run(capsys, spec, "--cache", cache, "--passes", "dce", "-o", str(tmp_path / "b"))[1])
    assert not _reused(_run(capsys, spec, "--cache", cache, "--backend", "xla", "-o", str(tmp_path / "c"))[1])
    model_file.write_text(MODEL.replace("SEED", "1"))                 # the same code, other weights
    assert not _reused(_run(capsys, spec, "--cache", cache, "-o", str(tmp_path / "d"))[1])


@pytest.mark.parametrize("flag", [["--no-cache"], ["--no-verify"], ["--bisect-limit", "1"]])
def test_unchecked_partial_or_uncached_runs_store_nothing(flag, model_file, tmp_path, capsys):
    cache = tmp_path / "cache"
    assert _run(capsys, f"{model_file}:Net", "--cache", str(cache), *flag, "-o", str(tmp_path / "a"))[0] == 0
    assert not (cache / "artifacts").exists()


def test_fxopt_no_cache_turns_the_default_cache_off(model_file, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("FXOPT_CACHE_DIR", str(tmp_path / "default"))
    assert _run(capsys, f"{model_file}:Net", "-o", str(tmp_path / "a"))[0] == 0       # FXOPT_NO_CACHE=1 (conftest)
    assert not (tmp_path / "default").exists()
    monkeypatch.delenv("FXOPT_NO_CACHE")
    assert _run(capsys, f"{model_file}:Net", "-o", str(tmp_path / "b"))[0] == 0
    assert (tmp_path / "default" / "artifacts").is_dir()
    assert _reused(_run(capsys, f"{model_file}:Net", "-o", str(tmp_path / "c"))[1])


def test_a_reused_accelerator_artifact_still_says_it_does_no_accelerator_work(model_file, tmp_path, capsys):
    cache, spec = str(tmp_path / "cache"), f"{model_file}:Net"
    assert _run(capsys, spec, "--backend", "neuron", "--cache", cache, "-o", str(tmp_path / "a"))[0] == 0
    code, out = _run(capsys, spec, "--backend", "neuron", "--cache", cache, "--require-accelerator",
                     "-o", str(tmp_path / "b"))
    assert _reused(out) and "warning: no neuron partition" in out and code == 1


def test_a_broken_cache_entry_compiles_instead_and_an_unwritable_cache_warns(model_file, tmp_path, capsys):
    import shutil
    cache = tmp_path / "cache"
    spec = f"{model_file}:Net"
    assert _run(capsys, spec, "--cache", str(cache), "-o", str(tmp_path / "a"))[0] == 0
    [entry] = [p for p in (cache / "artifacts").iterdir() if p.is_dir()]
    (entry / "graph.json").write_text("{not json")                 # a damaged entry: reuse fails, compile runs
    code, out = _run(capsys, spec, "--cache", str(cache), "-o", str(tmp_path / "b"))
    assert code == 0 and "could not be used" in out and "passes for target" in out
    shutil.rmtree(cache)
    cache.write_text("a file where the cache directory should be")
    code, out = _run(capsys, spec, "--cache", str(cache), "-o", str(tmp_path / "c"))
    assert code == 0 and "warning: could not store the artifact in the compile cache" in out
    assert (tmp_path / "c" / "manifest.json").is_file()


def test_the_cache_keeps_within_its_size_by_evicting_the_least_recently_used(model_file, tmp_path, capsys):
    from fxopt.tools.compile_cache import Cache
    cache = tmp_path / "cache"
    spec = f"{model_file}:Net"
    for seed, out in ((0, "a"), (1, "b")):
        model_file.write_text(MODEL.replace("SEED", str(seed)))
        assert _run(capsys, spec, "--cache", str(cache), "-o", str(tmp_path / out))[0] == 0
    entries = sorted(p.name for p in (cache / "artifacts").iterdir() if p.is_dir())
    assert len(entries) == 2
    removed = Cache(str(cache), max_bytes=1).evict(keep=entries[0])
    assert removed == [entries[1]] and [p.name for p in (cache / "artifacts").iterdir() if p.is_dir()] == [entries[0]]


def test_stored_files_are_linked_not_copied_when_they_can_be(model_file, tmp_path, capsys):
    cache = tmp_path / "cache"
    out = tmp_path / "a"
    assert _run(capsys, f"{model_file}:Net", "--cache", str(cache), "-o", str(out))[0] == 0
    [entry] = [p for p in (cache / "artifacts").iterdir() if p.is_dir()]
    assert os.path.samefile(entry / "manifest.json", out / "manifest.json")
