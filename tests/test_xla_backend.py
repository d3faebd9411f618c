"""The xla backend (backends/xla/backend.py, artifact.py): compile, run, save, load (in process and in a fresh
process without model code), the jit cache, dynamic/static export, unsupported ops, the CLI.

Models: the four zoo models (small; ocr as its conformer encoder, see docs/backends/xla.md), a GPT-2 from
``transformers`` (2 layers, hidden 32, random weights), conftest's TinyEncoder, and a ranking-style model that
bucketizes its dense features (``aten.bucketize`` has no lowering)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

import fxopt
from fxopt.backends import base
from fxopt.errors import InputError
from fxopt.ir.numerics import assert_outputs_close

from conftest import captured

pytest.importorskip("jax")

from fxopt.backends.xla.backend import XlaStage, xla_stages  # noqa: E402

pytestmark = pytest.mark.numerics   # cross-runtime numerics: CI re-runs these on another vector path

PIPELINE = "canonicalize,fold-constants,dedupe,moe,dce,split{target=xla,policy=support}"


@pytest.fixture(scope="module")
def zoo_runs(tmp_path_factory):
    """Per zoo model: (model, inputs, compiled, saved artifact path, compiled's outputs, program)."""
    out = {}
    root = tmp_path_factory.mktemp("xla_zoo")
    for name in ("ranking", "resnet50", "moderation", "ocr"):
        model, inputs, program = captured("ocr_encoder" if name == "ocr" else name)
        program = fxopt.optimize(program, PIPELINE, verify=False)
        compiled = fxopt.compile(program, "xla")
        with torch.no_grad():
            got = compiled(*inputs)  # XLA-compiles for cpu before saving, as `fxopt run` does
        out[name] = (model, inputs, compiled, compiled.save(root / name), got, program)
    return out


def _close(got, want, program):
    """The shared cross-runtime rule (fxopt.ir.numerics), with the rounding depths of ``program``'s graph."""
    assert_outputs_close(got, want, program)


@pytest.mark.parametrize("name", ["ranking", "resnet50", "moderation", "ocr"])
def test_zoo_model_matches_pytorch(zoo_runs, name):
    model, inputs, compiled, _, got, program = zoo_runs[name]
    assert xla_stages(compiled), "at least one partition runs on XLA"
    with torch.no_grad():
        _close(got, model(*inputs), program)


@pytest.mark.parametrize("name", ["ranking", "resnet50", "moderation", "ocr"])
def test_zoo_artifact_loads_and_matches(zoo_runs, name):
    model, inputs, _, path, _, program = zoo_runs[name]
    loaded = fxopt.load(path)
    assert all(s.module is None for s in xla_stages(loaded)), "loaded XLA stages hold no FX graph"
    with torch.no_grad():
        _close(loaded(*inputs), model(*inputs), program)


def test_artifact_files_and_steps(zoo_runs):
    path = zoo_runs["ranking"][3]
    manifest = json.loads(open(os.path.join(path, "manifest.json")).read())
    xla = [p for p in manifest["partitions"] if p["runtime"] == "jax-xla"]
    assert xla and {p["runtime"] for p in manifest["partitions"]} >= {"jax-xla"}
    for part in xla:
        name = part["name"]
        assert part["files"] == [f"{name}.jaxexport", f"{name}.stablehlo.mlir", f"{name}.safetensors"]
        assert open(os.path.join(path, f"{name}.stablehlo.mlir")).read().lstrip().startswith(("module", "#loc"))
        assert "func.func public @main" in open(os.path.join(path, f"{name}.stablehlo.mlir")).read()
        assert part["platforms"] == ["cpu", "cuda", "tpu"]
        assert any(s.startswith("XLA-compiled for cpu") for s in part["steps"]["done_here"])
        assert "jax.export serialized (platforms cpu, cuda, tpu)" in part["steps"]["done_here"]
        assert any("cuda/tpu" in s for s in part["steps"]["left_for_target"])
    assert manifest["backend_options"] == {"platforms": "cpu;cuda;tpu", "dynamic": True}


def test_weights_are_arguments_not_constants(zoo_runs):
    """The exported module takes the weights as parameters: the .mlir holds no large dense constants, and
    the safetensors file holds every weight byte."""
    from safetensors.numpy import load_file

    path = zoo_runs["resnet50"][3]
    params = load_file(os.path.join(path, "xla_0.safetensors"))
    weight_bytes = sum(a.nbytes for a in params.values())
    assert weight_bytes > 100_000
    assert os.path.getsize(os.path.join(path, "xla_0.jaxexport")) < weight_bytes / 2


def test_artifacts_run_in_a_fresh_process_without_model_code(zoo_runs, tmp_path):
    from safetensors.torch import load_file, save_file

    dirs = {}
    for name, (model, inputs, _, path, _, _) in zoo_runs.items():
        save_file({f"in{i}": t.contiguous() for i, t in enumerate(inputs)}, str(tmp_path / f"{name}_in.st"))
        dirs[name] = str(path)
    code = (
        "import sys, json, fxopt\n"
        "before = set(sys.modules)\n"
        "from safetensors.torch import load_file, save_file\n"
        "dirs = json.loads(sys.argv[1]); tmp = sys.argv[2]\n"
        "for name, d in dirs.items():\n"
        "    ins = load_file(f'{tmp}/{name}_in.st'); args = [ins[f'in{i}'] for i in range(len(ins))]\n"
        "    out = fxopt.load(d)(*args)\n"
        "    out = out if isinstance(out, (tuple, list)) else (out,)\n"
        "    save_file({f'out{i}': t.contiguous() for i, t in enumerate(out)}, f'{tmp}/{name}_out.st')\n"
        "new = {m for m in set(sys.modules) - before if m.startswith(('fxopt.zoo', 'fxopt.ir.capture'))}\n"
        "assert not new, f'loading imported model/capture code: {new}'\n")
    subprocess.run([sys.executable, "-c", code, json.dumps(dirs), str(tmp_path)], check=True, timeout=300)
    for name, (model, inputs, _, _, _, program) in zoo_runs.items():
        out = load_file(str(tmp_path / f"{name}_out.st"))
        with torch.no_grad():
            want = model(*inputs)
        want = want if isinstance(want, (tuple, list)) else (want,)
        _close([out[f"out{i}"] for i in range(len(want))], list(want), program)


def test_gpt2_from_transformers_matches():
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=100, n_positions=64,
                                     attn_implementation="eager")

    class Gpt2(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.m = transformers.GPT2Model(config).eval()

        def forward(self, ids):
            return self.m(input_ids=ids, use_cache=False).last_hidden_state

    model = Gpt2().eval()
    ids = torch.randint(0, 100, (2, 8))
    program = fxopt.capture(model, (ids,))
    compiled = fxopt.compile(program, "xla")
    assert [s.runtime for s in compiled.stages] == ["jax-xla"]
    with torch.no_grad():
        _close(compiled(ids), model(ids), program)


def _dynamic_encoder(encoder):
    model, (ids,) = encoder
    batch = torch.export.Dim("batch", min=2, max=64)
    return model, ids, fxopt.capture(model, (ids,), dynamic_shapes=({0: batch},))


def test_jit_compiles_once_per_shape_signature(encoder):
    model, ids, program = _dynamic_encoder(encoder)
    compiled = fxopt.compile(program, "xla")
    (stage,) = xla_stages(compiled)
    compiled(ids)
    compiled(ids)
    assert stage.compile_count == 1
    bigger = torch.randint(0, 100, (5, 8))
    with torch.no_grad():
        _close(compiled(bigger), model(bigger), program)
    assert stage.compile_count == 2
    compiled(bigger)
    assert stage.compile_count == 2


def test_dynamic_dims_export_symbolically_and_reload_at_other_batch(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.GELU(), torch.nn.LayerNorm(16),
                                torch.nn.Linear(16, 4), torch.nn.Softmax(-1)).eval()
    x = torch.randn(3, 8)
    program = fxopt.capture(model, (x,), dynamic_shapes=({0: torch.export.Dim("batch", min=2, max=64)},))
    path = fxopt.compile(program, "xla").save(tmp_path / "dyn")
    entry = json.loads(open(os.path.join(path, "manifest.json")).read())["partitions"][0]
    (symbol,) = entry["dynamic_dims"]
    assert entry["static_shapes"] is False and entry["input_avals"] == [f"float32[{symbol}, 8]"]
    loaded = fxopt.load(path)
    other = torch.randn(9, 8)
    with torch.no_grad():
        _close(loaded(other), model(other), program)


class ScalarWeight(torch.nn.Module):
    """A 0-d weight (a learned temperature), as fold-constants also makes of scalar subexpressions."""

    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(4, 4)
        self.temperature = torch.nn.Parameter(torch.tensor(0.5))

    def forward(self, x):
        return (self.lin(x) / self.temperature).softmax(-1)


def test_a_zero_dim_weight_is_saved_zero_dim_and_the_artifact_reloads(tmp_path):
    model = ScalarWeight().eval()
    x = torch.randn(3, 4)
    program = fxopt.capture(model, (x,))
    path = fxopt.compile(program, "xla").save(tmp_path / "scalar")
    from safetensors.numpy import load_file
    (weights_file,) = [f for f in os.listdir(path) if f.endswith(".safetensors")]
    weights = load_file(os.path.join(path, weights_file))
    assert sorted(w.ndim for w in weights.values()) == [0, 1, 2]
    with torch.no_grad():
        _close(fxopt.load(path)(x), model(x), program)


def test_static_export_rejects_another_shape_in_one_line(encoder, tmp_path):
    model, ids, program = _dynamic_encoder(encoder)
    path = fxopt.compile(program, "xla{dynamic=false,platforms=cpu}").save(tmp_path / "static")
    entry = json.loads(open(os.path.join(path, "manifest.json")).read())["partitions"][0]
    assert entry["static_shapes"] is True and entry["platforms"] == ["cpu"]
    loaded = fxopt.load(path)
    with torch.no_grad():
        _close(loaded(ids), model(ids), program)
    with pytest.raises(InputError, match="exported with the static shape") as info:
        loaded(torch.randint(0, 100, (3, 8)))
    assert "\n" not in str(info.value)


class Bucketized(torch.nn.Module):
    """Ranking-style: dense features bucketized (aten.bucketize, no XLA lowering) into an embedding."""

    def __init__(self):
        super().__init__()
        self.register_buffer("edges", torch.linspace(-2, 2, 15))
        self.emb = torch.nn.Embedding(16, 8)
        self.mlp = torch.nn.Sequential(torch.nn.Linear(4 * 8 + 4, 16), torch.nn.ReLU(), torch.nn.Linear(16, 1))

    def forward(self, dense):
        buckets = torch.bucketize(dense, self.edges)
        return self.mlp(torch.cat([self.emb(buckets).flatten(1), dense], 1))


def _bucketized():
    torch.manual_seed(0)
    model = Bucketized().eval()
    x = torch.randn(6, 4)
    return model, x, fxopt.capture(model, (x,))


def test_unsupported_op_without_split_is_a_one_line_error():
    _, _, program = _bucketized()
    with pytest.raises(InputError) as info:
        fxopt.compile(program, "xla")
    message = str(info.value)
    assert "bucketize" in message and "split{target=xla" in message and "\n" not in message
    assert "test_xla_backend.py" in message  # the model's source line


def test_unsupported_op_with_split_runs_on_cpu():
    model, x, program = _bucketized()
    split = fxopt.optimize(program, "split{target=xla,policy=support}", verify=False)
    compiled = fxopt.compile(split, "xla")
    runtimes = [s.runtime for s in compiled.stages]
    assert "pytorch-eager" in runtimes and "jax-xla" in runtimes
    cpu_ops = {str(n.target) for s in compiled.stages if s.runtime == "pytorch-eager"
               for n in s.module.graph.nodes if n.op == "call_function"}
    assert any("bucketize" in op for op in cpu_ops)
    with torch.no_grad():
        _close(compiled(x), model(x), split)


def test_backend_options_are_checked():
    assert base.get_backend("xla{platforms=cpu;cuda}").platform_tuple() == ("cpu", "cuda")
    with pytest.raises(InputError, match="platforms must be"):
        base.get_backend("xla{platforms=gpu}")


def test_cli_run_zoo_ranking_with_xla(tmp_path, capsys):
    from fxopt.tools.cli import main

    out = tmp_path / "ranking"
    assert main(["run", "zoo:ranking", "--backend", "xla", "--passes", PIPELINE, "--no-verify",
                 "-o", str(out)]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    files = [f for p in manifest["partitions"] for f in p["files"]]
    assert any(f.endswith(".jaxexport") for f in files)
    assert all((out / f).is_file() for f in files)
    assert "jax.export serialized" in capsys.readouterr().out


def test_routed_experts_with_data_dependent_sizes_run_split_across_cpu_and_xla():
    """Top-1 routing (torch.where → sizes only known at run time, unbounded): split keeps the data-dependent
    ops on the CPU and costs them at no bound instead of failing; the XLA partitions take the rest and are
    re-jitted per routed size; outputs match on fresh inputs too."""

    class Routed(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.gate = torch.nn.Linear(8, 4)
            self.experts = torch.nn.ModuleList(
                torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 8))
                for _ in range(4))

        def forward(self, x):
            w, idx = torch.topk(torch.softmax(self.gate(x), -1), 1)
            out = x.new_zeros(x.shape)
            for e, expert in enumerate(self.experts):
                tok, slot = torch.where(idx == e)
                out = out.index_add(0, tok, expert(x[tok]) * w[tok, slot].unsqueeze(-1))
            return out

    torch.manual_seed(0)
    model, x = Routed().eval(), torch.randn(32, 8)
    program = fxopt.optimize(fxopt.capture(model, (x,)), "moe," + PIPELINE)
    compiled = fxopt.compile(program, "xla")
    assert {s.device for s in compiled.stages} == {"cpu", "xla"}
    for inputs in (x, torch.randn(32, 8)):
        _close(compiled(inputs), model(inputs), program)


def test_cpu_tensors_on_a_host_with_an_accelerator_are_said_to_run_on_the_cpu(monkeypatch, caplog):
    import jax

    model = torch.nn.Linear(4, 3).eval()
    x = torch.randn(2, 4)
    compiled = fxopt.compile(fxopt.capture(model, (x,)), "xla")
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")   # what jax says on a GPU host
    with caplog.at_level("WARNING", logger="fxopt.xla"):
        got = compiled(x)
        compiled(x)
    lines = [r.getMessage() for r in caplog.records if "runs on the CPU" in r.getMessage()]
    assert len(lines) == 1 and "JAX device is gpu" in lines[0]   # once per partition and place
    torch.testing.assert_close(got, model(x))


def test_cpu_tensors_on_a_cpu_host_say_nothing(caplog):
    model = torch.nn.Linear(4, 3).eval()
    x = torch.randn(2, 4)
    compiled = fxopt.compile(fxopt.capture(model, (x,)), "xla")
    with caplog.at_level("WARNING", logger="fxopt.xla"):
        compiled(x)
    assert not [r for r in caplog.records if "runs on the CPU" in r.getMessage()]
