"""A content-addressed cache of compiled artifacts in a directory, shared by ``fxopt run`` and every
``fxopt fleet`` worker.

Two keys per model (sha256 hex digests):

- the **job key**, known before capture, for models whose whole source can be named: a ``.pt2`` or
  ``.onnx`` file (its bytes) or ``zoo:NAME`` (fxopt's code); plus the run's options (small, inputs, batch,
  ...), the pass spec, the backend, and the versions of fxopt (its code, hashed), torch and the backend's
  libraries. A hit skips everything, capture included. A ``file.py:Attr`` or ``module:Attr`` model gets no
  job key: its code may import other files that change without its own bytes changing, so it is always
  captured and found by its graph key.
- the **graph key**, known after capture: the captured graph's structure and every weight's content
  (:func:`fxopt.ir.structure.graph_key`), the example inputs' shapes and dtypes, the pass spec, the backend
  and the versions. Two fleet entries holding the same model (a tower shared by two rankers, one model under
  two names) compile once.

Layout::

    CACHE/artifacts/<graph key>/   an artifact directory, copied in whole or not at all
    CACHE/artifacts/<graph key>.sha256   the digest of its files, checked on every copy out
    CACHE/jobs/<job key>.json      {"graph": <graph key>, "name": the program's name}

Entries are written to a temporary name and renamed, so concurrent workers never see half an artifact; two
workers that compile the same graph at once both write, and one rename wins (the entries are equal). A copy
out whose files do not match the recorded digest (a damaged or edited entry) is refused, and the caller
compiles instead.
"""
from __future__ import annotations

# local imports: torch and the backends load only when a key or an artifact is needed (callers import this module only to use a cache)

import contextlib
import functools
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import shutil
import uuid
from typing import Any

from fxopt.ir.files import file_sha256, write_text_atomic

__all__ = ["Cache", "job_key", "graph_key", "versions", "source_identity", "default_cache_dir", "digest",
           "tree_digest"]

_PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_BACKEND_LIBRARIES = {"xla": ("jax", "jaxlib"), "tensorrt": ("onnx", "onnxruntime", "onnxscript"),
                      "neuron": (), "reference": ()}


def digest(value: Any) -> str:
    """The sha256 hex digest of ``value`` as canonical JSON."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


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
                h.update(file_sha256(path).encode())
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
    """A digest of everything model spec ``spec`` runs, when that can be named without running it: the
    file's bytes for ``x.pt2`` and ``x.onnx``, fxopt's code for ``zoo:NAME``. None otherwise (``file.py:Attr``
    and ``module:Attr`` may import code that changes on its own)."""
    if spec.startswith("zoo:"):
        return digest({"zoo": spec, "code": _fxopt_code()})
    if spec.endswith((".pt2", ".onnx")) and os.path.isfile(spec):
        return digest({"file": file_sha256(spec)})
    return None


def job_key(spec: str, options: dict, passes: str, backend: str, backend_versions: dict) -> str | None:
    """The job key of model ``spec`` run with ``options`` (a JSON-able dict of what else shapes the artifact),
    pipeline text ``passes`` and ``backend``; None when the source cannot be named (:func:`source_identity`)."""
    source = source_identity(spec)
    if source is None:
        return None
    return digest({"source": source, "options": options, "passes": passes, "backend": backend,
                   "versions": backend_versions})


def tree_digest(directory: str) -> str:
    """The sha256 of every file under ``directory``: names (relative) and contents, in sorted order."""
    h = hashlib.sha256()
    for folder, dirs, files in os.walk(directory):
        dirs.sort()
        for name in sorted(files):
            path = os.path.join(folder, name)
            h.update(os.path.relpath(path, directory).encode() + b"\0" + file_sha256(path).encode())
    return h.hexdigest()


def default_cache_dir() -> str:
    """``$FXOPT_CACHE_DIR``, else ``$XDG_CACHE_HOME/fxopt/compile``, else ``~/.cache/fxopt/compile``."""
    if os.environ.get("FXOPT_CACHE_DIR"):
        return os.environ["FXOPT_CACHE_DIR"]
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "fxopt", "compile")


def graph_key(program, passes: str, backend: str, backend_versions: dict, options: dict | None = None) -> str:
    """The graph key of a captured ``program`` compiled with ``passes`` and ``backend`` (and ``options``: what
    else shapes the artifact, JSON-able)."""
    import torch  # local: the CLI registers the fleet command before torch loads

    from fxopt.ir.structure import graph_key as structure_key

    inputs = [(str(t.dtype), tuple(t.shape)) if isinstance(t, torch.Tensor) else repr(t)
              for t in program.flat_example_inputs()]
    return digest({"graph": repr(structure_key(program.graph_module)), "inputs": inputs,
                    "in_spec": repr(program.in_spec), "out_spec": repr(program.out_spec),
                    "passes": passes, "backend": backend, "versions": backend_versions, "options": options})


def _link_or_copy(src: str, dst: str) -> str:
    """A hard link when ``src`` and ``dst`` share a filesystem (no second copy of the weights on disk), else a
    copy. Artifacts are replaced by renaming a new directory over the old, never edited in place, so linked
    files stay as stored (and the digest check on every copy out catches one that did not)."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)
    return dst


def _entry_bytes(path: str) -> int:
    total = 0
    for folder, _, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.stat(os.path.join(folder, name)).st_size
    return total


#: The cache's size limit when ``FXOPT_CACHE_MAX_GB`` is not set; the least recently used entries go first.
DEFAULT_MAX_GB = 20.0


class Cache:
    """The cache directory ``root`` (created on first write), holding at most ``max_bytes`` (default:
    ``$FXOPT_CACHE_MAX_GB`` GB, else :data:`DEFAULT_MAX_GB`) of artifacts."""

    def __init__(self, root: str, max_bytes: float | None = None):
        self.root = os.path.abspath(root)
        if max_bytes is None:
            try:
                max_bytes = float(os.environ.get("FXOPT_CACHE_MAX_GB", DEFAULT_MAX_GB)) * 1e9
            except ValueError:
                max_bytes = DEFAULT_MAX_GB * 1e9
        self.max_bytes = max_bytes

    def _artifact(self, key: str) -> str:
        return os.path.join(self.root, "artifacts", key)

    def job(self, key: str | None) -> dict | None:
        """``{"graph": graph key, "name": program name}`` that job key ``key`` was compiled as, when its
        artifact is still in the cache; else None."""
        if key is None:
            return None
        try:
            with open(os.path.join(self.root, "jobs", f"{key}.json"), encoding="utf-8") as f:
                record = json.load(f)
        except (OSError, ValueError):
            return None
        if not isinstance(record, dict) or not isinstance(record.get("graph"), str) or not self.has(record["graph"]):
            return None
        return record

    def graph_for_job(self, key: str | None) -> str | None:
        """The graph key a job key was compiled as, when its artifact is still in the cache."""
        record = self.job(key)
        return record["graph"] if record else None

    def has(self, key: str) -> bool:
        """Whether an artifact is stored under graph key ``key`` (with its digest)."""
        entry = self._artifact(key)
        return os.path.isfile(f"{entry}.sha256") and (os.path.isfile(os.path.join(entry, "manifest.json")) or
                                                     os.path.isfile(os.path.join(entry, "store.json")))

    def store(self, key: str, artifact_dir: str, job: str | None = None, name: str | None = None) -> None:
        """Copy the artifact directory ``artifact_dir`` in under graph key ``key`` and record job key ``job``
        (of a program called ``name``) as compiled to it."""
        if not self.has(key):
            final = self._artifact(key)
            os.makedirs(os.path.dirname(final), exist_ok=True)
            tmp = f"{final}.{uuid.uuid4().hex}.tmp"
            shutil.copytree(artifact_dir, tmp, copy_function=_link_or_copy)
            files = tree_digest(tmp)
            try:
                os.replace(tmp, final)
            except OSError:   # another worker stored the same graph first: theirs is equal
                shutil.rmtree(tmp, ignore_errors=True)
            else:
                write_text_atomic(f"{final}.sha256", files)
                self.evict(keep=key)
        self.record(job, key, name)

    def evict(self, keep: str | None = None) -> list[str]:
        """Remove the least recently used entries (by their digest file's time, refreshed on every copy out)
        until the artifacts fit in ``max_bytes``; never ``keep``. Returns the graph keys removed."""
        folder = os.path.join(self.root, "artifacts")
        entries = []
        for name in os.listdir(folder) if os.path.isdir(folder) else ():
            if name.endswith(".sha256") and os.path.isdir(os.path.join(folder, name[:-7])):
                key = name[:-7]
                with contextlib.suppress(OSError):
                    entries.append((os.stat(os.path.join(folder, name)).st_mtime, key,
                                    _entry_bytes(os.path.join(folder, key))))
        total = sum(size for _, _, size in entries)
        removed = []
        for _, key, size in sorted(entries):
            if total <= self.max_bytes:
                break
            if key == keep:
                continue
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(folder, f"{key}.sha256"))
            shutil.rmtree(os.path.join(folder, key), ignore_errors=True)
            total -= size
            removed.append(key)
        return removed

    def record(self, job: str | None, key: str, name: str | None = None) -> None:
        """Record job key ``job`` (None: nothing to record) as compiled to graph key ``key``."""
        if job is not None:
            jobs = os.path.join(self.root, "jobs")
            os.makedirs(jobs, exist_ok=True)
            write_text_atomic(os.path.join(jobs, f"{job}.json"), json.dumps({"graph": key, "name": name}))

    def fetch(self, key: str, dest: str) -> None:
        """Copy the artifact (or shared store) of graph key ``key`` to ``dest``, replacing in one step what is
        there only when it is empty or the same kind of fxopt output (never a user's files)."""
        from fxopt.backends import shared_store  # local: the CLI registers the fleet command before torch loads
        from fxopt.backends.base import atomic_directory

        source = self._artifact(key)
        store = os.path.isfile(os.path.join(source, "store.json"))
        kwargs = ({"marker": "store.json", "what": "an fxopt shared store", "fmt": shared_store.STORE_FORMAT}
                  if store else {})
        from fxopt.errors import InputError

        with open(f"{source}.sha256", encoding="utf-8") as f:
            recorded = f.read().strip()
        with contextlib.suppress(OSError):
            os.utime(f"{source}.sha256")   # recently used: evicted last
        with atomic_directory(dest, **kwargs) as tmp:
            shutil.copytree(source, tmp, dirs_exist_ok=True, copy_function=_link_or_copy)
            if tree_digest(tmp) != recorded:
                raise InputError(f"compile cache entry {key[:12]} in {self.root} does not match its digest "
                                 f"(damaged or edited); delete it, or run with --no-cache")
