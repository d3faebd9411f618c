"""A persistent XLA compilation cache, so that a loaded artifact's first call does not recompile what an
earlier process on this machine already compiled.

JAX's persistent compilation cache stores each executable under a key of the StableHLO module, the compile
options, the jax/jaxlib versions, the backend and ``XLA_FLAGS``. fxopt turns it on when an XLA partition is
built or loaded (unless the user set ``jax_compilation_cache_dir`` already, which is then used as is), in

- ``$FXOPT_XLA_CACHE`` when set (``off`` turns the cache off), else
- ``$XDG_CACHE_HOME/fxopt/xla/<host>`` (``~/.cache/...`` without XDG_CACHE_HOME), where ``<host>`` is a
  digest of this CPU's model and feature flags: an XLA:CPU executable is machine code for the CPU that built
  it, and a home directory shared between machines must not hand an AVX-512 executable to a CPU without it.

:func:`compile_counted` tells whether a compile was served from the cache.

JAX's cache skips XLA's compile but not the lowering of a loaded ``jax.export`` module back to StableHLO
(0.2 s of the 0.3 s a cached first call of zoo:ranking took). For loaded artifacts fxopt therefore also keeps
the compiled executable itself (:func:`load_executable` / :func:`store_executable`, JAX's
``serialize_executable``), keyed by a digest of the exported module's bytes, the input signature, the
jax/jaxlib versions, the host key and ``XLA_FLAGS``: a cached first call then costs the executable's
deserialization (0.04 s for zoo:ranking). Only executables XLA compiled in this process are stored: one JAX
read back from its own cache lacks the function library XLA:CPU links into it, and stored again it fails
when run ("NOT_FOUND: Function wrapped_iota not found", seen in CI on 2026-12-02). An entry that fails on its
first run anyway is dropped and the partition compiled again (one log line), so a bad entry costs a compile,
never a failed call.

Trust: both caches hold machine code, and fxopt's entries are pickles (what ``serialize_executable``
writes). The cache is the user's own, like a build cache: fxopt creates its directory with mode 0700 and
reads an entry only from a directory owned by this user that nobody else can write; otherwise the cache is
off for the process (one log line). An artifact never carries executables: a loaded artifact is compiled
here, or served from what this user's own processes compiled.
"""
from __future__ import annotations

import hashlib
import logging
import os
import platform
import stat
import tempfile
import threading
import time
from typing import Any, Callable

ENV = "FXOPT_XLA_CACHE"
_HITS = "/jax/compilation_cache/cache_hits"
_MISSES = "/jax/compilation_cache/cache_misses"
_LOG = logging.getLogger("fxopt.xla")
_lock = threading.Lock()
_state: dict[str, Any] = {"enabled": None, "dir": None, "hits": 0, "misses": 0}


def host_key() -> str:
    """A short digest of this CPU's model name and feature flags (``/proc/cpuinfo``; the platform string
    where there is none)."""
    text = platform.machine() + platform.processor()
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()
        model = next((ln for ln in lines if ln.startswith("model name")), "")
        flags = next((ln for ln in lines if ln.startswith(("flags", "Features"))), "")
        text += model + " ".join(sorted(flags.split()))
    except OSError:
        pass
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def default_dir() -> str | None:
    """Where the cache lives (see the module docstring); None when ``$FXOPT_XLA_CACHE`` is ``off``."""
    value = os.environ.get(ENV, "").strip()
    if value.lower() in ("off", "0", "false", "no"):
        return None
    if value:
        return value
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "fxopt", "xla", host_key())


def _private(directory: str) -> bool:
    """Create ``directory`` (mode 0700) if needed; True when it is a real directory owned by this user that
    no one else can write (else the cache stays off, with one log line)."""
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
        st = os.lstat(directory)
    except OSError as exc:
        _LOG.warning("fxopt: XLA compile cache off: cannot create %s (%s)", directory, exc.strerror)
        return False
    if not stat.S_ISDIR(st.st_mode) or (hasattr(os, "getuid") and st.st_uid != os.getuid()) \
            or st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        _LOG.warning("fxopt: XLA compile cache off: %s is not a private directory of this user (it holds "
                     "machine code; chmod 700 it or set %s)", directory, ENV)
        return False
    return True


def enable() -> str | None:
    """Turn the persistent cache on once per process; returns its directory (None when off)."""
    with _lock:
        if _state["enabled"] is not None:
            return _state["dir"]
        import jax  # local: jax is the xla backend's optional dependency

        directory = jax.config.jax_compilation_cache_dir or default_dir()
        if directory and not _private(directory):
            directory = None
        if directory and not jax.config.jax_compilation_cache_dir:
            jax.config.update("jax_compilation_cache_dir", directory)
            jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
            jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
        from jax import monitoring  # local: as above

        monitoring.register_event_listener(_on_event)
        _state["enabled"], _state["dir"] = bool(directory), directory
        return directory


def _on_event(event: str, **_kwargs: Any) -> None:
    if event == _HITS:
        _state["hits"] += 1
    elif event == _MISSES:
        _state["misses"] += 1


def compile_counted(compile_fn: Callable[[], Any]) -> tuple[Any, dict]:
    """Run ``compile_fn()`` (an XLA compile); returns its result and ``{"seconds", "cache"}`` where cache is
    ``"hit"`` (served from the persistent cache), ``"miss"`` (compiled and stored) or ``"off"``."""
    directory = enable()
    hits = _state["hits"]
    t0 = time.perf_counter()
    result = compile_fn()
    seconds = time.perf_counter() - t0
    if not directory:
        outcome = "off"
    else:
        outcome = "hit" if _state["hits"] > hits else "miss"
    return result, {"seconds": seconds, "cache": outcome, "dir": directory}


def describe(event: dict, partition: str) -> str:
    """One line for a compile event: whether XLA compiled the partition or reused a cached executable."""
    if event["cache"] == "hit":
        return (f"xla partition '{partition}': reused the executable compiled earlier on this machine "
                f"({event['seconds']:.2f} s, cache {event['dir']})")
    where = f"; stored in {event['dir']}" if event["cache"] == "miss" else " (persistent cache off)"
    return f"xla partition '{partition}': compiled in {event['seconds']:.2f} s{where}"


# ------------------------------------------------------------------------------------------ executables
def executable_key(module_bytes: bytes, arrays: list) -> str:
    """The cache key of a loaded module's executable for the input ``arrays`` (see the module docstring)."""
    import jax  # local: as above
    import jaxlib  # local: as above

    h = hashlib.sha256(bytes(module_bytes))
    for a in arrays:
        h.update(f"|{tuple(a.shape)}:{a.dtype}".encode())
    h.update(f"|jax {jax.__version__} jaxlib {jaxlib.__version__} x64 {jax.config.jax_enable_x64} "
             f"host {host_key()} XLA_FLAGS {os.environ.get('XLA_FLAGS', '')} "
             f"platform {jax.default_backend()}".encode())
    return h.hexdigest()


def _entry_path(key: str) -> str | None:
    directory = enable()
    return os.path.join(directory, f"fxopt-exe-{key}.bin") if directory else None


def load_executable(key: str, in_tree: Any, out_tree: Any) -> Any | None:
    """The executable stored under ``key`` (loaded onto the default device), or None when there is none,
    the cache is off, or the entry cannot be read (a stale entry is ignored, not an error)."""
    path = _entry_path(key)
    if path is None or not os.path.isfile(path):
        return None
    from jax.experimental import serialize_executable  # local: as above

    try:
        with open(path, "rb") as f:
            payload = f.read()
        return serialize_executable.deserialize_and_load(payload, in_tree, out_tree)
    except Exception as exc:  # noqa: BLE001 - a corrupt or incompatible entry: compile instead
        _LOG.info("fxopt: ignoring unreadable XLA cache entry %s (%s)", path, type(exc).__name__)
        return None


def store_executable(key: str, executable: Any) -> None:
    """Store ``executable`` under ``key`` (atomically, mode 0600); a failure to write only loses the cache."""
    path = _entry_path(key)
    if path is None:
        return
    from jax.experimental import serialize_executable  # local: as above

    try:
        payload, _, _ = serialize_executable.serialize(executable)
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".tmp-")
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
        os.replace(tmp, path)
    except Exception as exc:  # noqa: BLE001 - e.g. a full disk: the next process compiles again
        _LOG.info("fxopt: could not store the XLA executable in the cache (%s)", type(exc).__name__)


def drop_executable(key: str) -> None:
    """Remove the entry stored under ``key`` (one that failed to run); missing entries are fine."""
    path = _entry_path(key)
    if path is not None:
        try:
            os.remove(path)
        except OSError:
            pass
