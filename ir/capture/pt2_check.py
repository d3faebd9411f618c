"""Reading a ``.pt2`` file without running code from it.

``torch.export.load`` (torch 2.13) reads parts of the archive with a full unpickler (``weights_only=False``):
weights and constants stored "with pickle", custom and opaque objects, and — when a stricter read fails —
the sample inputs and the legacy ``.pt`` members. A pickle can run any code while it loads (a
``__reduce__`` that calls ``os.system``). So before fxopt hands a ``.pt2`` to torch, :func:`check_archive`
reads every member torch would unpickle with PyTorch's restricted unpickler (``torch.load(...,
weights_only=True)``, which admits only tensors, containers and a fixed list of safe classes and never calls
anything else); a member it refuses is one only a full unpickler reads, and the file is refused with one line
— unless the user says the file is trusted (``capture(..., trust_pickle=True)``, ``--trust-pickle``). A
stream the restricted unpickler accepts references nothing outside its allowlist, so torch's full unpickler
then runs nothing else on it.
"""
from __future__ import annotations

import io
import json
import os
import re
import zipfile

import torch

from fxopt.errors import InputError

# Constants torch.export.load reads with a full unpickler (or the TorchScript one) whatever they hold.
_ALWAYS_PICKLED = ("custom_obj", "opaque_obj")


def _restricted_load_fails(data: bytes) -> str | None:
    """None when PyTorch's weights-only unpickler reads ``data``, else why not (one line)."""
    try:
        torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")
    except Exception as exc:  # noqa: BLE001 - any refusal means the member needs the full unpickler
        found = re.search(r"Unsupported (global|operand)[^.]*?(GLOBAL \S+|\S+)(?= was not|\.|$)", str(exc))
        if found:
            return f"it references {found.group(2).removeprefix('GLOBAL ')}"
        text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).strip().splitlines()
        return (text[-1] if text else type(exc).__name__)[:120]
    return None


def _pickled_by_config(z: zipfile.ZipFile, names: list[str]) -> list[str]:
    """Members that a weights/constants payload config marks ``use_pickle``."""
    out = []
    for name in names:
        if not name.endswith("_config.json") or "/data/" not in f"/{name}":
            continue
        try:
            config = json.loads(z.read(name)).get("config", {})
        except (ValueError, AttributeError, KeyError):
            continue
        folder = name.rsplit("/", 1)[0]
        for entry in config.values() if isinstance(config, dict) else []:
            if isinstance(entry, dict) and entry.get("use_pickle") and isinstance(entry.get("path_name"), str):
                out.append(f"{folder}/{entry['path_name']}")
    return out


def needs_pickle(path: str) -> list[tuple[str, str]]:
    """The members of ``.pt2`` archive ``path`` that only a full unpickler reads, as ``(member, why)``.
    InputError when the file is not a zip archive."""
    try:
        z = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise InputError(f"{path}: not a readable torch.export .pt2 file ({exc}); re-save it with "
                         "torch.export.save") from None
    with z:
        names = z.namelist()
        found = []
        for name in names:
            base = name.rsplit("/", 1)[-1]
            if "/data/constants/" in f"/{name}" and base.startswith(_ALWAYS_PICKLED):
                found.append((name, "a pickled custom object, which only a full unpickler reads"))
        candidates = [n for n in names if n.endswith((".pt", ".pkl"))] + _pickled_by_config(z, names)
        for name in dict.fromkeys(candidates):
            if name not in names:
                continue
            why = _restricted_load_fails(z.read(name))
            if why is not None:
                found.append((name, f"a pickle the restricted unpickler refuses ({why})"))
    return found


def check_archive(path: str, trust_pickle: bool = False) -> None:
    """Raise InputError (one line) when ``.pt2`` file ``path`` holds data only a full unpickler reads (which
    can run code), unless ``trust_pickle``."""
    if trust_pickle:
        return
    found = needs_pickle(path)
    if found:
        member, why = found[0]
        more = f" (+{len(found) - 1} more)" if len(found) > 1 else ""
        raise InputError(f"{path}: holds {os.path.basename(member)}, {why}{more}; unpickling can run code, so "
                         "fxopt refuses it — pass --trust-pickle (capture(..., trust_pickle=True)) only for a "
                         "file you trust as you would trust code")
