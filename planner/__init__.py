"""Interventional procedure planning assistant.

Every position in the public API is in DICOM patient coordinates (LPS, millimetres).
Voxel arrays are indexed ``[k, j, i]`` (slice, row, column) with one 4x4 affine that maps
``(i, j, k, 1)`` to LPS.

The Python API, for scripts and notebooks (what ``planner plan`` does, step by step)::

    import planner

    ct = planner.load_image("chest/dicom")                 # DICOM folder or file, NIfTI, NRRD
    structures = planner.segment(ct)                       # or planner.load_structures(path, ct)
    plan = planner.plan(ct, procedure="lung-biopsy", seed=(-82, 82, -8), structures=structures)
    print(plan.status, plan.trajectories[0].length_mm)     # the typed plan (planner.Plan)
    plan.write("out/case1")                                # plan.json and the whole report set
    again = planner.read_plan("out/case1")                 # the same plan, read back

Errors in what is given raise :class:`planner.InputError` with a one-line message.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Sequence

from .errors import InputError, PlannerError

__version__ = "0.1.0"

if TYPE_CHECKING:  # pragma: no cover
    from .anatomy import StructureSet
    from .images import Image
    from .planning.model import Plan
    from .session import PlanningSession


def load_image(path: str | os.PathLike[str], *, series: str | None = None, modality: str | None = "CT",
               echo: int | None = None, phase: int | None = None, progress: Any = None) -> "Image":
    """The scan at ``path`` (a DICOM folder, searched recursively, or file; NIfTI; NRRD), in LPS.

    ``series`` picks a DICOM series when there are several; ``modality`` is required of DICOM
    ("CT", "MR"; None for any); ``echo`` / ``phase`` pick the images of a series with several per
    slice position (``planner info`` lists them). Every correction made is in ``image.meta.corrections``.
    """
    from .images import load_image as _load

    return _load(path, series, modality, progress, echo=echo, phase=phase)


def segment(image: "Image", *, fissure_points: str | os.PathLike[str] | None = None,
            progress: Any = None) -> "StructureSet":
    """The automatic segmentation of a CT (body, lungs, airways, bones, heart, aorta, vessels,
    emphysema, fissures and lobes): a :class:`~planner.anatomy.StructureSet` on the CT's grid.
    An MR (``image.meta.modality`` "MR") is segmented as a knee (body, bones, effusion, tendons,
    popliteal bundle by position), with every echo of its DICOM series when its source has them."""
    from .anatomy import segment_ct

    if (image.meta.modality or "").upper() == "MR":
        import numpy as np

        from .anatomy.autoseg.knee_mr import load_echoes, segment_knee_mr

        echoes = None
        if image.meta.source:
            try:
                echoes = load_echoes(image.meta.source, image.meta.series_instance_uid or None)
            except InputError:
                echoes = None  # the source is gone or not DICOM: this image alone
        if echoes is not None and (echoes.images[0].shape != image.shape
                                   or not np.allclose(echoes.images[0].affine, image.affine, atol=1e-4)):
            echoes = None
        return segment_knee_mr(image, echoes, progress=progress).structures
    from .anatomy.fissure_points import read_fissure_points

    points = read_fissure_points(fissure_points) if fissure_points is not None else None
    return segment_ct(image, progress=progress, fissure_points=points)


def load_structures(path: str | os.PathLike[str], image: "Image", progress: Any = None) -> "StructureSet":
    """Structures from a file or folder (TotalSegmentator, a label map, a 3D Slicer ``.seg.nrrd``,
    DICOM SEG or RTSTRUCT), brought onto ``image``'s grid."""
    from .anatomy import load_structures as _load

    return _load(path, image, progress=progress)


def open_session(image: "Image | str | os.PathLike[str]", *, procedure: str,
            structures: "StructureSet | str | os.PathLike[str] | None" = None, approach: str | None = None,
            side: str | None = None, progress: Any = None,
            preset_file: str | os.PathLike[str] | None = None) -> "PlanningSession":
    """A planning session on ``image`` for ``procedure``: plan as many targets as you like with
    ``session.plan([...])``; it keeps the prepared distance fields between plans. ``preset_file``:
    a department variant of the procedure's preset (``planner library learn``; weights only)."""
    from .anatomy import StructureSet as _Set
    from .session import PlanningSession

    ct = image if not isinstance(image, (str, os.PathLike)) else load_image(image, progress=progress)
    if isinstance(structures, _Set):
        return PlanningSession(ct, structures, procedure=procedure, approach=approach, side=side,
                               structures_source="supplied structures", imported=True, preset_file=preset_file)
    if structures is None:
        return PlanningSession(ct, segment(ct, progress=progress), procedure=procedure, approach=approach,
                               side=side, structures_source="automatic segmentation", preset_file=preset_file)
    return PlanningSession(ct, load_structures(structures, ct, progress), procedure=procedure, approach=approach,
                           side=side, structures_source=str(structures), imported=True, preset_file=preset_file)


def plan(image: "Image | str | os.PathLike[str]", *, procedure: str,
         target: Sequence[float] | str | None = None, target_label: str | None = None,
         seed: Sequence[float] | str | None = None, target_joint: str | None = None,
         structures: "StructureSet | str | os.PathLike[str] | None" = None, approach: str | None = None,
         side: str | None = None, n: int = 5, progress: Any = None,
         preset_file: str | os.PathLike[str] | None = None) -> "Plan":
    """Plan needle trajectories on ``image`` and return the :class:`~planner.planning.model.Plan`.

    Give exactly one target: ``target`` (a point, LPS mm), ``target_label`` (a structure's name),
    ``seed`` (a point inside a lesion to segment) or ``target_joint`` (``hip_right``,
    ``knee_recess_left``, ...). ``structures``: a structure set, a path to import, or None for
    the automatic segmentation. ``preset_file``: a department variant of the procedure's preset
    (written by ``planner library learn``: other weights, the same hard constraints). Write it
    with ``plan.write(folder)``.
    """
    from .session import TargetSpec

    given = [(k, v) for k, v in (("point", target), ("label", target_label), ("seed", seed), ("joint", target_joint))
             if v is not None]
    if len(given) != 1:
        raise InputError("give exactly one target: target=, target_label=, seed= or target_joint=")
    if not isinstance(n, int) or n < 1:
        raise InputError(f"n {n!r}: at least one trajectory must be kept")
    s = open_session(image, procedure=procedure, structures=structures, approach=approach, side=side, progress=progress,
                     preset_file=preset_file)
    return s.plan([TargetSpec(*given[0])], n_best=n)


def read_plan(folder: str | os.PathLike[str]) -> "Plan":
    """The plan written in ``folder`` (its ``plan.json``, checked against the plan's schema)."""
    from .planning.model import read_plan_file

    return read_plan_file(folder)


def __getattr__(name: str) -> Any:
    if name == "Plan":
        from .planning.model import Plan

        return Plan
    if name == "Image":
        from .images import Image

        return Image
    raise AttributeError(f"module 'planner' has no attribute {name!r}")


__all__ = ["Image", "InputError", "Plan", "PlannerError", "load_image", "load_structures", "plan", "read_plan",
           "open_session", "segment", "__version__"]
