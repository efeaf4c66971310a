"""Surface meshes of the structures and the needle paths (trimesh), in LPS millimetres.

Each structure's mask is padded by one voxel (so the surface closes) and contoured at 0.5 by
marching cubes; vertices go from voxel indices to LPS through the CT's affine, so the meshes
sit exactly where the masks are. The needle of each trajectory is a cylinder of its outer
diameter from entry to target. Written to ``meshes/``: one STL per structure and per needle,
and one ``plan.glb`` holding them all as named nodes with their class colours.

Note: glTF viewers assume metres and Y up; these files keep DICOM's LPS millimetres, as
3D Slicer expects when it loads STL or glTF with the LPS coordinate system.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..anatomy.registry import StructureClass
from ..anatomy.structures import Structure, StructureSet
from ..atomic import atomic_path

#: Classes without a useful surface of their own in a plan (the body is the whole patient).
SKIPPED = (StructureClass.BODY,)
MAX_MESH_VOXELS = 4_000_000  # larger masks are contoured every second voxel


def structure_mesh(s: Structure, affine: np.ndarray) -> Any:
    """A closed triangle mesh of one structure, vertices in LPS mm (trimesh.Trimesh)."""
    import trimesh
    from skimage.measure import marching_cubes

    step = 2 if s.mask.size > MAX_MESH_VOXELS else 1
    padded = np.pad(s.mask, 1).astype(np.float32)
    verts, faces, _, _ = marching_cubes(padded, level=0.5, step_size=step, allow_degenerate=False)
    kji = verts - 1.0 + np.asarray(s.offset, float)
    a = np.asarray(affine, float)
    lps = kji[:, ::-1] @ a[:3, :3].T + a[:3, 3]
    mesh = trimesh.Trimesh(vertices=lps, faces=faces, process=True)
    if mesh.volume < 0:  # the affine (and the k, j, i -> i, j, k swap) may mirror: keep normals outward
        mesh.invert()
    mesh.visual.face_colors = [*s.colour, 255]
    return mesh


def needle_mesh(traj: dict[str, Any]) -> Any:
    """A cylinder of the needle's outer diameter from entry to target (LPS mm)."""
    import trimesh

    e, t = np.asarray(traj["entry"], float), np.asarray(traj["target"], float)
    radius = float(traj.get("needle", {}).get("outer_diameter_mm", 1.0)) / 2.0
    mesh = trimesh.creation.cylinder(radius=radius, segment=np.vstack([e, t]), sections=24)
    mesh.visual.face_colors = [255, 215, 0, 255] if traj["rank"] == 1 else [80, 200, 255, 255]
    return mesh


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def write_meshes(structures: StructureSet, doc: dict[str, Any], plan_dir: str | os.PathLike[str],
                 extra: Sequence[Structure] = ()) -> list[Path]:
    """Write the STL files and ``plan.glb`` into ``plan_dir/meshes``; returns the paths written.

    ``extra`` holds structures on the same grid that are not in the set (a lesion segmented
    from a seed point is the plan's target but not one of the structures).
    """
    import trimesh

    folder = Path(plan_dir) / "meshes"
    scene = trimesh.Scene()
    written: list[Path] = []
    items: list[tuple[str, Any]] = []
    for s in [*structures, *(e for e in extra if e.name not in structures)]:
        if s.cls in SKIPPED or not s.mask.any():
            continue
        items.append((s.name, structure_mesh(s, structures.affine)))
    for t in doc.get("trajectories", []):
        items.append((f"needle_{t['rank']}", needle_mesh(t)))
    for name, mesh in items:
        with atomic_path(folder / f"{_safe(name)}.stl", ".stl") as tmp:
            mesh.export(str(tmp), file_type="stl")
        written.append(folder / f"{_safe(name)}.stl")
        scene.add_geometry(mesh, node_name=name, geom_name=name)
    with atomic_path(folder / "plan.glb", ".glb") as tmp:
        scene.export(str(tmp), file_type="glb")
    written.append(folder / "plan.glb")
    return written
