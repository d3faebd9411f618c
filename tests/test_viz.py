"""fxopt viz without a browser: the page's contents, the embedded trace, loading errors and the CLI."""
from __future__ import annotations

import json
import os
import re

import pytest

import fxopt
from fxopt.errors import InputError
from fxopt.tools.cli import main
from fxopt.tools.viz import build_page, default_page_path, write_page
from fxopt.tools.viz_data import load_trace, pack_trace, unpack_trace
from fxopt.tools.viz_synthetic import synthetic_trace

from conftest import captured

DATA_RE = re.compile(r'<script type="application/json" id="fxopt-trace">(.*?)</script>', re.S)


@pytest.fixture(scope="module")
def ranking_trace():
    """The trace of zoo:ranking (small) after dedupe, moe and split for xla."""
    program = fxopt.optimize(captured("ranking")[2], "dedupe,moe,split{target=xla}")
    return program.trace_json()


def embedded(page: str) -> dict:
    """The packed trace embedded in ``page``, parsed."""
    found = DATA_RE.findall(page)
    assert len(found) == 1
    return json.loads(found[0])


def test_page_embeds_the_whole_trace(ranking_trace):
    page = build_page(ranking_trace)
    assert unpack_trace(embedded(page)) == json.loads(json.dumps(ranking_trace))


def test_page_is_self_contained(ranking_trace):
    page = build_page(ranking_trace)
    assert not re.search(r"<script[^>]+src=|<link\b|@import|https?://", page)
    assert page.count("<script") == 2 and "function layout(" in page


def test_node_names_cannot_break_out_of_the_data_element(ranking_trace):
    trace = json.loads(json.dumps(ranking_trace))
    evil = "</script><script>alert(1)</script><!--"
    trace["snapshots"][0]["nodes"][3]["args"] = evil
    page = build_page(trace)
    assert page.count("</script>") == 2
    assert embedded(page)["records"][3]["args"] == evil


def test_pack_stores_unchanged_records_once(ranking_trace):
    packed = pack_trace(ranking_trace)
    total = sum(len(s["nodes"]) for s in ranking_trace["snapshots"] if "nodes" in s)
    capture, dedupe = ranking_trace["snapshots"][0]["nodes"], ranking_trace["snapshots"][1]["nodes"]
    shared = len({json.dumps(r, sort_keys=True) for r in capture} & {json.dumps(r, sort_keys=True) for r in dedupe})
    assert shared > 100
    assert len(packed["records"]) <= total - shared


def test_moe_fusion_is_in_the_trace(ranking_trace):
    # the diff test in the browser relies on it: moe removes the experts' nodes and adds batched ones
    before = {n["name"] for n in ranking_trace["snapshots"][1]["nodes"]}
    after = {n["name"]: n for n in ranking_trace["snapshots"][2]["nodes"]}
    added = [n for name, n in after.items() if name not in before]
    assert ranking_trace["snapshots"][2]["pass"] == "moe"
    assert any(n["target"] in ("aten.bmm.default", "aten.baddbmm.default") and n["provenance"]["pass"] == "moe"
               for n in added)
    assert len(before - set(after)) > 20


def test_load_trace_from_an_artifact_directory(tmp_path, ranking_trace):
    (tmp_path / "trace.json").write_text(json.dumps(ranking_trace))
    assert load_trace(str(tmp_path))["snapshots"][2]["pass"] == "moe"


@pytest.mark.parametrize("content, message", [
    (None, "no trace.json"),
    ("{not json", "not a JSON file"),
    ('{"format": "something-else"}', "not an fxopt trace"),
    ('{"format": "fxopt-trace", "snapshots": [{"pass": "x", "same_as": 3}]}', "neither nodes nor a valid same_as"),
])
def test_load_trace_errors_name_the_path(tmp_path, content, message):
    if content is not None:
        (tmp_path / "trace.json").write_text(content)
    with pytest.raises(InputError, match=re.escape(message)) as info:
        load_trace(str(tmp_path))
    assert str(tmp_path) in str(info.value) and "\n" not in str(info.value)


def test_write_page_defaults_beside_the_trace(tmp_path, ranking_trace):
    src = tmp_path / "run1.json"
    src.write_text(json.dumps(ranking_trace))
    assert default_page_path(str(src)) == str(tmp_path / "run1.html")
    path = write_page(str(src))
    assert path == str(tmp_path / "run1.html")
    assert unpack_trace(embedded(open(path, encoding="utf-8").read()))["program"] == ranking_trace["program"]


def test_cli_viz_writes_the_page_into_the_artifact_dir(tmp_path, ranking_trace, capsys):
    (tmp_path / "trace.json").write_text(json.dumps(ranking_trace))
    assert main(["viz", str(tmp_path)]) == 0
    assert os.path.isfile(tmp_path / "page.html")
    assert "page.html" in capsys.readouterr().out


def test_cli_viz_json_prints_the_raw_trace(tmp_path, ranking_trace, capsys):
    (tmp_path / "trace.json").write_text(json.dumps(ranking_trace))
    assert main(["viz", str(tmp_path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == json.loads(json.dumps(ranking_trace))


def test_cli_viz_missing_source_is_exit_2(tmp_path, capsys):
    assert main(["viz", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("fxopt: error: ") and "nope" in err and err.count("\n") == 1


def test_cli_run_viz_writes_page_with_the_artifact(tmp_path, capsys):
    model_file = tmp_path / "small_ranking.py"
    model_file.write_text("from fxopt.zoo import ranking\n\ndef small():\n    return ranking.build(small=True)\n")
    out = tmp_path / "art"
    code = main(["run", f"{model_file}:small", "--passes", "dedupe,moe", "-o", str(out), "--viz", "--no-verify"])
    assert code == 0, capsys.readouterr().err
    page = (out / "page.html").read_text(encoding="utf-8")
    trace = load_trace(str(out))  # trace.json with timings.json merged back
    assert unpack_trace(embedded(page)) == trace and trace["reports"][0]["seconds"] > 0
    assert fxopt.load(str(out)) is not None  # the extra file does not disturb loading


def test_synthetic_trace_has_the_asked_size_and_a_fusion():
    trace = synthetic_trace(5000)
    snaps = trace["snapshots"]
    assert abs(len(snaps[0]["nodes"]) - 5000) <= 40
    before = {n["name"] for n in snaps[0]["nodes"]}
    after = {n["name"] for n in snaps[1]["nodes"]}
    layers = trace["reports"][0]["details"]["layers_fused"]
    assert len(before - after) == 3 * layers and len(after - before) == 4 * layers
    assert {n["placement"] for n in snaps[2]["nodes"]} == {"cpu", "xla"}
    load_trace(trace)  # a valid trace
