"""Determinism (issue #10): the same model and pipeline give byte-identical artifacts and traces — across two
captures in one process (a zoo model with embedding bags, experts and shared weights) and across two
processes with different ``PYTHONHASHSEED`` s (a transformer block) — with no ``id()``/address leakage.

Wall-clock pass timings differ from run to run, so artifacts keep them out of ``trace.json``, in
``timings.json`` (``fxopt.load`` and ``fxopt viz`` merge them back); every other file is compared byte for byte.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap

import pytest

import fxopt

PIPELINE = "canonicalize,fold-constants,dedupe,moe,dce"
def comparable(files: dict) -> dict:
    """The files, without ``timings.json`` (wall-clock seconds, expected to differ)."""
    return {name: data for name, data in files.items() if not name.endswith("timings.json")}


def files_of(directory: str) -> dict[str, bytes]:
    """Every file under ``directory`` (relative path -> bytes)."""
    out = {}
    for root, _, names in os.walk(directory):
        for name in names:
            path = os.path.join(root, name)
            out[os.path.relpath(path, directory)] = open(path, "rb").read()
    return out


def build(tmp_path, name: str) -> str:
    model, inputs = fxopt.zoo.get("ranking", small=True)
    program = fxopt.optimize(fxopt.capture(model, inputs), PIPELINE)
    return fxopt.compile(program).save(str(tmp_path / name))


@pytest.fixture(scope="module")
def two_builds(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("det")
    return files_of(build(tmp, "a")), files_of(build(tmp, "b"))


def test_two_captures_give_the_same_files(two_builds):
    a, b = two_builds
    assert sorted(a) == sorted(b)
    assert {"manifest.json", "graph.json", "graph.safetensors", "trace.json"} <= set(a)


@pytest.mark.parametrize("name", ["manifest.json", "graph.json", "graph.safetensors", "trace.json"])
def test_two_captures_give_byte_identical_files(two_builds, name):
    a, b = comparable(two_builds[0]), comparable(two_builds[1])
    assert a[name] == b[name], f"{name} differs between two captures of the same model"


def test_timings_live_beside_the_trace(two_builds):
    """``timings.json`` holds one wall-clock figure per pass; ``trace.json`` holds none."""
    import json

    a, _ = two_builds
    assert b'"seconds"' not in a["trace.json"]
    timings = json.loads(a["timings.json"])
    assert [row["index"] for row in timings["reports"]] == list(range(len(PIPELINE.split(","))))
    assert all(row["values"]["seconds"] > 0 for row in timings["reports"])


def test_artifact_holds_no_addresses_or_object_ids(two_builds):
    a, _ = two_builds
    for name in ("manifest.json", "graph.json", "trace.json"):
        text = a[name].decode()
        assert not re.search(r"0x[0-9a-f]{6,}", text), f"{name} holds a memory address"
        assert " object at " not in text, f"{name} holds an object repr"


def test_the_pipeline_really_changed_the_graph(two_builds):
    """Guard: the determinism above is about an optimized graph, not an untouched one."""
    a, _ = two_builds
    trace = a["trace.json"].decode()
    assert '"modified": true' in trace


SCRIPT = textwrap.dedent('''
    import sys, torch
    sys.path.insert(0, sys.argv[2])
    import fxopt
    from conftest import AttentionBlock
    torch.manual_seed(0)
    model = AttentionBlock().eval()
    program = fxopt.capture(model, model.example_inputs())
    program = fxopt.optimize(program, "canonicalize,fold-constants,dedupe,moe,dce")
    fxopt.compile(program).save(sys.argv[1])
''')


def test_two_processes_with_different_hash_seeds_give_identical_artifacts(tmp_path):
    tests_dir = os.path.dirname(os.path.abspath(__file__))
    outs = []
    for seed in ("1", "12345"):
        out = str(tmp_path / f"p{seed}")
        env = dict(os.environ, PYTHONHASHSEED=seed)
        subprocess.run([sys.executable, "-c", SCRIPT, out, tests_dir], check=True, env=env, cwd=str(tmp_path),
                       capture_output=True, timeout=300)
        outs.append(files_of(out))
    assert sorted(outs[0]) == sorted(outs[1])
    outs = [comparable(files) for files in outs]
    for name in outs[0]:
        assert outs[0][name] == outs[1][name], f"{name} differs between processes"


def test_loaded_artifact_trace_has_its_timings_back(tmp_path):
    loaded = fxopt.load(build(tmp_path, "t"))
    reports = loaded.trace["reports"]
    assert len(reports) == len(PIPELINE.split(",")) and all(r["seconds"] > 0 for r in reports)
