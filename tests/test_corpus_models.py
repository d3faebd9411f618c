"""Real models end to end (tests/corpus, 27 Hugging Face architectures from tiny configs): each model as a
user holds it — the transformers model itself, keyword inputs, its ModelOutput and default KV cache — through
capture, its backend's default pipeline and every backend, checked against eager; then every artifact
loaded in a fresh process where ``import transformers`` fails, with the same outputs and structure."""
from __future__ import annotations

import os

import pytest

pytest.importorskip("transformers")
pytest.importorskip("jax")
pytest.importorskip("onnxruntime")

from corpus import BUILDERS  # noqa: E402
from corpus.endtoend import BACKENDS, EXPECTED_FAILURES, reload_in_fresh_process, run_cell  # noqa: E402

CELLS = [(name, backend) for name in BUILDERS for backend in BACKENDS]


@pytest.fixture(scope="module")
def out_root(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("corpus"))


@pytest.mark.numerics
@pytest.mark.parametrize("name, backend", CELLS, ids=[f"{n}-{b}" for n, b in CELLS])
def test_compiles_and_matches_eager(name, backend, out_root):
    cell = run_cell(name, backend, out_root)
    reason = EXPECTED_FAILURES.get((name, backend))
    if reason is not None:
        assert not cell.ok and reason in cell.detail, f"{name} on {backend}: expected to fail with {reason!r}"
        return
    assert cell.ok, f"{name} on {backend}: {cell.detail}"
    assert cell.max_abs_error is not None and cell.max_abs_error < 1e-3
    if backend != "reference":   # an accelerator artifact does accelerator work, or says why not
        assert cell.partitions.get(cell.device, 0) >= 1 or any(
            n.startswith(f"no {cell.device} partition:") for n in cell.notes), (cell.partitions, cell.notes)
    if backend in ("xla", "neuron+support", "tensorrt+support"):   # every supported op placed on the accelerator
        assert cell.partitions.get(cell.device, 0) >= 1, cell.partitions


@pytest.mark.parametrize("name", list(BUILDERS))
def test_artifacts_load_without_transformers(name, out_root):
    backends = [b for b in BACKENDS if (name, b) not in EXPECTED_FAILURES]
    for backend in backends:    # the compile test above normally wrote them; build any it did not
        if not os.path.isfile(os.path.join(out_root, name, backend, "expected.pt")):
            assert run_cell(name, backend, out_root).ok
    report = reload_in_fresh_process(name, out_root, tuple(backends))
    assert report.pop("imported") == [], "the reload imported transformers"
    assert report == {b: "ok" for b in backends}


def test_the_docs_matrix_has_a_row_per_model_and_a_column_per_backend():
    doc = open(os.path.join(os.path.dirname(__file__), "..", "docs", "models.md"), encoding="utf-8").read()
    table = doc.split("<!-- corpus-matrix:begin -->")[1].split("<!-- corpus-matrix:end -->")[0]
    rows = [line for line in table.splitlines() if line.startswith("| ") and not line.startswith("| model")]
    assert [r.split()[1] for r in rows] == list(BUILDERS), "regenerate: python tests/corpus/matrix.py --write-docs"
    header = next(line for line in table.splitlines() if line.startswith("| model"))
    assert [c.strip() for c in header.strip("|").split("|")][1:] == list(BACKENDS)
    assert all(r.count("| ok (") == len(BACKENDS) for r in rows), "a cell is not ok: see docs/models.md"
