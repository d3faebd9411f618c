"""Load a corpus model's saved artifacts in a process that cannot import transformers (run by
tests/corpus/endtoend.py as ``python reload.py MODEL_DIR BACKEND...``).

For each backend: ``fxopt.load(MODEL_DIR/BACKEND)``, call it with ``MODEL_DIR/inputs.pt`` as keywords, and
compare its outputs and their structure with ``expected.pt`` / ``structure.json`` written when it was
compiled. Prints one JSON line ``{backend: "ok" | problem, "imported": [model-library modules loaded]}``;
exits 1 when any backend failed."""
from __future__ import annotations

import json
import os
import sys

sys.modules["transformers"] = None   # `import transformers` now raises ImportError, as where it is absent

import torch  # noqa: E402
import torch.utils._pytree as pytree  # noqa: E402

import fxopt  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))   # tests/: `import corpus`
from corpus.endtoend import structure  # noqa: E402 - imports no transformers (its builders import it lazily)


def check(directory: str, backend: str, inputs: dict) -> str:
    path = os.path.join(directory, backend)
    try:
        compiled = fxopt.load(path)
        with torch.no_grad():
            outputs = compiled(**inputs)
    except Exception as exc:  # noqa: BLE001 - reported, not raised
        return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    with open(os.path.join(path, "structure.json")) as f:
        want = json.load(f)
    if structure(outputs) != want:
        return f"output structure {structure(outputs)} differs from the compiled one {want}"
    expected = torch.load(os.path.join(path, "expected.pt"), weights_only=True)
    got = pytree.tree_leaves(outputs)
    if len(got) != len(expected):
        return f"{len(got)} outputs, {len(expected)} expected"
    for i, (g, e) in enumerate(zip(got, expected)):
        try:
            torch.testing.assert_close(g, e, rtol=1e-5, atol=1e-6)
        except AssertionError as exc:
            return f"output {i}: {str(exc).splitlines()[0]}"
    return "ok"


def main() -> int:
    directory, backends = sys.argv[1], sys.argv[2:]
    inputs = torch.load(os.path.join(directory, "inputs.pt"), weights_only=True)
    report = {b: check(directory, b, inputs) for b in backends}
    report["imported"] = sorted(m for m in sys.modules if m.split(".")[0] == "transformers" and sys.modules[m])
    print(json.dumps(report))
    return 0 if all(report[b] == "ok" for b in backends) and not report["imported"] else 1


if __name__ == "__main__":
    sys.exit(main())
