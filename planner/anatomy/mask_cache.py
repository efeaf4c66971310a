"""Structure sets already read from a ``.seg.nrrd``, kept as packed crops, so that reading a plan's
structures again (every check scan of a procedure, ``review``, ``view``) takes milliseconds
instead of inflating and scanning the whole layered file (on the chest CT: 6 layers of 512 x 512
x 130 voxels, 1.5 s).

``ROOT/<SHA-256 of the file>-<SHA-256 of the CT's voxels>.npz``: per structure its name, class,
colour, offset and bit-packed crop, and the names of the empty segments. An entry is used only
for the very same file bytes on the very same CT grid and voxels (both hashes in its name and
inside it) and this entry format; a damaged entry is ignored and replaced. Writing is atomic and
best-effort (a read-only cache folder only costs the speed). The root is
``$PLANNER_CACHE/structures`` or ``~/.cache/planner/structures``.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np

from ..atomic import file_sha256  # noqa: F401  (the key of an entry; slicer_seg calls it from here)
from ..images import Image
from .structures import StructureSet

#: Bumped whenever the entry's layout changes (an older entry is then not used).
FORMAT = "planner.maskcache/1"


def cache_root() -> Path:
    base = os.environ.get("PLANNER_CACHE")
    return (Path(base) if base else Path("~/.cache/planner").expanduser()) / "structures"


def _entry(file_sha: str, ct_sha: str, root: Path | None) -> Path:
    return (root or cache_root()) / f"{file_sha}-{ct_sha}.npz"


def cached_structures(file_sha: str, ct: Image, source: str, root: Path | None = None,
                      ct_sha256: str | None = None) -> StructureSet | None:
    """The structure set read earlier from the file of SHA-256 ``file_sha`` onto ``ct``, or None;
    ``source``: the file's path now (each structure's source). ``ct_sha256`` stands for
    ``ct.sha256`` where ``ct`` is a grid whose voxels are not read (a plan's record of them)."""
    ct_sha = ct_sha256 or ct.sha256
    p = _entry(file_sha, ct_sha, root)
    if not p.is_file():
        return None
    try:
        with np.load(p, allow_pickle=False) as z:
            info = json.loads(str(z["info"]))
            if info.get("format") != FORMAT or info.get("file_sha256") != file_sha or \
                    info.get("ct_sha256") != ct_sha or tuple(info.get("shape", ())) != tuple(ct.shape) or \
                    not np.allclose(np.asarray(info["affine"], float), ct.affine, atol=1e-6):
                return None
            sset = StructureSet.for_image(ct)
            for n, s in enumerate(info["structures"]):
                shape = tuple(int(x) for x in s["shape"])
                bits = z[f"m{n}"]
                mask = np.unpackbits(bits, count=int(np.prod(shape))).reshape(shape).astype(bool)
                if sset.add_cropped(s["name"], tuple(s["offset"]), mask, cls=s["cls"],
                                    colour=tuple(s["colour"]), source=source) is None:
                    return None  # an entry never holds an empty crop: damaged
            sset.empty.extend(str(x) for x in info["empty"])
            sset.notes.extend(str(x) for x in info["notes"])
            return sset
    except Exception:  # noqa: BLE001 - a damaged or foreign entry is no entry
        return None


def store_structures(file_sha: str, ct: Image, sset: StructureSet, root: Path | None = None) -> None:
    """Keep ``sset`` (read from the file of SHA-256 ``file_sha`` onto ``ct``); best-effort."""
    p = _entry(file_sha, ct.sha256, root)
    arrays = {}
    records = []
    for n, s in enumerate(sset):
        arrays[f"m{n}"] = np.packbits(np.asarray(s.mask, bool).ravel())
        records.append({"name": s.name, "cls": s.cls.value,
                        "colour": [int(c) for c in s.colour], "offset": [int(o) for o in s.offset],
                        "shape": [int(x) for x in s.mask.shape]})
    info = {"format": FORMAT, "file_sha256": file_sha, "ct_sha256": ct.sha256, "shape": list(ct.shape),
            "affine": np.asarray(ct.affine, float).tolist(), "structures": records,
            "empty": list(sset.empty), "notes": list(sset.notes)}
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=".", suffix=".npz.tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez(f, info=np.array(json.dumps(info)), **arrays)
            os.replace(tmp, p)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    except OSError:
        pass
