"""Never silent: how much of a split program runs on the accelerator (fxopt.ir.partitions.accelerator_work),
the manifest's accelerator_ops / total_ops / accelerator_flops_fraction, the one warning line of an accelerator
artifact that does no (or too little) accelerator work (backends.partitioned.no_accelerator_work), and
``fxopt run --require-accelerator`` / ``--min-accelerator-fraction`` / ``fxopt inspect --placement``."""
from __future__ import annotations

import json
import os
import textwrap

import pytest
import torch

import fxopt
from fxopt.backends.partitioned import MIN_ACCELERATOR_FRACTION, no_accelerator_work
from fxopt.ir import serialize
from fxopt.ir.partitions import accelerator_work, partitions_region
from fxopt.ir.targets import is_bookkeeping
from fxopt.tools.cli import main

# neuron's default split places by throughput, which keeps these tiny models on the host: the CLI tests of
# accelerator work send every supported op to neuron instead
SUPPORT = "canonicalize,dce,split{target=neuron,policy=support}"

MODELS = textwrap.dedent('''
    import torch
    from torch import nn


    class Lin(nn.Module):
        """linear + relu: every op supported everywhere."""

        def __init__(self):
            super().__init__()
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(0)
                self.lin = nn.Linear(8, 4)

        def forward(self, x):
            return self.lin(x).relu()

        def example_inputs(self):
            return (torch.randn(2, 8, generator=torch.Generator().manual_seed(0)),)


    class Emb(nn.Module):
        """An embedding only: neuron's inf1 operator list has no aten::embedding, so nothing is left for it."""

        def __init__(self):
            super().__init__()
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(0)
                self.emb = nn.Embedding(10, 8)

        def forward(self, ids):
            return self.emb(ids)

        def example_inputs(self):
            return (torch.randint(0, 10, (2, 3), generator=torch.Generator().manual_seed(0)),)


    class Heavy(nn.Module):
        """A big cumsum (unsupported on neuron) beside three tiny supported ops: ~0.1% of the FLOPs on neuron."""

        def forward(self, x):
            return torch.cumsum(x, 1), x[:, :2].relu() * 2.0

        def example_inputs(self):
            return (torch.randn(16, 4096, generator=torch.Generator().manual_seed(0)),)
''')


class Lin(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(8, 4)

    def forward(self, x):
        return self.lin(x).relu()


class TopValues(torch.nn.Module):
    """max(dim) returns a tuple: its getitems are not ops."""

    def forward(self, x):
        values, _ = x.max(dim=1)
        return values * 2.0


class Heavy(torch.nn.Module):
    def forward(self, x):
        return torch.cumsum(x, 1), x[:, :2].relu() * 2.0


class Emb(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = torch.nn.Embedding(10, 8)

    def forward(self, ids):
        return self.emb(ids)


@pytest.fixture
def model_file(tmp_path):
    path = tmp_path / "aw_models.py"
    path.write_text(MODELS)
    return str(path)


def _split(model, inputs, spec):
    return fxopt.optimize(fxopt.capture(model.eval(), inputs), spec)


def _warnings(out: str) -> list[str]:
    return [line for line in out.splitlines() if line.startswith("warning: ")]


# ------------------------------------------------------------------------------------------ accelerator_work
def test_accelerator_work_counts_every_op_on_xla_under_policy_support():
    prog = _split(Lin(), (torch.randn(2, 8),), "split{target=xla,policy=support}")
    work = accelerator_work(prog)
    assert work["target"] == "xla"
    assert work["accelerator_ops"] == work["total_ops"] == 3      # permute, addmm, relu
    assert work["accelerator_flops_fraction"] == 1.0


def test_accelerator_work_leaves_out_getitems_and_bookkeeping():
    prog = _split(TopValues(), (torch.randn(3, 5),), "split{target=xla,policy=support}")
    calls = [n for n in prog.graph.nodes if n.op == "call_function"]
    assert any(is_bookkeeping(n) for n in calls)                   # the getitems are there ...
    work = accelerator_work(prog, is_bookkeeping=is_bookkeeping)
    assert work["total_ops"] == sum(not is_bookkeeping(n) for n in calls) == 2   # ... but only max, mul count
    assert accelerator_work(prog) == work                          # the default rule agrees with ir.targets'


def test_the_flops_fraction_counts_flops_not_ops():
    prog = _split(Heavy(), (torch.randn(16, 4096),), "split{target=neuron,policy=support}")
    work = accelerator_work(prog)
    assert (work["accelerator_ops"], work["total_ops"]) == (3, 4)  # slice, relu, mul on neuron; cumsum not
    on_neuron = sum(n.meta["cost"].flops for n in prog.graph.nodes
                    if n.op == "call_function" and n.meta["placement"] == "neuron")
    assert on_neuron > 0
    assert work["accelerator_flops_fraction"] == pytest.approx(on_neuron / work["flops"], rel=1e-4)
    assert work["accelerator_flops_fraction"] < MIN_ACCELERATOR_FRACTION


def test_a_graph_without_flops_has_fraction_zero():
    prog = _split(Emb(), (torch.randint(0, 10, (2, 3)),), "split{target=neuron}")
    work = accelerator_work(prog)
    assert work == {"target": "neuron", "accelerator_ops": 0, "total_ops": 1, "accelerator_flops_fraction": 0.0,
                    "flops": 0.0}


def test_without_split_every_op_runs_on_the_given_target():
    prog = fxopt.capture(Lin().eval(), (torch.randn(2, 8),))
    assert partitions_region(prog, required=False) is None
    assert accelerator_work(prog, "xla")["accelerator_ops"] == 3
    assert accelerator_work(prog)["accelerator_ops"] == 0 and accelerator_work(prog)["target"] is None


# ------------------------------------------------------------------------------------------ the warning line
def test_the_cost_policy_warning_names_the_objective_and_both_fixes():
    prog = _split(Lin(), (torch.randn(2, 8),), "split{target=tensorrt}")   # tiny: the CPU alone wins
    line = no_accelerator_work(prog, "tensorrt", [])
    assert line.startswith("no tensorrt partition:") and "\n" not in line
    assert "objective=latency" in line
    assert "split{target=tensorrt,objective=throughput}" in line and "policy=support" in line


def test_the_warning_names_the_unsupported_op_that_blocks():
    prog = _split(Emb(), (torch.randint(0, 10, (2, 3)),), "split{target=neuron}")
    line = no_accelerator_work(prog, "neuron", None)
    assert line.startswith("no neuron work:") and "\n" not in line
    assert "blocked by aten::embedding" in line and "xla" in line   # xla takes embeddings: named as a way out


def test_below_min_fraction_warns_and_names_the_op_with_the_most_flops():
    prog = _split(Heavy(), (torch.randn(16, 4096),), "split{target=neuron,policy=support}")
    line = no_accelerator_work(prog, "neuron", None)
    assert line.startswith("little neuron work: 3 of 4 ops") and "\n" not in line
    assert "blocked by aten::cumsum" in line
    assert no_accelerator_work(prog, "neuron", None, min_fraction=0.0) is None


def test_enough_accelerator_work_gives_no_warning():
    prog = _split(Lin(), (torch.randn(2, 8),), "split{target=xla,policy=support}")
    assert no_accelerator_work(prog, "xla", None) is None


def test_the_warning_degrades_without_objective_unsupported_or_reasons():
    """A region written before split recorded ``objective`` / ``unsupported``, nodes without reasons."""
    prog = _split(Lin(), (torch.randn(2, 8),), "split{target=tensorrt}")
    region = partitions_region(prog)
    region.pop("objective", None)
    region.pop("unsupported", None)
    region.pop("estimate", None)
    for n in prog.graph.nodes:
        n.meta.pop("placement_reason", None)
    line = no_accelerator_work(prog, "tensorrt", [])
    assert line.startswith("no tensorrt partition:") and "policy=support" in line


# ------------------------------------------------------------------------------------------ manifests
@pytest.mark.parametrize("backend", ["xla", "neuron", "tensorrt"])
def test_every_accelerator_manifest_records_the_accelerator_work(backend, tmp_path):
    fxopt.export(Lin().eval(), (torch.randn(2, 8),), backend=backend, out=str(tmp_path / "a"))
    manifest = json.loads((tmp_path / "a" / "manifest.json").read_text())
    assert isinstance(manifest["accelerator_ops"], int) and manifest["total_ops"] == 3
    assert 0.0 <= manifest["accelerator_flops_fraction"] <= 1.0
    assert "accelerator_warning" in manifest
    if backend == "xla":    # its default split is policy=support
        assert manifest["accelerator_ops"] == 3 and manifest["accelerator_warning"] is None
    else:                   # throughput: this tiny model is estimated faster on the host, and says so
        assert manifest["accelerator_ops"] == 0
        assert manifest["accelerator_warning"].startswith(f"no {backend} partition:")


# ------------------------------------------------------------------------------------------ the CLI
def test_require_accelerator_exits_1_when_nothing_runs_on_the_accelerator(model_file, tmp_path, capsys):
    out = str(tmp_path / "emb")
    code = main(["run", f"{model_file}:Emb", "--backend", "neuron", "--passes", "split{target=neuron}",
                 "-o", out, "--require-accelerator"])
    captured = capsys.readouterr()
    assert code == 1
    assert os.path.isfile(os.path.join(out, "manifest.json"))          # written all the same ...
    assert "--require-accelerator" in captured.err and "still written" in captured.err   # ... and it says so
    [line] = _warnings(captured.out)
    assert "aten::embedding" in line


def test_require_accelerator_exits_0_when_the_accelerator_does_the_work(model_file, tmp_path, capsys):
    code = main(["run", f"{model_file}:Lin", "--backend", "neuron", "--passes", SUPPORT,
                 "-o", str(tmp_path / "lin"), "--require-accelerator"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert _warnings(captured.out) == []


def test_the_cli_prints_one_warning_line_naming_a_fix_without_failing(model_file, tmp_path, capsys):
    """tensorrt's default split (policy=cost, objective=throughput, t4 profile) keeps this tiny model on the
    CPU; the fix it names is the other policy (the objective is already throughput)."""
    code = main(["run", f"{model_file}:Lin", "--backend", "tensorrt", "-o", str(tmp_path / "cost")])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    [line] = _warnings(captured.out)
    assert "objective=throughput, t4 profile" in line and "split{target=tensorrt,policy=support}" in line
    assert "objective=latency" not in line
    manifest = json.loads((tmp_path / "cost" / "manifest.json").read_text())
    assert manifest["accelerator_ops"] == 0 and manifest["accelerator_warning"] == line.removeprefix("warning: ")


def test_min_accelerator_fraction_sets_the_threshold(model_file, tmp_path, capsys):
    base = ["run", f"{model_file}:Heavy", "--backend", "neuron", "--passes", SUPPORT, "--require-accelerator"]
    assert main([*base, "-o", str(tmp_path / "a")]) == 1             # 0.1% < the default 5%
    assert "little neuron work" in capsys.readouterr().out
    assert main([*base, "-o", str(tmp_path / "b"), "--min-accelerator-fraction", "0"]) == 0
    captured = capsys.readouterr()
    assert _warnings(captured.out) == []
    assert json.loads((tmp_path / "b" / "manifest.json").read_text())["accelerator_warning"] is None


def test_min_accelerator_fraction_must_be_a_fraction(model_file, capsys):
    assert main(["run", f"{model_file}:Lin", "--min-accelerator-fraction", "1.5"]) == 2
    assert "from 0 to 1" in capsys.readouterr().err


def test_require_accelerator_refuses_the_reference_backend(model_file, tmp_path, capsys):
    assert main(["run", f"{model_file}:Lin", "-o", str(tmp_path / "r"), "--require-accelerator"]) == 2
    assert "accelerator backend" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "r")


def test_inspect_placement_of_an_artifact_shows_each_node_and_its_reason(model_file, tmp_path, capsys):
    out = str(tmp_path / "heavy")
    assert main(["run", f"{model_file}:Heavy", "--backend", "neuron", "--passes", SUPPORT, "-o", out]) == 0
    capsys.readouterr()
    assert main(["inspect", out, "--placement"]) == 0
    text = capsys.readouterr().out
    row = next(line for line in text.splitlines() if " cumsum " in line and "aten.cumsum" in line)
    assert "cpu" in row and "cpu_0" in row and "unsupported on neuron" in row
    assert "3 of 4 ops" in text                                        # the manifest's accelerator work


def test_inspect_placement_of_a_model_runs_the_targets_pipeline(model_file, capsys):
    assert main(["inspect", f"{model_file}:Lin", "--placement", "--target", "xla"]) == 0
    text = capsys.readouterr().out
    row = next(line for line in text.splitlines() if " addmm " in line)
    assert "xla_0" in row and "policy=support" in row
    assert "3 of 3 ops" in text


# ------------------------------------------------------------------------------------------ serialize
def test_serialize_keeps_placement_reason_and_partition(tmp_path):
    prog = _split(Lin(), (torch.randn(2, 8),), "split{target=xla,policy=support}")
    serialize.save_graph_module(prog.graph_module, str(tmp_path), stem="g")
    loaded = {n.name: n for n in serialize.load_graph_module(str(tmp_path), stem="g").graph.nodes}
    assert loaded["addmm"].meta["placement_reason"] == "policy=support: every supported op on xla"
    assert loaded["addmm"].meta["partition"] == "xla_0"


def test_serialize_still_loads_node_meta_without_the_new_keys(tmp_path):
    prog = _split(Lin(), (torch.randn(2, 8),), "split{target=xla,policy=support}")
    for n in prog.graph.nodes:
        n.meta.pop("placement_reason", None)
        n.meta.pop("partition", None)
    serialize.save_graph_module(prog.graph_module, str(tmp_path), stem="g")
    doc = json.loads((tmp_path / "g.json").read_text())
    assert all("placement_reason" not in (n.get("meta") or {}) for n in doc["graph"]["nodes"])
    loaded = {n.name: n for n in serialize.load_graph_module(str(tmp_path), stem="g").graph.nodes}
    assert loaded["addmm"].meta["placement"] == "xla" and "placement_reason" not in loaded["addmm"].meta
