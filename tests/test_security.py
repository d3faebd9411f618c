"""Hostile inputs (issue #18): an artifact, a .pt2 or an output path crafted by an attacker is refused with one
line and no side effect — a sentinel file is neither created nor changed — on every backend.

The threat model these tests pin is docs/reliability.md, "Threat model"."""
from __future__ import annotations

import io
import json
import os
import shutil
import stat
import sys
import zipfile

import pytest
import torch

import fxopt
from fxopt.errors import InputError
from fxopt.ir import loadable, serialize

BACKENDS = ["reference", "xla", "tensorrt", "neuron"]
SENTINEL_BYTES = b"#!/bin/sh\necho the user's own script\n"


class Bucketized(torch.nn.Module):
    """bucketize has no lowering on any accelerator target, so split keeps a CPU partition everywhere."""

    def __init__(self):
        super().__init__()
        self.register_buffer("edges", torch.linspace(-2, 2, 15))
        self.emb = torch.nn.Embedding(16, 8)
        self.fc = torch.nn.Linear(4 * 8 + 4, 3)

    def forward(self, dense):
        buckets = torch.bucketize(dense, self.edges)
        return self.fc(torch.cat([self.emb(buckets).flatten(1), dense], 1)).relu()


INPUTS = (torch.randn(6, 4, generator=torch.Generator().manual_seed(3)),)


def _available(backend: str) -> bool:
    try:
        if backend == "xla":
            import jax  # noqa: F401
        if backend == "tensorrt":
            import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    """backend -> (saved artifact directory, expected output); built once, never edited."""
    torch.manual_seed(0)
    model = Bucketized().eval()
    program = fxopt.capture(model, INPUTS)
    out = {}
    root = tmp_path_factory.mktemp("pristine")
    for backend in BACKENDS:
        if not _available(backend):
            continue
        prog = program if backend == "reference" else fxopt.optimize(
            program, f"split{{target={backend},policy=support}}", verify=False)
        out[backend] = (fxopt.compile(prog, backend).save(str(root / backend)), model(*INPUTS).detach())
    return out


@pytest.fixture(params=BACKENDS)
def artifact(request, pristine, tmp_path):
    """(backend, this test's own copy of the artifact, expected output)."""
    if request.param not in pristine:
        pytest.skip(f"{request.param} needs an optional dependency")
    path, expected = pristine[request.param]
    return request.param, shutil.copytree(path, str(tmp_path / "art")), expected


@pytest.fixture
def sentinel(tmp_path):
    """A file of the user's that a hostile artifact would like to overwrite or read."""
    path = tmp_path / "user_script.sh"
    path.write_bytes(SENTINEL_BYTES)
    return str(path)


def assert_untouched(path: str) -> None:
    with open(path, "rb") as f:
        assert f.read() == SENTINEL_BYTES, "the sentinel file was changed"


def graph_files(directory: str) -> list[str]:
    """Every FX graph JSON of an artifact (CPU partitions, the reference graph, neuron's re-trace graphs)."""
    return sorted(os.path.join(directory, f) for f in os.listdir(directory)
                  if f.endswith(".json") and f not in ("manifest.json", "trace.json", "timings.json"))


def edit_json(path: str, fn) -> None:
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    fn(data)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f)


def inject(directory: str, node: dict) -> None:
    """Insert ``node`` before the output of every graph of the artifact."""
    def add(doc):
        nodes = doc["graph"]["nodes"]
        nodes.insert(len(nodes) - 1, dict(node))

    for path in graph_files(directory):
        edit_json(path, add)


def refused(directory: str, match: str) -> str:
    with pytest.raises(InputError) as info:
        fxopt.load(directory)
    message = str(info.value)
    assert "\n" not in message and match in message, message
    return message


def _input_name(directory: str) -> str:
    with open(graph_files(directory)[0], encoding="utf-8") as f:
        doc = json.load(f)
    return next(n["name"] for n in doc["graph"]["nodes"] if n["op"] == "placeholder")


# ------------------------------------------------------------------------------------------ hostile graphs
def test_from_file_that_writes_a_file_is_refused(artifact, sentinel):
    """The exploit: from_file(path, shared=True) maps the user's file; writing into that tensor writes it."""
    _, directory, _ = artifact
    inject(directory, {"name": "evil", "op": "call_function", "target": "aten::from_file.default",
                       "target_kind": "op", "args": [sentinel, True, len(SENTINEL_BYTES)],
                       "kwargs": {"dtype": {"dtype": "uint8"}}})
    refused(directory, "aten::from_file.default")
    assert_untouched(sentinel)


def test_from_file_that_reads_a_file_is_refused(artifact, sentinel):
    _, directory, _ = artifact
    inject(directory, {"name": "leak", "op": "call_function", "target": "aten::from_file.default",
                       "target_kind": "op", "args": [sentinel, False, len(SENTINEL_BYTES)], "kwargs": {}})
    assert "maps or reads the file" in refused(directory, "from_file")


@pytest.mark.parametrize("target, why", [
    ("aten::copy_.default", "writes its argument 'self'"),
    ("aten::add.out", "writes its argument 'out'"),
    ("aten::fill_.Scalar", "writes its argument 'self'"),
    ("aten::_copy_from.default", "writes into its 'dst'"),
])
def test_an_op_that_writes_its_arguments_is_refused(artifact, target, why):
    """A mutating op would write the user's input tensor (or a weight) while the model returns normal outputs."""
    _, directory, _ = artifact
    x = _input_name(directory)
    inject(directory, {"name": "mutate", "op": "call_function", "target": target, "target_kind": "op",
                       "args": [{"node": x}, {"node": x}], "kwargs": {}})
    refused(directory, why)


def test_a_tensor_method_call_is_refused(artifact):
    _, directory, _ = artifact
    x = _input_name(directory)
    inject(directory, {"name": "mutate", "op": "call_method", "target": "add_", "args": [{"node": x}, 1.0],
                       "kwargs": {}})
    refused(directory, "Tensor method 'add_'")


@pytest.mark.parametrize("target", ["aten::save.default", "aten::manual_seed.default", "aten::_print.default",
                                    "os::system.default"])
def test_side_effect_and_foreign_ops_are_refused(artifact, target):
    _, directory, _ = artifact
    inject(directory, {"name": "effect", "op": "call_function", "target": target, "target_kind": "op",
                       "args": ["x"], "kwargs": {}})
    with pytest.raises(InputError) as info:
        fxopt.load(directory)
    assert "\n" not in str(info.value) and target in str(info.value)


def test_the_unmodified_artifact_still_loads_and_runs(artifact):
    _, directory, expected = artifact
    torch.testing.assert_close(fxopt.load(directory)(*INPUTS), expected, rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------------------------------------ files
def test_symlinked_weights_are_refused(artifact, tmp_path):
    _, directory, _ = artifact
    weights = sorted(f for f in os.listdir(directory) if f.endswith(".safetensors"))[0]
    outside = tmp_path / "outside.safetensors"
    shutil.move(os.path.join(directory, weights), outside)
    os.symlink(outside, os.path.join(directory, weights))
    refused(directory, "symbolic link")


def test_symlinked_manifest_is_refused(artifact, tmp_path):
    _, directory, _ = artifact
    shutil.move(os.path.join(directory, "manifest.json"), tmp_path / "m.json")
    os.symlink(tmp_path / "m.json", os.path.join(directory, "manifest.json"))
    refused(directory, "symbolic link")


def test_onnx_external_data_outside_the_artifact_is_refused(pristine, tmp_path, sentinel):
    if "tensorrt" not in pristine:
        pytest.skip("needs onnx")
    import onnx

    directory = shutil.copytree(pristine["tensorrt"][0], str(tmp_path / "art"))
    (onnx_file,) = [f for f in os.listdir(directory) if f.endswith(".onnx") and ".fp16" not in f]
    model = onnx.load(os.path.join(directory, onnx_file))
    init = model.graph.initializer[0]
    init.ClearField("raw_data")
    del init.float_data[:]
    init.data_location = onnx.TensorProto.EXTERNAL
    for key, value in (("location", os.path.relpath(sentinel, directory)), ("offset", "0"), ("length", "4")):
        entry = init.external_data.add()
        entry.key, entry.value = key, value
    onnx.save(model, os.path.join(directory, onnx_file))
    refused(directory, "ONNX external data file")


def test_xla_custom_call_outside_jax_stable_targets_is_refused(pristine, tmp_path):
    """A module calling an arbitrary XLA custom call (code registered in the loading process under that name)
    is refused at load."""
    if "xla" not in pristine:
        pytest.skip("needs jax")
    import jax
    from jax import export

    directory = shutil.copytree(pristine["xla"][0], str(tmp_path / "art"))
    (stem,) = [f[:-len(".jaxexport")] for f in os.listdir(directory) if f.endswith(".jaxexport")]
    with open(os.path.join(directory, f"{stem}.jaxexport"), "rb") as f:
        good = export.deserialize(bytearray(f.read()))

    def hostile(*args):
        return tuple(jax.ffi.ffi_call("evil_target", jax.ShapeDtypeStruct(o.shape, o.dtype))(args[-1])
                     for o in good.out_avals)

    avals = [jax.ShapeDtypeStruct(a.shape, a.dtype) for a in good.in_avals]
    evil = export.export(jax.jit(hostile),
                         disabled_checks=[export.DisabledSafetyCheck.custom_call("evil_target")])(*avals)
    with open(os.path.join(directory, f"{stem}.jaxexport"), "wb") as f:
        f.write(evil.serialize())
    refused(directory, "custom call 'evil_target'")


# ------------------------------------------------------------------------------------------ loading sizes
def _neuron_artifact_with_trace_shape(pristine, tmp_path, shape) -> str:
    """A copy of the neuron artifact whose recorded trace shapes (first tensor input of each) are ``shape``."""
    if "neuron" not in pristine:
        pytest.skip("no neuron artifact")
    directory = shutil.copytree(pristine["neuron"][0], str(tmp_path / "art"))

    def set_shape(manifest):
        for part in manifest["partitions"]:
            for trace in part.get("traces", []):
                next(s for s in trace["inputs"] if "shape" in s)["shape"] = shape

    edit_json(os.path.join(directory, "manifest.json"), set_shape)
    return directory


def test_huge_neuron_trace_shapes_are_refused_before_allocating(pristine, tmp_path):
    refused(_neuron_artifact_with_trace_shape(pristine, tmp_path, [60000, 60000]), "more than fxopt allocates")


@pytest.mark.parametrize("bad", [[-1, 4], ["4", 4], [True, 4], "60000"])
def test_malformed_neuron_trace_shapes_are_one_line_errors(pristine, tmp_path, bad):
    refused(_neuron_artifact_with_trace_shape(pristine, tmp_path, bad), "is not a list of sizes")


def test_neuron_load_traces_nothing_until_the_first_call(pristine, monkeypatch):
    if "neuron" not in pristine:
        pytest.skip("no neuron artifact")
    from fxopt.backends import neuron

    calls = []
    real = neuron._trace
    monkeypatch.setattr(neuron, "_trace", lambda *a, **k: calls.append(1) or real(*a, **k))
    loaded = fxopt.load(pristine["neuron"][0])
    assert calls == []
    torch.testing.assert_close(loaded(*INPUTS), pristine["neuron"][1], rtol=1e-4, atol=1e-5)
    assert calls


# ------------------------------------------------------------------------------------------ manifest types
@pytest.mark.parametrize("field, value, match", [
    ("version", "1", "version is a string, not an integer"),
    ("version", 0, "version 0 is not a version fxopt ever wrote"),
    ("version", -7, "version -7 is not a version fxopt ever wrote"),
    ("version", True, "version is a boolean"),
    ("version", 99, "newer than this fxopt reads"),
    ("backend", ["reference"], "field 'backend' is a list, not a string"),
    ("backend", "os.system", "unknown backend 'os.system'"),
    ("inputs", "x", "field 'inputs' is a string, not a list"),
    ("inputs", [{"name": "x", "shape": [1e300], "dtype": "float32"}], "not a size or a symbol"),
    ("outputs", [7], "'outputs[0]' is an integer, not an object"),
    ("partitions", {"a": 1}, "'partitions' is an object, not a list"),
    ("in_spec", 5, "'in_spec' is an integer"),
    ("passes", [1], "'passes' holds an integer"),
])
def test_bad_manifest_types_are_one_line_errors(artifact, field, value, match):
    _, directory, _ = artifact
    edit_json(os.path.join(directory, "manifest.json"), lambda m: m.__setitem__(field, value))
    refused(directory, match)


@pytest.mark.parametrize("depth", [serialize.MAX_JSON_DEPTH + 5, 100_000])
def test_deeply_nested_json_is_a_one_line_error(artifact, depth):
    _, directory, _ = artifact
    with open(os.path.join(directory, "manifest.json"), "w") as f:
        f.write("[" * depth + "]" * depth)
    refused(directory, "nests deeper than")


def test_a_nul_byte_in_a_partition_file_name_is_refused(artifact):
    _, directory, _ = artifact
    edit_json(os.path.join(directory, "manifest.json"),
              lambda m: m["partitions"][0]["files"].append("graph\u0000.json"))
    with pytest.raises(InputError) as info:
        fxopt.load(directory)
    assert "\n" not in str(info.value)


# ------------------------------------------------------------------------------------------ .pt2
class _Payload:
    """Unpickling this creates a marker file (what an os.system payload would do, without the shell)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _hostile_pt2(tmp_path, marker: str) -> str:
    """A valid torch.export .pt2 whose sample inputs are replaced by a pickle that creates ``marker``."""
    good = str(tmp_path / "good.pt2")
    torch.export.save(torch.export.export(torch.nn.Linear(4, 2).eval(), (torch.randn(3, 4),)), good)
    payload = io.BytesIO()
    torch.save(_Payload(marker), payload)
    evil = str(tmp_path / "evil.pt2")
    with zipfile.ZipFile(good) as zin, zipfile.ZipFile(evil, "w") as zout:
        for info in zin.infolist():
            data = zin.read(info.filename)
            zout.writestr(info, payload.getvalue() if "sample_inputs/" in info.filename else data)
    return evil


def test_pickled_pt2_is_refused_without_running_it(tmp_path):
    marker = str(tmp_path / "PWNED")
    evil = _hostile_pt2(tmp_path, marker)
    with pytest.raises(InputError) as info:
        fxopt.capture(evil)
    message = str(info.value)
    assert "\n" not in message and "references builtins.open" in message.replace("io.open", "builtins.open")
    assert "--trust-pickle" in message
    assert not os.path.exists(marker)


def test_pickled_pt2_is_refused_by_the_cli_with_exit_2(tmp_path, capsys):
    from fxopt.tools.cli import main

    marker = str(tmp_path / "PWNED")
    evil = _hostile_pt2(tmp_path, marker)
    assert main(["inspect", evil]) == 2
    assert main(["run", evil, "-o", str(tmp_path / "out")]) == 2
    assert not os.path.exists(marker) and not os.path.exists(tmp_path / "out")


def test_trust_pickle_is_the_explicit_opt_in(tmp_path):
    """With trust_pickle the file is read as torch reads it: the payload runs (the documented risk)."""
    marker = str(tmp_path / "PWNED")
    with pytest.raises(InputError):
        fxopt.capture(_hostile_pt2(tmp_path, marker), trust_pickle=True)   # not a valid example input tuple
    assert os.path.exists(marker)


def test_a_clean_pt2_still_captures(tmp_path):
    path = str(tmp_path / "clean.pt2")
    model = torch.nn.Linear(4, 2).eval()
    x = torch.randn(3, 4)
    torch.export.save(torch.export.export(model, (x,)), path)
    torch.testing.assert_close(fxopt.capture(path)(x), model(x))


_EVIL_LIB = torch.library.Library("fxopt_test_evil", "DEF")
_EVIL_LIB.define("touch(Tensor x, str path) -> Tensor")


def _touch(x, path):
    with open(path, "wb") as f:
        f.write(b"pwned")
    return x.clone()


_EVIL_LIB.impl("touch", _touch, "CompositeExplicitAutograd")
torch.library.register_fake("fxopt_test_evil::touch", lambda x, path: torch.empty_like(x), lib=_EVIL_LIB)


def test_a_pt2_graph_calling_a_foreign_op_is_refused_before_it_runs(tmp_path, sentinel):
    """A .pt2 whose graph calls another library's operator (here one that writes a file when it runs) is
    refused before capture runs anything."""
    class Touches(torch.nn.Module):
        def forward(self, x):
            return torch.ops.fxopt_test_evil.touch(x, sentinel) + 1

    path = str(tmp_path / "touches.pt2")
    torch.export.save(torch.export.export(Touches(), (torch.zeros(2),)), path)
    assert_untouched(sentinel)
    with pytest.raises(InputError, match="fxopt_test_evil::touch.default', which is an operator of the "
                                         "'fxopt_test_evil' library"):
        fxopt.capture(path)
    assert_untouched(sentinel)


# ------------------------------------------------------------------------------------------ allowlist table
@pytest.mark.parametrize("op, reason", [
    (torch.ops.aten.from_file.default, "maps or reads the file"),
    (torch.ops.aten._print.default, "standard output"),
    (torch.ops.aten.copy_.default, "writes its argument 'self'"),
    (torch.ops.aten.add.out, "writes its argument 'out'"),
    (torch.ops.aten.index_put_.default, "writes its argument 'self'"),
    (torch.ops.aten._copy_from.default, "writes into its 'dst'"),
    (torch.ops.aten.save.default, "TorchScript builtin"),
    (torch.ops.aten.manual_seed.default, "TorchScript builtin"),
    (torch.ops.aten.warn.default, "TorchScript builtin"),
    (torch.ops.aten._cufft_clear_plan_cache.default, "process-wide cuFFT state"),
    (torch.ops.aten.pin_memory.default, "page-locked"),
    (torch.ops.aten._backward.default, "autograd"),
])
def test_refused_operator_table(op, reason):
    why = loadable.refusal(op)
    assert why is not None and reason in why, why


@pytest.mark.parametrize("op", [torch.ops.aten.addmm.default, torch.ops.aten.convolution.default,
                                torch.ops.aten._native_batch_norm_legit_no_training.default,
                                torch.ops.aten.index_put.default, torch.ops.aten._assert_scalar.default,
                                torch.ops.aten.rand.default, torch.ops.fxopt.grouped_mm.default])
def test_functional_operators_are_allowed(op):
    assert loadable.refusal(op) is None


def test_every_op_of_the_zoo_models_is_allowed():
    from conftest import captured

    for name in ("ranking", "resnet50", "moderation", "ocr"):
        program = captured(name)[2]
        for module in program.graph_module.modules():
            if isinstance(module, torch.fx.GraphModule):
                for node in module.graph.nodes:
                    if isinstance(node.target, torch._ops.OpOverload):
                        assert loadable.refusal(node.target) is None, (name, node.target)


def test_saving_refuses_what_loading_would_refuse(tmp_path):
    g = torch.fx.Graph()
    x = g.placeholder("x")
    g.output((g.call_function(torch.ops.aten.copy_.default, (x, x)),))
    with pytest.raises(InputError, match="does not save what it would refuse to load"):
        serialize.save_graph_module(torch.fx.GraphModule(torch.nn.Module(), g), tmp_path / "g")


# ------------------------------------------------------------------------------------------ -o
@pytest.fixture
def web_app(tmp_path):
    """A user's web app: index.html, src/app.js and its own (web-app) manifest.json."""
    app = tmp_path / "app"
    (app / "src").mkdir(parents=True)
    (app / "index.html").write_text("<html></html>")
    (app / "src" / "app.js").write_text("console.log(1)")
    (app / "manifest.json").write_text(json.dumps({"name": "My App", "start_url": "/"}))
    return app


def _tree(path) -> dict:
    return {os.path.relpath(os.path.join(d, f), path): open(os.path.join(d, f), "rb").read()
            for d, _, files in os.walk(path) for f in files}


def test_output_over_a_users_directory_with_its_own_manifest_is_refused(web_app):
    before = _tree(web_app)
    compiled = fxopt.compile(fxopt.capture(torch.nn.Linear(2, 2).eval(), (torch.randn(1, 2),)))
    with pytest.raises(InputError, match="is not an fxopt artifact .*fxopt replaces only its own output"):
        compiled.save(str(web_app))
    assert _tree(web_app) == before


def test_cli_refuses_a_bad_output_location_before_capturing(web_app, tmp_path, capsys, monkeypatch):
    from fxopt.tools import cli

    monkeypatch.setattr(cli, "capture_model", lambda *a, **k: pytest.fail("captured before checking -o"))
    link = tmp_path / "link"
    os.symlink(tmp_path / "somewhere", link)
    readonly = tmp_path / "ro"
    readonly.mkdir()
    os.chmod(readonly, stat.S_IRUSR | stat.S_IXUSR)
    try:
        for out, why in ((web_app, "is not an fxopt artifact"), (link, "is a symbolic link"),
                         (readonly / "art", "permission denied")):
            if why == "permission denied" and os.access(readonly, os.W_OK):
                continue   # running as a user that may write anywhere (root): the check cannot fail
            assert cli.main(["run", "zoo:ranking", "-o", str(out)]) == 2
            err = capsys.readouterr().err.strip()
            assert why in err and len(err.splitlines()) == 1, err
    finally:
        os.chmod(readonly, stat.S_IRWXU)


def test_replacing_an_artifact_leaves_no_temporary_folders(tmp_path):
    compiled = fxopt.compile(fxopt.capture(torch.nn.Linear(2, 2).eval(), (torch.randn(1, 2),)))
    target = str(tmp_path / "art")
    for _ in range(3):
        compiled.save(target)
    assert sorted(os.listdir(tmp_path)) == ["art"]
    fxopt.load(target)


def test_stale_temporary_folders_of_dead_writers_are_removed(tmp_path):
    compiled = fxopt.compile(fxopt.capture(torch.nn.Linear(2, 2).eval(), (torch.randn(1, 2),)))
    (tmp_path / ".fxopt-tmp-art-dead1").mkdir()
    (tmp_path / ".fxopt-tmp-art-dead1" / "half.json").write_text("{")
    compiled.save(str(tmp_path / "art"))
    assert sorted(os.listdir(tmp_path)) == ["art"]


def test_an_old_artifact_left_aside_by_a_cut_replace_is_put_back(tmp_path):
    """The two-rename fallback (no RENAME_EXCHANGE) killed between its renames leaves DIR aside; the next
    save restores it before replacing it."""
    compiled = fxopt.compile(fxopt.capture(torch.nn.Linear(2, 2).eval(), (torch.randn(1, 2),)))
    compiled.save(str(tmp_path / "art"))
    os.rename(tmp_path / "art", tmp_path / ".fxopt-old-art-x1")
    from fxopt.backends import artifact_dir, base

    artifact_dir.recover(str(tmp_path / "art"), base.artifact_problem)
    assert sorted(os.listdir(tmp_path)) == ["art"]
    fxopt.load(str(tmp_path / "art"))


def test_concurrent_saves_to_one_directory_both_succeed(tmp_path):
    """Two processes saving 20 times each to one directory: no error, and the result always loads."""
    import subprocess

    compiled = fxopt.compile(fxopt.capture(torch.nn.Linear(2, 2).eval(), (torch.randn(1, 2),)))
    source = compiled.save(str(tmp_path / "source"))
    code = ("import sys, fxopt\nc = fxopt.load(sys.argv[1])\n"
            "for _ in range(20):\n    c.save(sys.argv[2])\n")
    procs = [subprocess.Popen([sys.executable, "-c", code, source, str(tmp_path / "shared")],
                              stderr=subprocess.PIPE) for _ in range(2)]
    errors = [p.communicate(timeout=300)[1].decode() for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errors
    fxopt.load(str(tmp_path / "shared"))
    assert sorted(os.listdir(tmp_path)) == ["shared", "source"]


# ------------------------------------------------------------------------------------------ capture notes
def test_a_model_in_train_mode_is_captured_in_eval_mode_with_a_warning(tmp_path):
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Dropout(0.5)).train()
    with pytest.warns(UserWarning, match=r"is in train mode \(1: Dropout\); fxopt captured it in eval mode"):
        program = fxopt.capture(model, (torch.randn(2, 4),))
    assert model.training, "the user's model keeps its mode"
    path = fxopt.compile(program).save(str(tmp_path / "art"))
    with open(os.path.join(path, "manifest.json"), encoding="utf-8") as f:
        notes = json.load(f)["capture_notes"]
    assert len(notes) == 1 and "train mode" in notes[0]


def test_train_mode_without_mode_dependent_modules_is_not_worth_a_warning(recwarn):
    """A model of Linear and ReLU computes the same in both modes: nothing to tell."""
    program = fxopt.capture(torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.ReLU()).train(),
                            (torch.randn(2, 4),))
    assert program.notes == [] and not [w for w in recwarn if "train mode" in str(w.message)]


def test_source_paths_do_not_depend_on_the_checkout(tmp_path, monkeypatch):
    """The same model file in two checkouts gives byte-identical graph files."""
    source = ("import torch\n\nclass M(torch.nn.Module):\n    def __init__(self):\n        super().__init__()\n"
              "        self.fc = torch.nn.Linear(4, 2)\n\n    def forward(self, x):\n        return self.fc(x)\n\n"
              "    def example_inputs(self):\n        return (torch.ones(1, 4),)\n")
    files = []
    for checkout in ("one", "two"):
        root = tmp_path / checkout
        root.mkdir()
        (root / "model.py").write_text(source)
        monkeypatch.chdir(root)
        torch.manual_seed(0)
        path = fxopt.compile(fxopt.capture("model.py:M")).save(str(root / "art"))
        files.append(open(os.path.join(path, "graph.json"), "rb").read())
    assert files[0] == files[1]
    assert b"model.py:9" in files[0] and str(tmp_path).encode() not in files[0]
