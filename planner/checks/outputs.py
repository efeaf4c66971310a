"""What a check writes beside its ``check.json``: images, the check page (PDF and HTML) and,
with ``--dicom``, DICOM objects. Called by :func:`planner.checks.run.run_check` with the check's
staging folder; everything written there appears in ``checks/NN/`` at once.

``checks/NN/``:

- ``needles_plane.png`` and ``bullseye.png`` (:mod:`.figures`): the check scan with the planned
  and the actual needle in one plane, and the view down the planned axis;
- ``check.pdf`` and ``check.html`` (:mod:`.page`): the check page, the same strings in both;
- with ``dicom``: ``dicom/check.dcm`` (the page as Encapsulated PDF) and ``dicom/sc_<image>.dcm``
  (the images as Secondary Capture), in the planning CT's study (patient and study copied from
  its header, as the plan's DICOM set is), a new pair of series per check (one for the page,
  one for the images: a series holds one modality);
- with ``anonymize``: the page without the patient and study header, the check scan's path or
  UIDs, and the DICOM objects de-identified (PS3.15 basic profile, new UIDs, consistent within
  the check: they then form a study of their own).

``checks/index.html`` (:func:`write_check_index`), the procedure log as a page, is refreshed
too: it lists every check of the plan folder, this one included.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from ..atomic import write_bytes_atomic, write_text_atomic

IMAGES = ("needles_plane", "bullseye")
#: Series numbers of a check's DICOM objects: 10000 + 10 * NN + 1 (page) and + 2 (images).
SERIES_BASE = 10000


@dataclass
class CheckContext:
    """What the check's outputs are drawn from (all already loaded and verified by run_check)."""

    plan: Any  # planner.planning.model.Plan (read from plan.json)
    plan_dir: Path
    planning: Any  # planner.images.Image: the planning CT
    check: Any  # planner.images.Image: the check scan (its own coordinates)
    structures: Any  # planner.anatomy StructureSet on the planning CT's grid
    check_to_planning: np.ndarray  # 4x4, check-scan LPS -> planning-CT LPS
    preset: Any  # planner.planning.presets Preset


def check_number(folder: str | os.PathLike[str]) -> int | None:
    """The check's number from its folder's name: ``checks/03`` or its staging ``checks/.03.new``."""
    name = Path(folder).name.lstrip(".").split(".")[0]
    return int(name) if name.isdigit() else None


def write_check_outputs(staging: Path, document: dict[str, Any], context: CheckContext, *, dicom: bool = False,
                        anonymize: bool = False) -> list[Path]:
    """Write the check's images and page into ``staging``; the paths written."""
    from ..report.html import write_html
    from ..report.pdf import write_pdf
    from .figures import draw_bullseye, draw_needles_plane
    from .page import CAPTIONS, check_facts, images_position

    staging = Path(staging)
    number = check_number(staging)
    ref = None
    if dicom:  # before anything is drawn: a planning CT that is not DICOM is refused at once
        from ..report.dicom_export import reference_header

        meta = context.planning.meta
        ref = reference_header(meta.source, meta.series_instance_uid)
    try:
        plan_doc = json.loads((Path(context.plan_dir) / "plan.json").read_text("utf-8"))
    except (OSError, ValueError):
        plan_doc = context.plan.to_json()
    diameter = getattr(context.plan.target, "diameter_mm", None)
    procedure = context.plan.procedure
    args = (document, context.planning, context.check, context.check_to_planning, diameter, procedure)
    target = _target_structure(context)
    images = {
        "needles_plane": write_bytes_atomic(draw_needles_plane(*args, number=number, target_structure=target)[0],
                                            staging / "needles_plane.png"),
        "bullseye": write_bytes_atomic(draw_bullseye(*args, target_structure=target)[0], staging / "bullseye.png"),
    }
    facts = check_facts(document, plan_doc, number, anonymize)
    at = images_position(facts)
    pdf = write_pdf(facts, images, staging / "check.pdf", title=facts.title, captions=CAPTIONS, images_at=at)
    html = write_html(facts, images, staging / "check.html", title=facts.title, captions=CAPTIONS, images_at=at)
    written = [*images.values(), pdf, html]
    if ref is not None:
        written += write_check_dicom(pdf, images, ref, staging / "dicom", facts.title, number or 0, anonymize)
    if number is not None:
        written.append(write_check_index(context.plan_dir, pending=(number, document)))
    return written


def _target_structure(context: CheckContext) -> Any:
    """The plan's target as a segmented structure, when the structures hold it (a lesion)."""
    label = getattr(context.plan.target, "label", None)
    sset = context.structures
    try:
        return sset[label] if sset is not None and label and label in sset else None
    except (KeyError, TypeError):
        return None


def write_check_index(plan_dir: str | os.PathLike[str], pending: tuple[int, dict[str, Any]] | None = None) -> Path:
    """Write ``plan_dir/checks/index.html``, the procedure log as a page: every check of the plan
    folder (number, time, deviation, predicted miss, correction, link to its page), read from each
    ``checks/NN/check.json``; ``pending`` adds a check whose folder is still being written."""
    from .page import render_check_index

    d = Path(plan_dir)
    return write_text_atomic(render_check_index(d, pending), d / "checks" / "index.html")


def _patient_orientation(png: Path) -> tuple[str, str] | None:
    """The (row, column) directions of a check image, from the geometry it carries (H/F, as DICOM says)."""
    from ..scene import geometry as G
    from .figures import plane_from_png

    try:
        plane = plane_from_png(png)
    except (KeyError, ValueError, OSError):
        return None
    f = G.ViewFrame(plane.origin, plane.normal, -plane.down)
    lt = G.orientation_letters(f, G.HEAD_FOOT)
    return lt["right"], lt["bottom"]


def write_check_dicom(pdf_path: Path, images: Mapping[str, Path], ref: Any, out_dir: Path, title: str, number: int,
                      anonymize: bool = False) -> list[Path]:
    """``check.dcm`` (the page, Encapsulated PDF) and ``sc_<name>.dcm`` (the images, Secondary
    Capture) in the study of ``ref`` (a header of the planning CT), each series new; every object
    checked with :func:`planner.report.dicom_export.validate_iod` before it is written."""
    from PIL import Image as PILImage
    from pydicom.uid import generate_uid

    from ..report.anonymize import new_uid_map
    from ..report.dicom_export import encapsulated_pdf, save_datasets, secondary_capture
    from .page import CAPTIONS

    uid_map = new_uid_map() if anonymize else None
    label = f"{number:02d}"
    page = encapsulated_pdf(Path(pdf_path).read_bytes(), ref, title)
    page.SeriesNumber = SERIES_BASE + 10 * number + 1
    page.SeriesDescription = f"Needle check {label}: page"
    if anonymize:
        page.BurnedInAnnotation = "NO"  # the de-identified page names no one
    objs: list[tuple[str, Any]] = [("check.dcm", page)]
    series = generate_uid()
    for n, (name, p) in enumerate(images.items(), start=1):
        rgb = np.asarray(PILImage.open(p).convert("RGB"))
        orientation = _patient_orientation(Path(p))
        sc = secondary_capture(rgb, ref, series, n, CAPTIONS.get(name, name),
                               (orientation[0][0], orientation[1][0]) if orientation else None)
        if orientation:  # an oblique view: both letters, the main direction first (PS3.3 C.7.6.1.1.1)
            sc.PatientOrientation = list(orientation)
        sc.SeriesNumber = SERIES_BASE + 10 * number + 2
        sc.SeriesDescription = f"Needle check {label}: images"
        sc.BurnedInAnnotation = "NO"  # drawings of the scans: no name, ID or date on them
        objs.append((f"sc_{name}.dcm", sc))
    return save_datasets(objs, out_dir, uid_map)
