"""Two small file helpers every layer uses: writing a text file whole or not at all, and a file's digest."""
from __future__ import annotations

import hashlib
import os
import uuid

__all__ = ["write_text_atomic", "file_sha256"]


def write_text_atomic(path: str, text: str) -> str:
    """Write ``text`` (UTF-8) to ``path`` through a uniquely named temporary file beside it, renamed over
    ``path``, so a reader sees the old file or the new one, never half of one; the temporary file is
    removed when writing fails. Returns ``path``; raises OSError (callers turn it into their own message)."""
    tmp = os.path.join(os.path.dirname(os.path.abspath(path)), f".{os.path.basename(path)}.{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except OSError:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def file_sha256(path: str) -> str:
    """The sha256 hex digest of the file at ``path``, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
