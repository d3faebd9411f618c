"""fxopt fleet: many models as jobs on a process pool, on Ray, or as a Kubernetes Job, through a
content-addressed cache, with groups sharing one weight store (tools/fleet)."""
from __future__ import annotations

import json
import os
import re
import textwrap

import pytest

from fxopt.errors import InputError
from fxopt.tools.cli import main
from fxopt.tools.fleet import fleet, parse_fleet, summary

MODELS = textwrap.dedent('''
    import torch
    from torch import nn


    def tower():
        torch.manual_seed(0)
        return nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 8))


    class RankerA(nn.Module):
        """A tower (the same weights in RankerB) and a head of its own."""

        def __init__(self):
            super().__init__()
            self.tower = tower()
            torch.manual_seed(1)
            self.head = nn.Linear(8, 1)

        def forward(self, x):
            return self.head(self.tower(x))

        def example_inputs(self):
            return (torch.randn(4, 16, generator=torch.Generator().manual_seed(0)),)


    class RankerB(RankerA):
        def __init__(self):
            super().__init__()
            torch.manual_seed(2)
            self.head = nn.Linear(8, 3)


    RankerAlias = RankerA     # the same model under another name: the same graph


    class Mlp(nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(3)
            self.net = nn.Sequential(nn.Linear(8, 8), nn.GELU(), nn.Linear(8, 2))

        def forward(self, x):
            return self.net(x)

        def example_inputs(self):
            return (torch.randn(2, 8, generator=torch.Generator().manual_seed(0)),)


    class Broken(nn.Module):
        def forward(self, x):
            raise RuntimeError("this model cannot run")

        def example_inputs(self):
            return (torch.randn(2, 2),)
''')

FLEET = textwrap.dedent('''
    [defaults]
    backend = "reference"

    [[model]]
    name = "ranking"
    model = "zoo:ranking"
    small = true

    [[model]]
    name = "moderation"
    model = "zoo:moderation"
    small = true

    [[model]]
    name = "resnet"
    model = "zoo:resnet50"
    small = true

    [[model]]
    name = "mlp"
    model = "models.py:Mlp"
    batch = 3

    [[model]]
    name = "ranker_a"
    model = "models.py:RankerA"
    group = "rankers"

    [[model]]
    name = "ranker_b"
    model = "models.py:RankerB"
    group = "rankers"

    [[model]]
    name = "broken"
    model = "models.py:Broken"
''')


@pytest.fixture(scope="module")
def fleet_file(tmp_path_factory):
    root = tmp_path_factory.mktemp("fleet")
    (root / "models.py").write_text(MODELS)
    (root / "fleet.toml").write_text(FLEET)
    return str(root / "fleet.toml")


def _by_name(rows):
    return {r["model"]: r for r in rows}


def _check_first_run(rows, out):
    rows = _by_name(rows)
    assert set(rows) == {"ranking", "moderation", "resnet", "mlp", "ranker_a", "ranker_b", "broken"}
    assert rows["broken"]["status"] == "failed" and "this model cannot run" in rows["broken"]["error"]
    assert "\n" not in rows["broken"]["error"]
    good = [r for name, r in rows.items() if name != "broken"]
    assert all(r["status"] == "ok" and r["cache"] == "miss" for r in good), good
    for name in ("ranking", "moderation", "resnet", "mlp"):
        assert os.path.isfile(os.path.join(out, name, "manifest.json"))
    # the group: one store, smaller than its members' weights summed
    store = os.path.join(out, "rankers")
    assert os.path.isfile(os.path.join(store, "store.json"))
    members = rows["ranker_a"]["weight_bytes_after"] + rows["ranker_b"]["weight_bytes_after"]
    assert os.path.getsize(os.path.join(store, "weights.safetensors")) < members
    assert rows["ranker_a"]["shared_bytes"] >= 16 * 64 * 4       # at least the tower's first weight


ZOO = ("ranking", "moderation", "resnet")


def _check_all_hits(rows):
    """zoo models (whose source fxopt can name) skip capture; the file models are captured and found by
    their graph; nothing is optimized or compiled again."""
    assert {rows[n]["cache"] for n in ZOO} == {"hit (job)"}
    assert all(rows[n]["seconds"] == {} for n in ZOO)
    assert {rows[n]["cache"] for n in ("mlp", "ranker_a", "ranker_b")} == {"hit (graph)"}
    assert all("optimize" not in r["seconds"] for n, r in rows.items() if n != "broken")


def test_the_process_pool_compiles_the_fleet_and_a_second_run_keeps_or_reuses_it(fleet_file, tmp_path):
    out, cache = str(tmp_path / "out"), str(tmp_path / "cache")
    _check_first_run(fleet(fleet_file, out, cache=cache, engine="pool", workers=2), out)
    again = _by_name(fleet(fleet_file, out, cache=cache, engine="pool", workers=2))
    assert {r["status"] for n, r in again.items() if n != "broken"} == {"kept"}
    elsewhere = _by_name(fleet(fleet_file, str(tmp_path / "out2"), cache=cache, engine="pool", workers=2))
    _check_all_hits(elsewhere)
    from fxopt import load
    import torch
    loaded = load(os.path.join(str(tmp_path / "out2"), "mlp"))
    assert loaded(torch.randn(3, 8)).shape == (3, 2)                               # --batch 3 in the file


def test_ray_compiles_the_fleet_and_a_second_run_is_all_cache_hits(fleet_file, tmp_path):
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        out, cache = str(tmp_path / "out"), str(tmp_path / "cache")
        _check_first_run(fleet(fleet_file, out, cache=cache, engine="ray"), out)
        _check_all_hits(_by_name(fleet(fleet_file, str(tmp_path / "again"), cache=cache, engine="ray")))
    finally:
        ray.shutdown()


def test_the_same_graph_under_another_spec_compiles_once(fleet_file, tmp_path):
    doc = {"model": [{"name": "a", "model": os.path.join(os.path.dirname(fleet_file), "models.py:RankerA")},
                     {"name": "alias", "model": os.path.join(os.path.dirname(fleet_file), "models.py:RankerAlias")}]}
    rows = _by_name(fleet(doc, str(tmp_path / "out"), cache=str(tmp_path / "cache"), engine="serial"))
    assert rows["a"]["cache"] == "miss" and rows["alias"]["cache"] == "hit (graph)"
    assert "optimize" not in rows["alias"]["seconds"]


def test_index_runs_only_that_unit(fleet_file, tmp_path):
    rows = fleet(fleet_file, str(tmp_path / "out"), cache=None, engine="serial", only=[3])
    assert [r["model"] for r in rows] == ["mlp"] and rows[0]["status"] == "ok"
    with pytest.raises(InputError, match="unit index 9 out of range"):
        fleet(fleet_file, str(tmp_path / "out"), engine="serial", only=[9])


def test_the_cli_prints_a_row_per_model_writes_json_and_exits_1_on_a_failure(fleet_file, tmp_path, capsys):
    report = tmp_path / "report.json"
    code = main(["fleet", fleet_file, "--out", str(tmp_path / "out"), "--serial", "--index", "3", "--index", "5",
                 "--json", str(report)])
    text = capsys.readouterr().out
    assert code == 1
    assert "failed: broken" in text and "1 of 2 model(s) compiled" in text
    data = json.loads(report.read_text())
    assert data["summary"]["failed"] == 1 and [r["model"] for r in data["models"]] == ["mlp", "broken"]


def test_emit_k8s_writes_an_indexed_job_with_one_pod_per_unit(fleet_file, tmp_path, capsys):
    assert main(["fleet", fleet_file, "--out", str(tmp_path / "k"), "--emit", "k8s", "--image", "me/fxopt:1"]) == 0
    job = json.loads((tmp_path / "k" / "fleet-job.json").read_text())
    assert job["kind"] == "Job" and job["spec"]["completionMode"] == "Indexed"
    assert job["spec"]["completions"] == 6                    # 5 models alone + the group of two
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "me/fxopt:1"
    assert container["command"][-2:] == ["--index", "$(JOB_COMPLETION_INDEX)"]
    assert not (tmp_path / "k" / "ranking").exists()          # emitting runs nothing


@pytest.mark.parametrize("doc, words", [
    ({}, "no [[model]] entries"),
    ({"model": [{"name": "a"}]}, "missing 'model'"),
    ({"model": [{"name": "a", "model": "zoo:ranking", "colour": "red"}]}, "unknown key 'colour'"),
    ({"model": [{"name": "a", "model": "zoo:ranking"}, {"name": "a", "model": "zoo:ocr"}]}, "used twice"),
    ({"model": [{"name": "a/b", "model": "zoo:ranking"}]}, "not a plain directory name"),
    ({"model": [{"name": "a", "model": "zoo:ranking", "batch": 0}]}, "batch must be > 0"),
    ({"model": [{"name": "a", "model": "zoo:ranking", "input": ["x=float99[2]"]}]}, "input:"),
    ({"model": [{"name": "a", "model": "zoo:ranking", "backend": "xla", "group": "g"},
                {"name": "b", "model": "zoo:ocr", "group": "g"}]}, "shared weight store holds reference"),
    ({"defaults": {"name": "x"}, "model": [{"name": "a", "model": "zoo:ranking"}]}, "cannot be a default"),
])
def test_a_bad_fleet_is_one_line_naming_the_model_and_key(doc, words):
    with pytest.raises(InputError, match=re.escape(words)) as err:
        parse_fleet(doc, "fleet.toml")
    assert "\n" not in str(err.value) and "fleet.toml" in str(err.value)


def test_a_bad_fleet_file_exits_2_before_anything_runs(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text("[[model]]\nname = 'a'\nmodel = 'zoo:ranking'\nsmall = 'yes'\n")
    assert main(["fleet", str(bad), "--out", str(tmp_path / "out")]) == 2
    assert "small must be true or false" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_summary_counts_statuses_and_cache():
    rows = [{"status": "ok", "cache": "miss"}, {"status": "ok", "cache": "hit (graph)"},
            {"status": "kept", "cache": "kept"}, {"status": "failed", "cache": "miss"}]
    assert summary(rows) == {"models": 4, "ok": 2, "kept": 1, "failed": 1, "cache_hits": 1, "cache_misses": 1}
