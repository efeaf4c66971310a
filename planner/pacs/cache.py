"""Series pulled from a PACS for planning, kept in a cache keyed by series UID and content.

``ROOT/<series UID>/<key>/`` holds the instances and ``manifest.json`` (each file's SHA-256);
``key`` is a digest of the SOP Instance UIDs the node lists for the series, so a series that
gained or lost an instance on the node is pulled again. A cached copy is used only when every
file still matches its manifest; otherwise it is removed and pulled again. The root is
``$PLANNER_CACHE/pacs`` or ``~/.cache/planner/pacs``.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
from pathlib import Path

from ..atomic import file_sha256, write_json_atomic
from .config import Node, PacsConfig
from .dimse import Progress, check_uid, find, list_instances, pull


def cache_root() -> Path:
    base = os.environ.get("PLANNER_CACHE")
    return (Path(base) if base else Path("~/.cache/planner").expanduser()) / "pacs"


def _sha256(path: Path) -> str:
    return file_sha256(path)


def _intact(folder: Path) -> bool:
    m = folder / "manifest.json"
    if not m.is_file():
        return False
    try:
        files = json.loads(m.read_text("utf-8"))["files"]
        return all((folder / name).is_file() and _sha256(folder / name) == digest for name, digest in files.items())
    except (OSError, ValueError, KeyError, TypeError):
        return False


def fetch_series(cfg: PacsConfig, node: Node, series_uid: str, *, via: str = "get", progress: Progress | None = None,
                 root: Path | None = None) -> tuple[Path, bool]:
    """The folder of a series from ``node``, pulled unless an intact cached copy of the same
    content is there; returns (folder, pulled)."""
    series_uid = check_uid(series_uid)
    rows = [r for r in find(cfg, node, series_uid=series_uid) if r.series_uid == series_uid]
    if not rows:
        from .dimse import PacsError

        raise PacsError(f"PACS node {node.describe()}: no series {series_uid}")
    uids = list_instances(cfg, node, rows[0].study_uid, series_uid)
    key = hashlib.sha256("\n".join(sorted(uids)).encode()).hexdigest()[:16]
    folder = (root or cache_root()) / series_uid / key
    if _intact(folder):
        return folder, False
    folder.parent.mkdir(parents=True, exist_ok=True)
    # Pulled into a folder of this process's own, with its manifest, then renamed into place whole:
    # two processes pulling the same series at once (two cohort workers) each keep a complete
    # copy until one of them is in place, and nobody removes a copy another is reading.
    mine = folder.parent / f".{key}.{os.getpid()}-{secrets.token_hex(4)}"
    try:
        files = pull(cfg, node, series_uid, mine, via=via, progress=progress)
        write_json_atomic({"series_instance_uid": series_uid, "node": node.name,
                           "files": {f.name: _sha256(f) for f in files}}, mine / "manifest.json")
        _put_in_place(mine, folder)
    finally:
        if mine.exists():
            shutil.rmtree(mine, ignore_errors=True)
    return folder, True


def _put_in_place(mine: Path, folder: Path) -> None:
    """Rename a complete copy to ``folder``. An intact copy already there (another process's, of
    the same instances) stays; a damaged one is moved aside first, then removed."""
    for _ in range(5):
        try:
            os.rename(mine, folder)  # atomic; refused when folder is a folder that holds files
            return
        except OSError:
            if _intact(folder):
                return
        aside = folder.parent / f".{folder.name}.damaged-{os.getpid()}-{secrets.token_hex(4)}"
        try:
            os.rename(folder, aside)
        except FileNotFoundError:
            continue
        shutil.rmtree(aside, ignore_errors=True)
    raise OSError(f"{folder}: could not be put in place")
