"""Device profiles in files: what ``fxopt calibrate`` writes and ``split{cpu_profile=FILE}`` (and ``profile=FILE``) read.

A profile file is JSON::

    {"format": "fxopt-device-profile", "version": 1,
     "profile": DeviceProfile.to_json(),
     "measurements": {...}}

``measurements`` is free-form (the calibration's per-op timings, for the record); only ``profile`` is read
back. :func:`load_profile` checks the file and raises :class:`fxopt.errors.InputError` with one line naming
the file and what to do; :func:`resolve_profile` takes either a built-in profile name or such a file.
"""
from __future__ import annotations

import json
import math
import os
from typing import Any, Mapping

from ..errors import InputError
from .devices import DeviceProfile, get_profile
from .files import write_text_atomic

__all__ = ["FORMAT", "VERSION", "save_profile", "load_profile", "resolve_profile", "is_profile_path"]

#: The ``format`` field of a profile file.
FORMAT = "fxopt-device-profile"
#: The file version this fxopt writes and reads.
VERSION = 1

_POSITIVE = ("peak_flops", "mem_bandwidth", "link_bandwidth")
_KINDS = ("cpu", "accelerator")
_REGENERATE = "rewrite it with `fxopt calibrate --device cpu --out FILE`"


def save_profile(profile: DeviceProfile, path: str | os.PathLike,
                 measurements: Mapping[str, Any] | None = None) -> str:
    """Write ``profile`` (and the ``measurements`` it came from, JSON-ready) to ``path`` as a profile file;
    returns the path written. The file is written whole or not at all (a temporary file renamed over it)."""
    path = os.fspath(path)
    data = {"format": FORMAT, "version": VERSION, "profile": profile.to_json(),
            "measurements": dict(measurements or {})}
    text = json.dumps(data, indent=1, sort_keys=True, allow_nan=False) + "\n"
    try:
        write_text_atomic(path, text)
    except OSError as exc:
        raise InputError(f"{path}: cannot write the device profile ({exc.strerror or exc}); "
                         f"give a writable path with --out") from None
    return path


def _number(path: str, profile: Mapping[str, Any], field: str, positive: bool) -> float:
    value = profile.get(field)
    if value is None:
        raise InputError(f"{path}: device profile lacks {field!r}; {_REGENERATE}")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InputError(f"{path}: device profile field {field!r} must be a finite number, got {value!r}; "
                         f"{_REGENERATE}")
    if positive and not value > 0:
        raise InputError(f"{path}: device profile field {field!r} must be positive, got {value!r}; {_REGENERATE}")
    if not positive and value < 0:
        raise InputError(f"{path}: device profile field {field!r} must be >= 0, got {value!r}; {_REGENERATE}")
    return float(value)


def load_profile(path: str | os.PathLike) -> DeviceProfile:
    """The DeviceProfile in the profile file at ``path`` (see the module docstring).

    Raises InputError (one line naming the file and what to do) for a missing or unreadable file, bad JSON,
    another format or a newer version, and a missing, non-numeric or out-of-range field (``peak_flops``,
    ``mem_bandwidth``, ``link_bandwidth`` > 0, ``link_latency`` >= 0, ``kind`` "cpu" or "accelerator";
    ``memory_bytes``, optional, > 0).
    """
    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        raise InputError(f"{path}: no such device profile file; write one with "
                         f"`fxopt calibrate --device cpu --out {path}` or name a built-in profile") from None
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc).splitlines()[0]
        raise InputError(f"{path}: cannot read the device profile ({reason}); check the path") from None
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise InputError(f"{path}: not a JSON device profile ({str(exc).splitlines()[0]}); {_REGENERATE}") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise InputError(f"{path}: not an fxopt device profile (no \"format\": \"{FORMAT}\"); {_REGENERATE}")
    version = data.get("version")
    if isinstance(version, bool) or not isinstance(version, int):
        raise InputError(f"{path}: device profile has no integer \"version\"; {_REGENERATE}")
    if version > VERSION:
        raise InputError(f"{path}: device profile version {version} is newer than this fxopt reads ({VERSION}); "
                         f"upgrade fxopt or {_REGENERATE}")
    if version < 1:
        raise InputError(f"{path}: device profile version {version} is not valid; {_REGENERATE}")
    profile = data.get("profile")
    if not isinstance(profile, dict):
        raise InputError(f"{path}: device profile file lacks the \"profile\" object; {_REGENERATE}")

    name = profile.get("name")
    if not isinstance(name, str) or not name.strip():
        raise InputError(f"{path}: device profile lacks a 'name'; {_REGENERATE}")
    kind = profile.get("kind")
    if kind not in _KINDS:
        raise InputError(f"{path}: device profile field 'kind' must be one of {', '.join(_KINDS)}, got {kind!r}; "
                         f"{_REGENERATE}")
    figures = {field: _number(path, profile, field, positive=True) for field in _POSITIVE}
    figures["link_latency"] = _number(path, profile, "link_latency", positive=False)
    fp32 = None
    if profile.get("peak_flops_fp32") is not None:
        fp32 = _number(path, profile, "peak_flops_fp32", positive=True)
    memory = None
    if profile.get("memory_bytes") is not None:   # optional: files written before it was modelled lack it
        memory = _number(path, profile, "memory_bytes", positive=True)
    precision = profile.get("precision", "fp32")
    description = profile.get("description", "")
    for field, value in (("precision", precision), ("description", description)):
        if not isinstance(value, str):
            raise InputError(f"{path}: device profile field {field!r} must be a string, got {value!r}; "
                             f"{_REGENERATE}")
    return DeviceProfile(name=name, kind=kind, precision=precision, peak_flops_fp32=fp32,
                         description=description, memory_bytes=memory, **figures)


def is_profile_path(spec: str) -> bool:
    """Whether a profile spec names a file rather than a built-in profile: it contains a path separator or
    ends in ``.json``."""
    text = str(spec).strip()
    return "/" in text or os.sep in text or text.lower().endswith(".json")


def resolve_profile(spec: str | os.PathLike | DeviceProfile) -> DeviceProfile:
    """A DeviceProfile from a built-in name (``"cpu"``, ``"inf2"``..., via :func:`get_profile`) or from a
    profile file (a spec containing ``/`` or ending in ``.json``, via :func:`load_profile`); a DeviceProfile
    is returned unchanged. Raises InputError for an unknown name or a bad file."""
    if isinstance(spec, DeviceProfile):
        return spec
    if isinstance(spec, os.PathLike):
        return load_profile(spec)
    text = str(spec).strip()
    if is_profile_path(text):
        return load_profile(text)
    return get_profile(text)
