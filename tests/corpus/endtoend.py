"""The corpus end to end: each model as a user holds it (the Hugging Face model, keyword inputs, its
ModelOutput and default cache) through capture, the target's default pipeline and every backend, checked
against eager, saved, and loaded again in a fresh process that cannot import transformers.

Used by tests/test_corpus_*.py (one test per model x backend, one reload test per model) and by
``python tests/corpus/matrix.py`` (docs/models.md). Everything here works on one model at a time, so a
caller can spread models over processes."""
from __future__ import annotations

import dataclasses
import functools
import json
import os
import subprocess
import sys
import time
from typing import Any

import torch
import torch.utils._pytree as pytree

BACKENDS = ("reference", "xla", "tensorrt", "tensorrt+support", "neuron", "neuron+support")

# Columns that are a backend with its default pipeline changed: tensorrt's and neuron's default split places
# by estimated throughput (policy=cost), which at these tiny sizes keeps most models on the CPU;
# "tensorrt+support" and "neuron+support" send every op the target supports to it, so the ONNX route and
# the TorchScript tracing route are exercised on every model.
VARIANTS = {"tensorrt+support": ("tensorrt", "split{target=tensorrt,objective=throughput}",
                                 "split{target=tensorrt,policy=support}"),
            "neuron+support": ("neuron", "split{target=neuron,objective=throughput}",
                               "split{target=neuron,policy=support}")}

# Cells that cannot pass here, with the reason shown in docs/models.md; the tests check they still fail that
# way (so a fix shows up). Empty: every model runs on every backend.
EXPECTED_FAILURES: dict[tuple[str, str], str] = {}

RELOAD_SCRIPT = os.path.join(os.path.dirname(__file__), "reload.py")


@dataclasses.dataclass
class Cell:
    """One model on one backend: ``ok`` or the failure's first line, the artifact check's max abs error, the
    seconds of optimize + compile + check + save, and where the graph runs (``{"xla": 2, "cpu": 1}``:
    partitions per device, from the artifact's manifest)."""

    model: str
    backend: str
    ok: bool
    detail: str = ""
    max_abs_error: float | None = None
    seconds: float = 0.0
    partitions: dict = dataclasses.field(default_factory=dict)
    notes: list = dataclasses.field(default_factory=list)

    @property
    def device(self) -> str:
        """The accelerator this cell's artifact targets (its backend's name)."""
        return VARIANTS.get(self.backend, (self.backend,))[0]


@functools.lru_cache(maxsize=None)
def captured(name: str):
    """``(model, kwargs, program, expected flat outputs)`` of corpus model ``name``, captured once per
    process."""
    import fxopt
    from corpus import hf_model
    from fxopt.ir.capture.library_outputs import plain_tree

    model, kwargs = hf_model(name)
    program = fxopt.capture(model, example_kwargs=kwargs)
    with torch.no_grad():
        expected = tuple(pytree.tree_leaves(plain_tree(model(**kwargs))))
    return model, kwargs, program, expected


def run_cell(name: str, backend: str, out_root: str) -> Cell:
    """Optimize corpus model ``name`` with ``backend``'s default pipeline (verified), compile it, check the
    artifact against eager and save it to ``out_root/name/backend`` with the outputs it gave (``expected.pt``)
    for :func:`reload_in_fresh_process`. Returns a :class:`Cell` (failures are caught into it)."""
    import fxopt
    from fxopt.api import check_compiled
    from fxopt.errors import FxoptError

    from fxopt.passes.registry import default_pipeline

    _, kwargs, program, expected = captured(name)
    target, old, new = VARIANTS.get(backend, (backend, "", ""))
    pipeline = default_pipeline(target)
    if old:
        assert old in pipeline, f"variant {backend}: {old!r} is no longer in {target}'s default pipeline"
        pipeline = pipeline.replace(old, new)
    start = time.perf_counter()
    try:
        optimized = fxopt.optimize(program, pipeline, target=target)
        compiled = fxopt.compile(optimized, target)
        error = check_compiled(compiled, program, expected)
        path = os.path.join(out_root, name, backend)
        compiled.save(path)
        with torch.no_grad():
            outputs = compiled(**kwargs)
        torch.save(pytree.tree_leaves(outputs), os.path.join(path, "expected.pt"))
        with open(os.path.join(path, "structure.json"), "w") as f:
            json.dump(structure(outputs), f)
        torch.save(kwargs, os.path.join(out_root, name, "inputs.pt"))
    except FxoptError as exc:
        return Cell(name, backend, False, str(exc).splitlines()[0], seconds=time.perf_counter() - start)
    with open(os.path.join(path, "manifest.json")) as f:
        notes = json.load(f).get("notes", [])
    return Cell(name, backend, True, max_abs_error=error, seconds=time.perf_counter() - start,
                partitions=placement(path), notes=notes)


def placement(path: str) -> dict[str, int]:
    """Partitions per device in the saved artifact at ``path`` (from its manifest)."""
    with open(os.path.join(path, "manifest.json")) as f:
        manifest = json.load(f)
    counts: dict[str, int] = {}
    for part in manifest.get("partitions", []):
        device = part.get("device", "?")
        counts[device] = counts.get(device, 0) + 1
    return counts


def structure(value: Any) -> Any:
    """The output's container structure in JSON terms: class name and field names of each named container
    (ModelOutput or fxopt's Fields), lists for tuples and lists, "tensor" for leaves."""
    if isinstance(value, torch.Tensor):
        return "tensor"
    if isinstance(value, (tuple, list)):
        return [structure(v) for v in value]
    if isinstance(value, dict):
        name = getattr(value, "type_name", None) or type(value).__name__
        return {"class": name, "fields": {str(k): structure(v) for k, v in dict.items(value)}}
    return type(value).__name__


def reload_in_fresh_process(name: str, out_root: str, backends: tuple[str, ...] = BACKENDS) -> dict:
    """Load every saved artifact of ``name`` in a new Python process in which ``import transformers`` fails,
    run each on the saved inputs and compare with the outputs and structure it gave when compiled. Returns
    the script's JSON report ``{backend: "ok" | problem, "imported": [...library modules seen]}``."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    proc = subprocess.run([sys.executable, RELOAD_SCRIPT, os.path.join(out_root, name), *backends],
                          capture_output=True, text=True, timeout=600, env=env)
    if proc.returncode not in (0, 1):
        raise AssertionError(f"reload of {name} crashed (rc {proc.returncode}): {proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])
