"""ONNX's own backend conformance tests through fxopt's importer (fxopt.tools.onnx_conformance): every node
test the installed onnx package generates, and its model suites, imported with fxopt.capture and run on the
test's inputs. One test per op type holds its cases to tools/onnx_conformance_expected.json, so a regression
or a newly passing case fails here with the command that updates the file; no case may give wrong values."""
from __future__ import annotations

import functools
import re

import pytest

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from fxopt.tools import onnx_conformance as conf  # noqa: E402

UPDATE = "python -m fxopt.tools.onnx_conformance --write-expected --write-docs"


@functools.lru_cache(maxsize=1)
def _cases_by_op() -> dict:
    by_op: dict = {}
    for case in conf.all_cases():
        by_op.setdefault(case.op, []).append(case)
    return by_op


def _ops() -> list[str]:
    try:
        return sorted(_cases_by_op())
    except Exception:  # noqa: BLE001 - an onnx without its test data: one test reports it
        return []


@pytest.mark.parametrize("op", _ops())
def test_conformance_cases_of_op_match_the_expected_outcomes(op):
    results = [conf.run_case(c) for c in _cases_by_op()[op]]
    wrong = [f"{r.name}: {r.message}" for r in results if r.status == "wrong"]
    assert not wrong, f"{op} gives wrong values: {wrong}"
    diff = conf.differences(results, conf.load_expected())
    assert not diff, f"{op}: outcomes changed (if intended, run `{UPDATE}`):\n" + "\n".join(diff)


def test_every_case_has_an_expected_outcome():
    expected = conf.load_expected()
    names = {c.name for cases in _cases_by_op().values() for c in cases}
    assert names, "the installed onnx package ships no backend test cases"
    assert names == set(expected), f"run `{UPDATE}`: cases without an entry: {sorted(names - set(expected))[:5]}, " \
                                   f"entries without a case: {sorted(set(expected) - names)[:5]}"


def test_no_expected_outcome_is_a_wrong_value():
    assert not [n for n, v in conf.load_expected().items() if v.startswith("wrong")]


def test_every_failure_is_one_line_naming_the_op():
    for name, outcome in conf.load_expected().items():
        status, _, message = outcome.partition(": ")
        if status in ("import", "run"):
            assert "\n" not in message and message, name
        if status == "import":
            assert re.search(r"\(([A-Za-z.]+)\)|unsupported ONNX ops: |example input|graph input", message), \
                f"{name}: '{message}' does not name the node or op"


def test_docs_table_matches_the_expected_outcomes():
    """docs/onnx-import.md's generated summary states the counts the expected file holds."""
    with open(conf.DOCS_PATH, encoding="utf-8") as f:
        text = f.read()
    assert conf.DOCS_BEGIN in text, f"docs/onnx-import.md has no generated table: run `{UPDATE}`"
    statuses = [v.split(":", 1)[0] for v in conf.load_expected().values()]
    relevant = len(statuses) - statuses.count("excluded")
    assert f"**{statuses.count('pass')} of {relevant} inference-relevant tests pass" in text, \
        f"docs/onnx-import.md's conformance table is stale: run `{UPDATE}`"


def test_inference_relevant_pass_rate_meets_the_goal():
    """The goal of the ONNX conformance work: >= 90% of the inference-relevant cases pass."""
    statuses = [v.split(":", 1)[0] for v in conf.load_expected().values()]
    relevant = len(statuses) - statuses.count("excluded")
    assert statuses.count("pass") >= 0.9 * relevant, f"{statuses.count('pass')} of {relevant}"
