"""Everything a plan folder gets after planning: reports, exports and (optionally) DICOM objects.

``write_report_set`` is what ``planner plan`` and ``planner demo`` call once ``plan.json`` is
written. It adds to ``plan.json`` what the reports print and the planner does not compute
(patient and study identifiers, the procedure's title, the trajectories in room terms), then
writes, each atomically:

- ``report.pdf`` and ``report.html`` (the same blocks, see :mod:`.facts`);
- ``images/path_*.png`` when the scene's images are absent (see :mod:`.images`);
- ``plan.mrk.json`` and ``markups/trajectory_<rank>.mrk.json`` (3D Slicer line markups, LPS);
- ``meshes/*.stl`` and ``meshes/plan.glb`` (structures and needles, LPS mm);
- with ``dicom=True``: ``dicom/report.dcm`` (Encapsulated PDF), ``dicom/sc_*.dcm`` (Secondary Capture),
  ``dicom/structures.dcm`` (DICOM SEG) and ``dicom/trajectories.dcm`` (Comprehensive 3D SR, TID 1500);
- with ``anonymize=True``: every one of these without patient identifiers (``plan.json`` too).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..anatomy.structures import StructureSet
from ..anatomy.target import Target
from ..errors import InputError
from ..images import Image
from ..planning.output import read_plan, write_json_atomic
from .anonymize import anonymize_plan, new_uid_map
from .facts import report_facts
from .html import write_html
from .images import report_images
from .markups import write_markups
from .meshes import write_meshes
from .pdf import write_pdf
from ..planning.room import add_room_terms


@dataclass
class ReportSet:
    """The files written for one plan."""

    plan_dir: Path
    pdf: Path
    html: Path
    markups: list[Path]
    images: dict[str, Path]
    meshes: list[Path] = field(default_factory=list)
    dicom: list[Path] = field(default_factory=list)
    dicom_notes: list[str] = field(default_factory=list)  # a DICOM object left out, and why

    def all(self) -> list[Path]:
        return [self.pdf, self.html, *self.markups, *self.images.values(), *self.meshes, *self.dicom]

    def moved(self, old: Path, new: Path) -> "ReportSet":
        """The same files once the folder ``old`` they were written in has become ``new``."""
        def m(p: Path) -> Path:
            return Path(new) / Path(p).relative_to(old)

        return ReportSet(m(self.plan_dir), m(self.pdf), m(self.html), [m(p) for p in self.markups],
                         {k: m(v) for k, v in self.images.items()}, [m(p) for p in self.meshes],
                         [m(p) for p in self.dicom], list(self.dicom_notes))


def identify(doc: dict[str, Any], ct: Image) -> dict[str, Any]:
    """Add the patient and study identifiers of the CT and the procedure's title to ``doc`` (in place)."""
    from ..planning import list_presets
    from ..planning.output import plan_identity

    preset = list_presets().get(str(doc.get("procedure")))
    doc.update(plan_identity(ct, preset.title if preset is not None else None))
    return doc


def write_report_set(plan_dir: str | os.PathLike[str], ct: Image, structures: StructureSet, *,
                     doc: dict[str, Any] | None = None, dicom: bool = False, anonymize: bool = False,
                     meshes: bool = True, target: Target | None = None, views: bool = True, body: Any = None,
                     dicom_reference: Any = None, uid_map: Any = None, progress: Any = None,
                     scene_html: bool = False) -> ReportSet:
    """Write the report set of a plan into ``plan_dir``.

    Parameters
    ----------
    plan_dir : path
        The plan folder (or the staging folder it is written in).
    ct : Image
        The planning CT (its hash must match the plan's).
    structures : StructureSet
        The structures the plan was made against, on the CT grid.
    doc : dict, optional
        The plan document as written to ``plan_dir/plan.json`` (by
        :meth:`planner.session.PlanningSession.write_into`, which writes it once, already
        identified, with its room terms, and de-identified when asked): the reports print it and
        leave ``plan.json`` alone. Without it, ``plan.json`` is read from ``plan_dir``, the
        patient, study and room terms are added, it is de-identified with ``anonymize``, and it is
        written back: the report set of a plan folder written by an older planner.
    dicom : bool
        Also write the DICOM objects into ``plan_dir/dicom`` (needs the CT as DICOM); or give
        ``dicom_reference`` (:func:`.dicom_export.reference_header`, checked before any writing).
    anonymize : bool
        Leave no patient identifier in any output (see :mod:`.anonymize`); ``uid_map`` is the map
        of new UIDs when ``doc`` was de-identified with it.
    meshes : bool
        Write the surface meshes.
    target : Target, optional
        The plan's target; its mask (a lesion grown from a seed) gets a mesh when the structures lack it.
    views : bool
        Render the scene's procedure-room views (planning slice, bull's-eye, progression, 3D)
        into ``plan_dir/images`` first, so the report shows them.
    body : array, optional
        The body mask the plan's skin came from; found again when not given.
    """
    from ..anatomy.autoseg import body_of

    d = Path(plan_dir)
    ref = dicom_reference
    if dicom and ref is None:  # fail before anything is written
        from .dicom_export import reference_header

        ref = reference_header(ct.meta.source, ct.meta.series_instance_uid)
    if doc is None:
        doc = read_plan(d)
        if doc.get("image", {}).get("sha256") != ct.sha256:
            raise InputError(f"{d / 'plan.json'}: was planned on another scan (voxel hash differs from the CT given)")
        body = body if body is not None else body_of(ct, structures)
        identify(doc, ct)
        add_room_terms(doc, ct, body)
        uid_map = new_uid_map() if anonymize else None
        if uid_map is not None:
            doc = anonymize_plan(doc, uid_map)
        write_json_atomic(doc, d / "plan.json")
    elif doc.get("image", {}).get("sha256") != ct.sha256:
        raise InputError("the plan was made on another scan (voxel hash differs from the CT given)")

    extra = [target.structure] if target is not None and target.structure is not None else []
    steps = 4 + int(meshes) + int(ref is not None)

    def step(n: int) -> None:
        if progress is not None:
            progress(n, steps, "writing the report")

    step(0)
    scene_page = None
    if views:
        scene_page = _render_scene_views(d, ct, structures, doc, scene_html)
    step(1)
    images = report_images(d, ct, structures, doc, extra)
    facts = report_facts(doc)
    title = facts.title
    step(2)
    pdf = write_pdf(facts, images, d / "report.pdf", title=title)
    links = [("The 3D scene: opens in a browser, offline (scene3d.html)", scene_page.name)] if scene_page else []
    html = write_html(facts, images, d / "report.html", title=title, links=links)
    marks = write_markups(doc, d)
    rs = ReportSet(d, pdf, html, marks, dict(images))
    step(3)
    if meshes:
        rs.meshes = write_meshes(structures, doc, d, extra)
        step(4)
    if ref is not None:
        from .dicom_export import write_dicom

        from .dicom_plan import write_plan_objects

        rs.dicom = write_dicom(pdf, images, ref, d / "dicom", title, uid_map)
        more, rs.dicom_notes = write_plan_objects(d / "dicom", structures, ct, doc, uid_map)
        rs.dicom += more
    step(steps)
    return rs


def _render_scene_views(plan_dir: Path, ct: Image, structures: StructureSet, doc: dict[str, Any],
                        scene_html: bool = False) -> Path | None:
    """The scene's views of the plan, offscreen, into ``plan_dir/images`` (the report shows them),
    and with ``scene_html`` the 3D scene as one offline page (its path is returned)."""
    if not doc.get("trajectories"):
        return None  # the views are of a needle; a plan without one keeps the planes through the target
    import numpy as np

    from ..scene import Scene, case_from_objects, render_views

    risk = None
    rm = plan_dir / "risk_map.npz"
    if rm.is_file():
        with np.load(rm) as z:
            risk = {"entries": z["entries_lps"], "score": z["score"], "reason": z["reason"]}
    case = case_from_objects(ct, structures, doc, risk)
    if (plan_dir / "structures.seg.nrrd").is_file():
        case.folder = plan_dir  # the surfaces meshed here are kept for the viewer and the web review
    scene = Scene(case)
    render_views(scene, plan_dir)
    if case.folder is not None:
        scene.coarse_meshes  # noqa: B018 - kept now (about 0.5 s on a chest CT), not meshed when a screen opens the plan
    if not scene_html:
        return None
    from .scene_html import FILE, write_scene_html

    return write_scene_html(scene, plan_dir / FILE)
