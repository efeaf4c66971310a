"""The structure surfaces of a plan, kept in its folder so a scene reopens without remeshing.

Meshing the chest CT's structures takes about 3 s; reading them back takes a tenth of that.
The surfaces go to ``PLAN/surfaces/`` as VTK XML PolyData (``fine/`` the full-detail meshes,
``coarse/`` the ones shown while the view moves) with ``index.json`` naming what they were
made from: the SHA-256 of ``structures.seg.nrrd`` and the meshing version. A cache that does
not match (other structures, other meshing, a file missing or unreadable) is rebuilt, never
trusted. Positions stay in LPS millimetres, as the meshes are built.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable

from .vtkutil import vtk

#: Bumped whenever the meshing (smoothing, decimation, what is skipped) changes.
MESHING_VERSION = 1
FOLDER = "surfaces"
SEG_FILE = "structures.seg.nrrd"


def _key(plan_dir: Path) -> str | None:
    from ..atomic import file_sha256

    seg = plan_dir / SEG_FILE
    return file_sha256(seg) if seg.is_file() else None


def _read(path: Path) -> "vtk.vtkPolyData | None":
    reader = vtk.vtkXMLPolyDataReader()
    reader.SetFileName(str(path))
    reader.Update()
    if reader.GetErrorCode():
        return None
    out = vtk.vtkPolyData()
    out.ShallowCopy(reader.GetOutput())
    return out if out.GetNumberOfPoints() else None


def load(plan_dir: str | os.PathLike[str], detail: str) -> dict[str, "vtk.vtkPolyData"] | None:
    """The cached meshes of ``detail`` ('fine' or 'coarse'), in their stored order; None when the
    cache is absent or stale or any of its files cannot be read."""
    d = Path(plan_dir)
    try:
        index = json.loads((d / FOLDER / "index.json").read_text())
        names = index[detail]
        if index.get("meshing") != MESHING_VERSION or index.get("structures_sha256") != _key(d):
            return None
    except (OSError, ValueError, KeyError, TypeError):
        return None
    out: dict[str, vtk.vtkPolyData] = {}
    for i, name in enumerate(names):
        mesh = _read(d / FOLDER / detail / f"{i:03d}.vtp")
        if mesh is None:
            return None
        out[str(name)] = mesh
    return out


def save(plan_dir: str | os.PathLike[str], detail: str, meshes: dict[str, "vtk.vtkPolyData"]) -> bool:
    """Store ``meshes`` as the cache's ``detail``; False (and nothing changed) where the folder
    cannot be written (a read-only archive): the cache is an optimisation only."""
    d = Path(plan_dir)
    key = _key(d)
    if key is None:
        return False
    root = d / FOLDER
    try:
        root.mkdir(exist_ok=True)
        try:
            index = json.loads((root / "index.json").read_text())
            if index.get("meshing") != MESHING_VERSION or index.get("structures_sha256") != key:
                index = {}
        except (OSError, ValueError):
            index = {}
        staging = Path(tempfile.mkdtemp(prefix=f".{detail}-", dir=root))
        for i, mesh in enumerate(meshes.values()):
            w = vtk.vtkXMLPolyDataWriter()
            w.SetFileName(str(staging / f"{i:03d}.vtp"))
            w.SetInputData(mesh)
            w.SetDataModeToAppended()
            w.EncodeAppendedDataOff()
            w.SetCompressorTypeToZLib()
            if not w.Write():
                shutil.rmtree(staging, ignore_errors=True)
                return False
        final = root / detail
        if final.exists():
            shutil.rmtree(final, ignore_errors=True)
        os.replace(staging, final)
        from ..atomic import write_json_atomic

        index = {k: v for k, v in index.items() if k in ("fine", "coarse")}
        index.update({"meshing": MESHING_VERSION, "structures_sha256": key, detail: list(meshes)})
        write_json_atomic(index, root / "index.json")
        return True
    except OSError:
        return False


def cached(plan_dir: str | os.PathLike[str] | None, detail: str,
           build: Callable[[], dict[str, "vtk.vtkPolyData"]]) -> dict[str, "vtk.vtkPolyData"]:
    """The meshes from the plan folder's cache, else ``build()`` (then stored for next time)."""
    if plan_dir is None:
        return build()
    got = load(plan_dir, detail)
    if got is not None:
        return got
    meshes = build()
    save(plan_dir, detail, meshes)
    return meshes
