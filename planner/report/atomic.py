"""Atomic file writes: a temporary file in the same folder, flushed to disk, then renamed.

``os.replace`` is atomic on POSIX and Windows within one file system, so a reader (or a
process killed mid-write) sees either the previous file or the complete new one, never a
torn one. Temporary names start with a dot and carry the process id, so two writers never
share one.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterator


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside ``path``; when the block ends without error it replaces ``path``.

    Use for writers that want a file name (reportlab, trimesh, pydicom). ``suffix`` keeps an
    extension that such writers look at (``.glb``). The temporary file is removed on error.
    """
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{p.name}.tmp{os.getpid()}{suffix}")
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, p)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_bytes_atomic(data: bytes, path: str | os.PathLike[str]) -> Path:
    """Write ``data`` to ``path`` atomically; returns the path."""
    p = Path(path)
    with atomic_path(p) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    return p


def write_text_atomic(text: str, path: str | os.PathLike[str]) -> Path:
    """Write UTF-8 text to ``path`` atomically; returns the path."""
    return write_bytes_atomic(text.encode("utf-8"), path)
