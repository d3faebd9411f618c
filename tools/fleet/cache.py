"""The fleet's content-addressed artifact cache, shared by every worker through a directory.

Two keys per model (sha256 hex digests):

- the **job key**, known before capture: the model's source (the bytes of its ``.py`` / ``.pt2`` /
  ``.onnx`` file, or the zoo's code for ``zoo:NAME``), its options (small, inputs, batch), the pass spec,
  the backend, and the versions of fxopt (its code, hashed), torch and the backend's libraries. A hit skips
  everything, capture included.
- the **graph key**, known after capture: the captured graph's structure and every weight's content
  (:func:`fxopt.ir.structure.graph_key`), the example inputs' shapes and dtypes, the pass spec, the backend
  and the versions. Two fleet entries holding the same model (a tower shared by two rankers, one model under
  two names) compile once.

Layout::

    CACHE/artifacts/<graph key>/   an artifact directory, copied in whole or not at all
    CACHE/jobs/<job key>.json      {"graph": <graph key>}

Entries are written to a temporary name and renamed, so concurrent workers never see half an artifact; two
workers that compile the same graph at once both write, and one rename wins (the entries are equal).
"""
from __future__ import annotations

# local imports: torch and the backends load only when a key or an artifact is needed (the CLI's startup cost)

import functools
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import shutil
import uuid
from typing import Any

__all__ = ["Cache", "job_key", "graph_key", "versions", "source_identity"]

_PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_BACKEND_LIBRARIES = {"xla": ("jax", "jaxlib"), "tensorrt": ("onnx", "onnxruntime", "onnxscript"),
                      "neuron": (), "reference": ()}


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


def _file_digest(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@functools.lru_cache(maxsize=1)
def _fxopt_code() -> str:
    """A digest of fxopt's own Python files (not tests or benchmarks): a code change without a version bump
    still changes every key."""
    h = hashlib.sha256()
    for folder, dirs, files in os.walk(_PACKAGE_ROOT):
        dirs[:] = sorted(d for d in dirs if d not in ("tests", "benchmarks", "docs", "examples")
                         and not d.startswith("."))
        for name in sorted(files):
            if name.endswith((".py", ".json", ".js")):
                path = os.path.join(folder, name)
                h.update(os.path.relpath(path, _PACKAGE_ROOT).encode())
                h.update(_file_digest(path).encode())
    return h.hexdigest()


def versions(backend: str) -> dict:
    """``{"fxopt", "fxopt_code", "torch", <backend libraries>...}``: what the keys depend on beside the model."""
    from fxopt.version import __version__

    out = {"fxopt": __version__, "fxopt_code": _fxopt_code()}
    for lib in ("torch", *_BACKEND_LIBRARIES.get(backend.partition("{")[0].strip(), ())):
        try:
            out[lib] = importlib.metadata.version(lib)
        except importlib.metadata.PackageNotFoundError:
            out[lib] = None
    return out


def source_identity(spec: str) -> str | None:
    """A digest of what model spec ``spec`` runs: the file's bytes for ``file.py:Attr``, ``x.pt2`` and
    ``x.onnx``; the module's source file for ``module:Attr``; the zoo's code for ``zoo:NAME``. None when it
    cannot be pinned down without running it (then the job key is skipped and capture always runs)."""
    if spec.startswith("zoo:"):
        return _digest({"zoo": spec, "code": _fxopt_code()})
    head, sep, attr = spec.rpartition(":")
    path = head if sep else spec
    if os.path.isfile(path):
        return _digest({"file": _file_digest(path), "attr": attr})
    if sep and not os.path.sep in head:
        try:
            found = importlib.util.find_spec(head)
        except (ImportError, ValueError):
            found = None
        origin = getattr(found, "origin", None)
        if origin and os.path.isfile(origin):
            return _digest({"module": head, "file": _file_digest(origin), "attr": attr})
    return None


def job_key(job, passes: str, backend_versions: dict) -> str | None:
    """The job key of :class:`~fxopt.tools.fleet.spec.ModelJob` ``job`` run with pipeline text ``passes``;
    None when its source cannot be identified."""
    source = source_identity(job.model)
    if source is None:
        return None
    return _digest({"source": source, "small": job.small, "input": list(job.input), "batch": job.batch,
                    "passes": passes, "backend": job.backend, "versions": backend_versions})


def graph_key(program, passes: str, backend: str, backend_versions: dict) -> str:
    """The graph key of a captured ``program`` compiled with ``passes`` and ``backend``."""
    import torch  # local: the CLI registers the fleet command before torch loads

    from fxopt.ir.structure import graph_key as structure_key

    inputs = [(str(t.dtype), tuple(t.shape)) if isinstance(t, torch.Tensor) else repr(t)
              for t in program.flat_example_inputs()]
    return _digest({"graph": repr(structure_key(program.graph_module)), "inputs": inputs,
                    "in_spec": repr(program.in_spec), "out_spec": repr(program.out_spec),
                    "passes": passes, "backend": backend, "versions": backend_versions})


class Cache:
    """The cache directory ``root`` (created on first write)."""

    def __init__(self, root: str):
        self.root = os.path.abspath(root)

    def _artifact(self, key: str) -> str:
        return os.path.join(self.root, "artifacts", key)

    def graph_for_job(self, key: str | None) -> str | None:
        """The graph key a job key was compiled as, when its artifact is still in the cache."""
        if key is None:
            return None
        try:
            with open(os.path.join(self.root, "jobs", f"{key}.json"), encoding="utf-8") as f:
                graph = json.load(f).get("graph")
        except (OSError, ValueError, AttributeError):
            return None
        return graph if isinstance(graph, str) and self.has(graph) else None

    def has(self, key: str) -> bool:
        """Whether an artifact is stored under graph key ``key``."""
        return os.path.isfile(os.path.join(self._artifact(key), "manifest.json")) or \
            os.path.isfile(os.path.join(self._artifact(key), "store.json"))

    def store(self, key: str, artifact_dir: str, job: str | None = None) -> None:
        """Copy the artifact directory ``artifact_dir`` in under graph key ``key`` and record job key ``job``
        as compiled to it."""
        if not self.has(key):
            final = self._artifact(key)
            os.makedirs(os.path.dirname(final), exist_ok=True)
            tmp = f"{final}.{uuid.uuid4().hex}.tmp"
            shutil.copytree(artifact_dir, tmp)
            try:
                os.replace(tmp, final)
            except OSError:   # another worker stored the same graph first: theirs is equal
                shutil.rmtree(tmp, ignore_errors=True)
        if job is not None:
            jobs = os.path.join(self.root, "jobs")
            os.makedirs(jobs, exist_ok=True)
            tmp = os.path.join(jobs, f".{job}.{uuid.uuid4().hex}.tmp")
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump({"graph": key}, f)
            os.replace(tmp, os.path.join(jobs, f"{job}.json"))

    def fetch(self, key: str, dest: str) -> None:
        """Copy the artifact (or shared store) of graph key ``key`` to ``dest``, replacing in one step what is
        there only when it is empty or the same kind of fxopt output (never a user's files)."""
        from fxopt.backends import shared_store  # local: the CLI registers the fleet command before torch loads
        from fxopt.backends.base import atomic_directory

        source = self._artifact(key)
        store = os.path.isfile(os.path.join(source, "store.json"))
        kwargs = ({"marker": "store.json", "what": "an fxopt shared store", "fmt": shared_store.STORE_FORMAT}
                  if store else {})
        with atomic_directory(dest, **kwargs) as tmp:
            shutil.copytree(source, tmp, dirs_exist_ok=True)
