"""Writing an output directory so that nothing of the user's is lost and a reader never sees half of it.

``-o DIR`` replaces ``DIR`` only when it is absent, empty, or already holds output of the same kind (a
manifest that parses as an fxopt artifact, with its format and version keys; a web app's own
``manifest.json`` is not one). The new output is written into a temporary directory beside ``DIR``
(``.fxopt-tmp-<name>-*``) and appears in one step:

* ``DIR`` absent: ``rename(tmp, DIR)``;
* ``DIR`` present: ``renameat2(tmp, DIR, RENAME_EXCHANGE)`` swaps the two in one system call (Linux 3.15+,
  on the file systems that support it), then the old one, now at ``tmp``, is removed. Where the exchange is
  not available, ``DIR`` is renamed aside (``.fxopt-old-<name>-*``) and ``tmp`` renamed in; a process killed
  between those two renames leaves the old artifact aside, and the next save to ``DIR`` puts it back first.

So a process killed at any moment leaves ``DIR`` as the old or the new output. Writers to one parent folder
commit one at a time (``flock`` on the parent directory), so concurrent saves to one ``DIR`` both succeed
and the last one wins; each writer holds a lock on its own temporary directory while it writes, and every
save removes the temporary folders of writers that died (their lock is free).
"""
from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import fcntl
import os
import shutil
import tempfile
from typing import Callable, Iterator

from fxopt.errors import InputError

_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


def _exchange_fn() -> Callable[[str, str], int] | None:
    """libc's renameat2 as ``fn(a, b) -> errno`` (0 on success), or None when this libc has none."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return None
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    renameat2.restype = ctypes.c_int

    def exchange(a: str, b: str) -> int:
        if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
            return 0
        return ctypes.get_errno() or errno.EINVAL

    return exchange


_EXCHANGE = _exchange_fn()


def exchange_paths(a: str, b: str) -> bool:
    """Swap the directory entries ``a`` and ``b`` atomically; True when done, False when this system cannot
    (no renameat2, or the file system refuses RENAME_EXCHANGE). Raises OSError for other failures."""
    if _EXCHANGE is None:
        return False
    err = _EXCHANGE(a, b)
    if err == 0:
        return True
    if err in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), b)


def check_output_location(directory: str, is_ours: Callable[[str], str | None], what: str) -> None:
    """Raise InputError (one line, exit 2) unless ``directory`` can take an output: not a symbolic link, not
    a file, absent or empty or already ``what`` (``is_ours(directory)`` returns None; else the reason it is
    not), and its nearest existing parent is a writable directory. Creates nothing."""
    if "\0" in os.fspath(directory):
        raise InputError(f"{os.fspath(directory)!r}: an output path cannot hold a NUL byte; choose another (-o)")
    directory = os.path.abspath(os.fspath(directory))
    if os.path.islink(directory):
        raise InputError(f"{directory}: is a symbolic link; give the real output path (-o), fxopt does not "
                         "replace what a link points to")
    if os.path.exists(directory):
        if not os.path.isdir(directory):
            raise InputError(f"{directory}: exists and is not a directory; choose another output path (-o)")
        if os.listdir(directory):
            why = is_ours(directory)
            if why is not None:
                raise InputError(f"{directory}: holds files and is not {what} ({why}); fxopt replaces only its "
                                 "own output — choose an empty or new directory (-o)")
        if not os.access(directory, os.W_OK | os.X_OK):
            raise InputError(f"{directory}: is not writable; choose another output path (-o)")
    parent = os.path.dirname(directory)
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise InputError(f"{directory}: '{parent}' is not a directory; choose another output path (-o)")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(f"{directory}: cannot write in '{parent}' (permission denied); choose another "
                         "output path (-o)")


@contextlib.contextmanager
def _flock(path: str, blocking: bool = True) -> Iterator[bool]:
    """Hold an exclusive ``flock`` on directory ``path`` for the block; yields False (without waiting) when
    ``blocking`` is off and another process holds it."""
    fd = os.open(path, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)   # closing releases the lock


def _leftovers(parent: str, name: str, kind: str) -> list[str]:
    prefix = f".fxopt-{kind}-{name}-"
    try:
        return sorted(os.path.join(parent, e) for e in os.listdir(parent) if e.startswith(prefix))
    except OSError:
        return []


def recover(directory: str, is_ours: Callable[[str], str | None]) -> None:
    """Clean up after writers of ``directory`` that died: put back an old artifact left aside by a
    two-rename replace that was cut between its renames (when ``directory`` is missing), and remove every
    leftover temporary or old folder whose writer is gone. Call with the parent's lock held."""
    parent, name = os.path.split(os.path.abspath(directory))
    for kind in ("old", "tmp"):
        for path in _leftovers(parent, name, kind):
            with _flock(path, blocking=False) as free:
                if not free:
                    continue   # a live writer's folder
                if kind == "old" and not os.path.lexists(directory) and is_ours(path) is None:
                    os.rename(path, directory)
                    continue
            shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def atomic_directory(directory: str, is_ours: Callable[[str], str | None], what: str) -> Iterator[str]:
    """Yield a temporary directory beside ``directory`` to write the output into; when the block succeeds it
    replaces ``directory`` in one step (see the module docstring), when it fails it is removed. Checks
    ``directory`` first (:func:`check_output_location`); the check is repeated under the parent's lock just
    before the replace."""
    directory = os.path.abspath(os.fspath(directory))
    check_output_location(directory, is_ours, what)
    parent, name = os.path.split(directory)
    os.makedirs(parent, exist_ok=True)
    with _flock(parent):
        recover(directory, is_ours)
        tmp = tempfile.mkdtemp(prefix=f".fxopt-tmp-{name}-", dir=parent)
        # locked before the parent is released, so another writer's recover() never takes it for a dead one
        held = os.open(tmp, os.O_RDONLY)
        fcntl.flock(held, fcntl.LOCK_EX)
    try:
        yield tmp
        with _flock(parent):
            check_output_location(directory, is_ours, what)
            _replace(tmp, directory, parent, name)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        os.close(held)
    shutil.rmtree(tmp, ignore_errors=True)   # after an exchange: the old output


def _replace(tmp: str, directory: str, parent: str, name: str) -> None:
    """Make ``tmp`` appear at ``directory`` in one step, leaving the old ``directory`` (if any) at ``tmp``
    for the caller to remove."""
    if not os.path.lexists(directory):
        os.rename(tmp, directory)
        return
    if exchange_paths(tmp, directory):
        return
    old = tempfile.mkdtemp(prefix=f".fxopt-old-{name}-", dir=parent)
    os.rmdir(old)
    os.rename(directory, old)
    os.rename(tmp, directory)
    os.rename(old, tmp)
