"""Several reference artifacts saved together around one shared weight store.

:func:`save_many` writes::

    out/
      store.json             {"format": "fxopt-shared-store", "version": 1, "weights": "weights.safetensors",
                              "artifacts": ["ranker", "moderation"], "tensors": N, "bytes": ...}
      weights.safetensors    every distinct tensor of every artifact, once (key: "t" + content hash)
      ranker/manifest.json   an ordinary artifact manifest, backend "reference-shared", whose partition
      ranker/graph.json      names the store ("shared_store": "../weights.safetensors"); the graph document's
      ranker/trace.json      tensor keys are store keys
      moderation/...

:func:`load_many` reads the store once and rebuilds every artifact from it, so equal weights of different
artifacts are one tensor in memory (same ``data_ptr``). Loading a single member with
:func:`load_member` (or ``fxopt.load`` once ``reference-shared`` is registered as a backend) shares the
store with any other member loaded from the same, unchanged file while both are alive.

Nothing is unpickled or evaluated: JSON, safetensors, and :func:`fxopt.ir.serialize.dict_to_graph`.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import weakref
from typing import Any, Iterable

import torch
from safetensors.torch import load_file, save_file

from fxopt.backends.base import (ARTIFACT_FORMAT, BackendDefaults, Compiled, artifact_problem, atomic_directory,
                                 common_kwargs, read_manifest, read_trace, write_json, write_trace)
from fxopt.backends.reference import ReferenceCompiled
from fxopt.errors import InputError
from fxopt.ir import serialize
from fxopt.ir.tensor_identity import TensorIndex, content_key, identity_key, tensor_bytes
from fxopt.backends.reference import ReferenceBackend

STORE_FORMAT = "fxopt-shared-store"
STORE_VERSION = 1
WEIGHTS_FILE = "weights.safetensors"
STORE_LINK = "../" + WEIGHTS_FILE
BACKEND = "reference-shared"
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*\Z")


# ============================================================================================== saving
def _member_names(compiled_list: list, names: Iterable[str] | None) -> list[str]:
    if names is not None:
        names = list(names)
        if len(names) != len(compiled_list):
            raise InputError(f"save_many: {len(names)} names for {len(compiled_list)} artifacts; give one each")
    else:
        names = [f"{i}_{re.sub(r'[^A-Za-z0-9_.-]', '_', c.name or 'model')}" for i, c in enumerate(compiled_list)]
    for n in names:
        if not isinstance(n, str) or not _NAME.match(n) or n in (WEIGHTS_FILE, "store.json"):
            raise InputError(f"save_many: artifact name {n!r} is not a plain directory name; use letters, "
                             "digits, '_', '-' or '.'")
    if len(set(names)) != len(names):
        raise InputError("save_many: two artifacts have the same name; give distinct names")
    return names


def _store_key(t: torch.Tensor) -> str:
    """The store's key of a tensor: ``"t"`` + a hash of its dtype, shape, strides and bytes."""
    return "t" + hashlib.blake2b(repr(content_key(t)).encode(), digest_size=16).hexdigest()


def _retarget(module_doc: dict, mapping: dict[str, str]) -> None:
    for spec in module_doc["attributes"].values():
        spec["tensor"] = mapping[spec["tensor"]]
    for sub in module_doc["submodules"].values():
        _retarget(sub, mapping)


def save_many(compiled_list: Iterable[Compiled], directory: str, names: Iterable[str] | None = None) -> dict:
    """Save reference artifacts (``fxopt.compile(p, "reference")``) into ``directory`` around one shared
    weight store holding each distinct tensor once.

    ``names`` are the members' directory names (default ``"<i>_<program name>"``). Writes atomically (temp
    directory + rename; an existing directory is replaced only if it is empty or a shared store). Returns
    ``{"directory", "artifacts": [names], "tensors", "store_bytes" (tensor bytes in the store),
    "separate_bytes" (what the artifacts' own weight files would hold, summed)}``. Raises
    :class:`InputError` for a non-reference artifact, bad names or an unusable directory.
    """
    compiled_list = list(compiled_list)
    if not compiled_list:
        raise InputError("save_many: no artifacts given")
    for i, c in enumerate(compiled_list):
        if not isinstance(c, ReferenceCompiled):
            raise InputError(f"save_many: artifact {i} is a {type(c).__name__}; only reference artifacts "
                             "(fxopt.compile(program, 'reference')) can share a weight store")
    names = _member_names(compiled_list, names)
    index = TensorIndex()
    store: dict[str, torch.Tensor] = {}
    store_key: dict[tuple, str] = {}
    storages: set[int] = set()
    docs = []
    separate = 0
    for c in compiled_list:
        doc, tensors = serialize.graph_to_dict(c.graph_module)
        mapping = {}
        for local, t in tensors.items():
            separate += tensor_bytes(t)
            kept = index.canonical(t)
            ident = identity_key(kept)
            if ident not in store_key:
                key = _store_key(kept)
                if kept.numel() and kept.untyped_storage().data_ptr() in storages:
                    kept = kept.clone()  # another view of a saved storage: safetensors needs its own copy
                storages.add(kept.untyped_storage().data_ptr())
                store_key[ident] = key
                store[key] = kept
            mapping[local] = store_key[ident]
        doc["tensors"] = {mapping[k]: v for k, v in doc["tensors"].items()}
        _retarget(doc["graph"], mapping)
        docs.append(doc)

    directory = os.path.abspath(os.fspath(directory))
    store_bytes = sum(tensor_bytes(t) for t in store.values())
    with atomic_directory(directory, marker="store.json", what="an fxopt shared store", fmt=STORE_FORMAT) as tmp:
        save_file(dict(sorted(store.items())), os.path.join(tmp, WEIGHTS_FILE), metadata={"format": "pt"})
        for name, c, doc in zip(names, compiled_list, docs):
            member = os.path.join(tmp, name)
            os.makedirs(member)
            with open(os.path.join(member, "graph.json"), "w", encoding="utf-8", newline="\n") as f:
                json.dump(doc, f, indent=1, sort_keys=True, allow_nan=False, ensure_ascii=True)
                f.write("\n")
            _write_member_manifest(c, member)
        write_json(os.path.join(tmp, "store.json"), {
            "format": STORE_FORMAT, "version": STORE_VERSION, "weights": WEIGHTS_FILE, "artifacts": names,
            "tensors": len(store), "bytes": store_bytes,
        })
    return {"directory": directory, "artifacts": names, "tensors": len(store), "store_bytes": store_bytes,
            "separate_bytes": separate}


def _write_member_manifest(c: ReferenceCompiled, member: str) -> None:
    partitions = [{
        "name": "main",
        "device": "cpu",
        "runtime": "pytorch-eager",
        "files": ["graph.json", STORE_LINK],
        "shared_store": STORE_LINK,
        "steps": {
            "done_here": ["graph serialized", "weights saved once in the shared store (safetensors)",
                          "runs with PyTorch eager"],
            "left_for_target": [],
        },
    }]
    manifest = c.manifest(partitions)
    manifest["backend"] = BACKEND
    write_json(os.path.join(member, "manifest.json"), manifest)
    if c.trace is not None:
        write_trace(member, c.trace)


# ============================================================================================== loading
class _Store:
    """The tensors of one weights file, kept alive by every artifact built from them."""

    def __init__(self, tensors: dict[str, torch.Tensor]) -> None:
        self.tensors = tensors


_OPEN_STORES: "weakref.WeakValueDictionary[tuple, _Store]" = weakref.WeakValueDictionary()


def _open_store(path: str) -> _Store:
    path = os.path.realpath(path)
    if not os.path.isfile(path):
        raise InputError(f"{path}: the shared weight store is missing; copy the whole store directory")
    st = os.stat(path)
    key = (path, st.st_mtime_ns, st.st_size)
    store = _OPEN_STORES.get(key)
    if store is None:
        try:
            tensors = load_file(path)
        except Exception as exc:  # safetensors raises its own error type for corrupt files
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise InputError(f"{path} could not be read ({reason}); save the store again") from None
        store = _Store(tensors)
        _OPEN_STORES[key] = store
    return store


def _read_json(path: str) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return serialize.parse_json(f.read(), os.path.basename(path))
    except FileNotFoundError:
        raise InputError(f"{path} does not exist; save the store with save_many") from None
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(f"{path} is not readable JSON ({reason}); the file is corrupt") from None


def load_member(directory: str, manifest: dict | None = None) -> ReferenceCompiled:
    """Load one artifact saved by :func:`save_many` (its own directory, inside the store directory).

    Returns a callable :class:`ReferenceCompiled` whose weights are views of the shared store (one copy in
    memory for every member loaded from the same file). Raises :class:`InputError` naming the file when
    anything is missing or corrupt."""
    directory = os.fspath(directory)
    manifest = manifest if manifest is not None else read_manifest(directory)
    if manifest.get("format") != ARTIFACT_FORMAT or manifest.get("backend") != BACKEND:
        raise InputError(f"{directory}: not a shared-store artifact (backend {manifest.get('backend')!r}); "
                         "load it with fxopt.load")
    parts = manifest.get("partitions") or [{}]
    if parts[0].get("shared_store") != STORE_LINK:
        raise InputError(f"{directory}: manifest names store {parts[0].get('shared_store')!r}; expected "
                         f"'{STORE_LINK}' — the file is corrupt")
    group = os.path.dirname(os.path.abspath(directory))
    problem = artifact_problem(group, "store.json", STORE_FORMAT)
    if problem is not None:   # the member's link leads to a folder that is not its store: refuse to read it
        raise InputError(f"{directory}: its parent folder is not the fxopt shared store it links to ({problem}); "
                         "copy the whole store directory")
    store = _open_store(serialize.plain_file(group, WEIGHTS_FILE, "shared weight store"))
    json_path = serialize.plain_file(directory, "graph.json", "graph file")
    doc = _read_json(json_path)
    try:
        gm = serialize.dict_to_graph(doc, store.tensors)
    except InputError as exc:
        raise InputError(f"{json_path}: {exc}") from exc
    compiled = ReferenceCompiled(gm, **common_kwargs(manifest))
    compiled.backend = BACKEND
    compiled.store = store  # keeps the shared tensors (and the cache entry) alive
    compiled.trace = read_trace(directory)
    return compiled


def load_many(directory: str) -> dict[str, ReferenceCompiled]:
    """Load every artifact of a store saved by :func:`save_many`; returns ``{name: compiled}`` in saved order.
    The weights file is read once: equal weights of different artifacts share memory (same ``data_ptr``)."""
    directory = os.fspath(directory)
    meta = _read_json(serialize.plain_file(directory, "store.json", "store index"))
    if not isinstance(meta, dict) or meta.get("format") != STORE_FORMAT:
        raise InputError(f"{directory}: not an fxopt shared store (store.json format is not '{STORE_FORMAT}')")
    if meta.get("version") != STORE_VERSION:
        raise InputError(f"{directory}: shared store version {meta.get('version')!r} is not supported "
                         f"(this fxopt reads {STORE_VERSION})")
    if meta.get("weights") != WEIGHTS_FILE:
        raise InputError(f"{directory}: store.json names weights {meta.get('weights')!r}; expected "
                         f"'{WEIGHTS_FILE}' — the file is corrupt")
    names = meta.get("artifacts")
    if not isinstance(names, list) or not all(isinstance(n, str) and _NAME.match(n) for n in names):
        raise InputError(f"{directory}: store.json has a malformed artifact list; the file is corrupt")
    return {name: load_member(os.path.join(directory, name)) for name in names}


class SharedReferenceBackend(BackendDefaults):
    """Loads members of a shared store through ``fxopt.load`` (register as ``"reference-shared"``).
    Compiling goes through the ``reference`` backend; sharing happens at :func:`save_many`."""

    name = BACKEND
    target = "reference"

    def compile(self, program):
        """Compile ``program`` with the reference backend (sharing is decided when saving)."""
        return ReferenceBackend().compile(program)

    def load(self, directory: str, manifest: dict) -> ReferenceCompiled:
        """Rebuild the member artifact in ``directory`` (see :func:`load_member`)."""
        return load_member(directory, manifest)
