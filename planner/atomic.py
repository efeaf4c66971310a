"""Atomic writes, for files and for whole folders: the one place the project writes output.

Files: a temporary file in the same folder, flushed to disk, then renamed over the target.
``os.replace`` is atomic within one file system, so a reader (or a process killed mid-write)
sees either the previous file or the complete new one, never a torn one. Temporary names
start with a dot and carry the process id, so two writers never share one.

Folders (:func:`replace_folder`): a plan folder is either the old plan or the new one, never a
mix. The whole new folder is written into a hidden sibling (``.NAME.new-*``) while a lock is
held (``.NAME.lock`` beside it: a second writer of the same folder is refused, not merged), and
swapped in at the end with one atomic exchange of the two directory entries (Linux
``renameat2(RENAME_EXCHANGE)``; elsewhere two renames, and a crash between them is repaired by
the next writer). A run killed before the swap leaves the old folder untouched; its half-written
sibling is removed by the next writer of that folder.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import glob
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

from .errors import InputError


# ---------------------------------------------------------------------------------------------
# Files
@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside ``path``; when the block ends without error it replaces ``path``.

    Use for writers that want a file name (reportlab, trimesh, pydicom, nrrd, PIL). ``suffix``
    keeps an extension that such writers look at (``.glb``, ``.nii.gz``). The temporary file is
    removed on error.
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
    return p


def write_text_atomic(text: str, path: str | os.PathLike[str]) -> Path:
    """Write UTF-8 text to ``path`` atomically; returns the path."""
    return write_bytes_atomic(text.encode("utf-8"), path)


def write_json_atomic(doc: Any, path: str | os.PathLike[str]) -> Path:
    """Write ``doc`` as indented JSON (strict: NaN and infinity are refused) atomically."""
    p = Path(path)
    with atomic_path(p) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(doc, f, indent=2, allow_nan=False)
            f.write("\n")
    return p


# ---------------------------------------------------------------------------------------------
# Folders
_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Swap two directory entries atomically (Linux); False where the system cannot."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def is_plan_folder(path: Path, marker: str = "plan.json") -> bool:
    """A folder the planner may replace: one holding ``marker``, or an empty one."""
    return path.is_dir() and ((path / marker).is_file() or not any(path.iterdir()))


@contextlib.contextmanager
def folder_lock(dest: str | os.PathLike[str], what: str = "plan folder") -> Iterator[Path]:
    """Hold the lock of the folder ``dest`` (``.NAME.lock`` beside it) while the block runs; a
    second holder gets an :class:`InputError` at once. Yields ``dest`` as an absolute path.

    Every writer of a plan folder takes it: the planner replacing it, a check scan adding to it.
    """
    import fcntl

    d = Path(dest).absolute()
    parent = d.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"{dest}: cannot create its folder {parent} ({exc.strerror or exc})") from None
    try:
        lock = os.open(parent / f".{d.name}.lock", os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise InputError(f"{dest}: cannot write into {parent} ({exc.strerror or exc})") from None
    try:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise InputError(f"{dest}: another planner is writing this {what} now; "
                             "wait for it to finish, or write elsewhere") from None
        yield d
    finally:
        os.close(lock)  # releases the lock; the lock file stays (removing it would race)


@contextlib.contextmanager
def replace_folder(dest: str | os.PathLike[str], *, marker: str = "plan.json",
                   what: str = "plan folder", keep_if: str | None = "checks") -> Iterator[Path]:
    """Write a folder as a whole: yields an empty staging folder; on success it becomes ``dest``.

    Everything is checked before the caller does any work: ``dest`` must be creatable (its
    parent writable), and an existing ``dest`` must be a folder this writer may replace (one
    holding ``marker``, or empty), never a file or someone's other folder, nor one holding
    ``keep_if`` (a plan folder with the check scans of a procedure done on it). While the block
    runs the folder's lock is held (:func:`folder_lock`). On an exception (Ctrl-C included) the
    staging folder is removed and ``dest`` is untouched.
    """
    d = Path(dest).absolute()
    if d.name in ("", ".", ".."):
        raise InputError(f"{dest}: name a folder to write into (not {d.name or '/'!r})")
    if d.exists() and not d.is_dir():
        raise InputError(f"{dest}: exists and is not a folder; refusing to replace it")
    cwd = Path.cwd().resolve()
    if d.exists() and (d.resolve() == cwd or d.resolve() in cwd.parents):
        raise InputError(f"{dest}: is the current folder (or holds it); give a folder of its own to write into")
    with folder_lock(d, what):
        parent = d.parent
        _recover(d)
        if d.exists() and not is_plan_folder(d, marker):
            raise InputError(f"{dest}: exists and is not a {what} (no {marker}); refusing to replace or "
                             "mix into it; give a new or empty folder")
        if keep_if and (d / keep_if).exists():
            raise InputError(f"{dest}: holds the check scans of a procedure ({keep_if}/); refusing to replace "
                             "it: plan into a new folder")
        try:
            staging = Path(tempfile.mkdtemp(prefix=f".{d.name}.new-", dir=parent))
        except OSError as exc:
            raise InputError(f"{dest}: cannot write into {parent} ({exc.strerror or exc})") from None
        try:
            yield staging
            _swap_in(staging, d)
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)


def _recover(d: Path) -> None:
    """Under the lock: finish or undo what a killed writer of ``d`` left beside it."""
    parent = d.parent
    name = glob.escape(d.name)
    olds = sorted(parent.glob(f".{name}.old-*"), key=lambda p: p.stat().st_mtime)
    if not d.exists() and olds:  # killed between the two renames of the fallback: the old plan comes back
        os.rename(olds.pop(), d)
    for stale in [*olds, *parent.glob(f".{name}.new-*")]:
        shutil.rmtree(stale, ignore_errors=True)


def _swap_in(staging: Path, d: Path) -> None:
    for sub in [staging, *(p for p in staging.rglob("*") if p.is_dir())]:
        _fsync_dir(sub)
    if not d.exists():
        os.rename(staging, d)
    elif _exchange(staging, d):
        shutil.rmtree(staging, ignore_errors=True)  # now the old folder
    else:
        old = d.with_name(f".{d.name}.old-{os.getpid()}")
        os.rename(d, old)
        os.rename(staging, d)
        shutil.rmtree(old, ignore_errors=True)
    _fsync_dir(d.parent)


def file_sha256(path: str | os.PathLike[str]) -> str:
    """The SHA-256 of a file's bytes, read in 1 MiB blocks."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
