"""Safe loading (issue #10): loading an artifact never unpickles, and nothing in a manifest or graph file can
steer reads outside the artifact directory or reach a Python callable outside the allowlist."""
from __future__ import annotations

import json
import os
import pickle
import shutil

import pytest
import torch

import fxopt
from fxopt.errors import InputError


class TwoLayer(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.a = torch.nn.Linear(4, 8)
        self.b = torch.nn.Linear(8, 2)

    def forward(self, x):
        return self.b(torch.relu(self.a(x)))


INPUTS = (torch.randn(3, 4, generator=torch.Generator().manual_seed(1)),)


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    """A reference artifact of TwoLayer saved once per module, and its expected output (never edited)."""
    model = TwoLayer().eval()
    program = fxopt.optimize(fxopt.capture(model, INPUTS), "canonicalize,dce")
    path = fxopt.compile(program).save(str(tmp_path_factory.mktemp("safety") / "art"))
    return path, model(*INPUTS).detach()


@pytest.fixture
def artifact(pristine, tmp_path):
    """This test's own copy of the saved TwoLayer artifact (tests edit it) and its expected output."""
    path, expected = pristine
    return shutil.copytree(path, str(tmp_path / "art")), expected.clone()


def edit_json(path: str, fn) -> None:
    data = json.load(open(path))
    fn(data)
    with open(path, "w") as f:
        json.dump(data, f)


def one_line_error(directory: str) -> str:
    with pytest.raises(InputError) as info:
        fxopt.load(directory)
    message = str(info.value)
    assert "\n" not in message
    return message


# ------------------------------------------------------------------------------------------ manifest paths
@pytest.mark.parametrize("name", ["../outside.safetensors", "/etc/passwd", "sub/../../x.json", "..",
                                  "C:\\\\evil.json"])
def test_manifest_file_outside_the_directory_is_refused(artifact, name):
    directory, _ = artifact
    edit_json(os.path.join(directory, "manifest.json"), lambda m: m["partitions"][0]["files"].append(name))
    assert "outside the artifact directory" in one_line_error(directory)


def test_manifest_file_inside_a_subdirectory_is_allowed(artifact):
    directory, expected = artifact
    edit_json(os.path.join(directory, "manifest.json"), lambda m: m["partitions"][0]["files"].append("sub/x.bin"))
    torch.testing.assert_close(fxopt.load(directory)(*INPUTS), expected)


def test_shared_store_link_is_the_only_allowed_parent_path(artifact):
    directory, _ = artifact

    def hostile(m):
        m["backend"] = "reference-shared"
        m["partitions"][0]["shared_store"] = "../../weights.safetensors"
        m["partitions"][0]["files"] = ["graph.json", "../../weights.safetensors"]

    edit_json(os.path.join(directory, "manifest.json"), hostile)
    assert "outside the artifact directory" in one_line_error(directory)


# ------------------------------------------------------------------------------------------ graph file
def _graph_nodes(directory):
    return os.path.join(directory, "graph.json")


def test_graph_attribute_path_with_dots_up_is_refused(artifact):
    directory, _ = artifact

    def hostile(doc):
        node = next(n for n in doc["graph"]["nodes"] if n["op"] == "get_attr")
        node["target"] = "../../etc/passwd"

    edit_json(_graph_nodes(directory), hostile)
    message = one_line_error(directory)
    assert "graph.json" in message


@pytest.mark.parametrize("kind, target", [("builtin", "os.system"), ("builtin", "builtins.eval"),
                                          ("op", "os::system"), ("hop", "subprocess.run")])
def test_graph_target_outside_the_allowlist_is_refused(artifact, kind, target):
    directory, _ = artifact

    def hostile(doc):
        node = next(n for n in doc["graph"]["nodes"] if n["op"] == "call_function")
        node["target"], node["target_kind"] = target, kind

    edit_json(_graph_nodes(directory), hostile)
    assert "graph.json" in one_line_error(directory)


# ------------------------------------------------------------------------------------------ pickles
class _Payload:
    """Unpickling this creates a marker file (what a hostile pickle would do)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_pickled_weights_are_refused_and_never_unpickled(artifact, tmp_path):
    directory, _ = artifact
    marker = str(tmp_path / "PWNED")
    with open(os.path.join(directory, "graph.safetensors"), "wb") as f:
        pickle.dump({"a.weight": _Payload(marker)}, f)
    assert "graph.safetensors" in one_line_error(directory)
    assert not os.path.exists(marker)


def test_torch_save_weights_are_refused(artifact):
    directory, _ = artifact
    torch.save({"anything": torch.zeros(2)}, os.path.join(directory, "graph.safetensors"))
    assert "graph.safetensors could not be read" in one_line_error(directory)


def test_loading_never_calls_pickle_or_torch_load(artifact, monkeypatch):
    directory, expected = artifact

    def forbidden(*args, **kwargs):
        raise AssertionError("loading an artifact must not unpickle")

    monkeypatch.setattr(pickle, "loads", forbidden)
    monkeypatch.setattr(pickle, "load", forbidden)
    monkeypatch.setattr(pickle, "Unpickler", forbidden)
    monkeypatch.setattr(torch, "load", forbidden)
    loaded = fxopt.load(directory)
    torch.testing.assert_close(loaded(*INPUTS), expected)


def test_artifact_directory_holds_no_pickles(artifact):
    directory, _ = artifact
    for name in os.listdir(directory):
        head = open(os.path.join(directory, name), "rb").read(2)
        assert head != b"\x80\x04" and head != b"PK", f"{name} looks like a pickle / torch.save archive"
