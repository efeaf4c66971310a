"""Automatic segmentations kept by the CT's voxel hash, so that a plan on a CT prepared in advance
(by ``planner listen``, as its series arrives) starts without the segmentation wait.

``ROOT/<voxel SHA-256>/structures.seg.nrrd`` with ``info.json`` (the notes of the segmentation,
this package's version, the source series). A segmentation is reused only for the very same
voxels and the same segmentation code (a digest of the package's version and of the source of
:mod:`planner.anatomy.autoseg`: a changed algorithm never reuses an old result); a damaged or
partial entry is ignored (and replaced the next time). The root is ``$PLANNER_CACHE/segmentations`` or ``~/.cache/planner/segmentations``.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from ..atomic import write_json_atomic
from ..images import Image
from .structures import StructureSet


def cache_root() -> Path:
    base = os.environ.get("PLANNER_CACHE")
    return (Path(base) if base else Path("~/.cache/planner").expanduser()) / "segmentations"


def algorithm_id() -> str:
    """A digest of the package's version and of the segmentation code's source files."""
    import hashlib

    from .. import __version__

    h = hashlib.sha256(__version__.encode())
    for f in sorted((Path(__file__).parent / "autoseg").rglob("*.py")):
        h.update(f.name.encode())
        h.update(f.read_bytes())
    return h.hexdigest()[:16]


def _entry(ct: Image, root: Path | None = None) -> Path:
    return (root or cache_root()) / ct.sha256


def has_segmentation(ct: Image, root: Path | None = None) -> bool:
    """Whether an entry for exactly this CT by this segmentation code is there (its info read,
    not its masks: :func:`cached_segmentation` still checks the masks)."""
    d = _entry(ct, root)
    try:
        info = json.loads((d / "info.json").read_text("utf-8"))
    except (OSError, ValueError):
        return False
    return (isinstance(info, dict) and info.get("algorithm") == algorithm_id()
            and info.get("voxel_sha256") == ct.sha256 and (d / "structures.seg.nrrd").is_file())


def cached_segmentation(ct: Image, root: Path | None = None) -> StructureSet | None:
    """The segmentation stored for exactly this CT by this segmentation code, or None."""
    from .slicer_seg import load_slicer_seg

    d = _entry(ct, root)
    info_path, seg = d / "info.json", d / "structures.seg.nrrd"
    if not (info_path.is_file() and seg.is_file()):
        return None
    try:
        info = json.loads(info_path.read_text("utf-8"))
        if info.get("algorithm") != algorithm_id() or info.get("voxel_sha256") != ct.sha256:
            return None
        sset = load_slicer_seg(seg, ct)
    except Exception:  # noqa: BLE001 - a damaged entry is no entry
        return None
    sset.notes[:] = [str(n) for n in info.get("notes", [])]
    sset.notes.append(f"automatic segmentation prepared in advance ({info.get('prepared', '?')}, "
                      f"{info.get('source', '?')}), reused for the same voxels")
    return sset


def store_segmentation(ct: Image, sset: StructureSet, source: str = "", root: Path | None = None) -> Path:
    """Keep ``sset`` for this CT; the entry's folder (written whole: staged, then renamed)."""
    import datetime as dt

    from .. import __version__
    from .slicer_seg import save_slicer_seg

    d = _entry(ct, root)
    d.parent.mkdir(parents=True, exist_ok=True)
    staging = d.parent / f".{d.name}.{os.getpid()}"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir()
    save_slicer_seg(sset, staging / "structures.seg.nrrd")
    write_json_atomic({"voxel_sha256": ct.sha256, "version": __version__, "algorithm": algorithm_id(),
                       "notes": list(sset.notes),
                       "source": source, "prepared": dt.datetime.now().isoformat(timespec="seconds")},
                      staging / "info.json")
    if d.exists():
        shutil.rmtree(d)
    os.rename(staging, d)
    return d
