"""The main job, from files to a written plan: what ``planner plan`` and the demo both run.

load the CT -> import or segment the structures -> resolve the target -> plan -> explain the
chosen trajectories -> write ``plan.json``, ``risk_map.npz`` and ``structures.seg.nrrd`` (atomically) into ``out``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .anatomy import StructureSet, load_structures, segment_ct
from .atomic import atomic_path, replace_folder
from .anatomy.autoseg import body_of
from .anatomy.fissure_points import read_fissure_points
from .anatomy.slicer_seg import save_slicer_seg
from .anatomy.target import Target, check_structures_fit, check_target, parse_point, target_at_point, target_from_seed, target_from_structure
from .errors import InputError
from .images import Image, load_image
from .planning import PlanResult, Preset, load_preset, plan
from .planning.explain import describe
from .planning.output import STRUCTURES_FILE, file_sha256, plan_document, target_block, write_json_atomic, write_risk_map

Progress = Callable[[int, int, str], None]


@dataclass
class PlanRun:
    """What one run planned: the first target's plan, and every target's when there are several."""

    ct: Image
    structures: StructureSet
    target: Target
    preset: Preset
    result: PlanResult
    document: dict[str, Any]
    out: Path
    targets: list[Target] = field(default_factory=list)
    results: list[PlanResult] = field(default_factory=list)
    body: np.ndarray | None = None  # the body the skin came from (the report reuses it)

    @property
    def warnings(self) -> list[str]:
        """What the user should check before trusting the plan (large seed lesion, odd target, ...)."""
        return list(self.document.get("warnings", []))

    @property
    def ok(self) -> bool:
        """Every target has at least one safe trajectory."""
        return all(r.status == "ok" for r in (self.results or [self.result]))


TargetSpec = tuple[str, str]  # ("point" | "label" | "seed" | "joint", text)


def run_plan(
    ct_path: str | os.PathLike[str],
    procedure: str,
    out: str | os.PathLike[str],
    *,
    structures: str | os.PathLike[str] | None = None,
    target_point: str | None = None,
    target_label: str | None = None,
    seed: str | None = None,
    targets: list[TargetSpec] | None = None,
    series_uid: str | None = None,
    n_best: int = 5,
    approach: str | None = None,
    side: str | None = None,
    modality: str = "CT",
    fissure_points: str | os.PathLike[str] | None = None,
    progress: Progress | None = None,
) -> PlanRun:
    """Plan one procedure and write its files.

    The target is one of ``target_point``, ``target_label`` or ``seed``; or, for several
    targets in one plan (both knees, several synovial sites), ``targets``: a list of
    ``(kind, text)`` with kind "point", "label", "seed" or "joint" (``hip_right``,
    ``knee_recess_left``: found from the bones, see :mod:`.anatomy.joints`). Each target gets its own
    trajectories; ``plan.json`` keeps the first target in its core fields and every target
    under ``targets``, and its status is "ok" only when every target has a safe trajectory.
    ``fissure_points``: a 3D Slicer ``.mrk.json`` with points on the fissures of the lungs whose
    fissures the automatic segmentation should take from them (see :mod:`.anatomy.fissure_points`).
    """
    singles = [(k, v) for k, v in (("point", target_point), ("label", target_label), ("seed", seed)) if v is not None]
    specs = list(targets or []) + singles
    if not specs:
        raise InputError("give a target: a point, a structure label or a seed point")
    if targets is None and len(singles) != 1:
        raise InputError("give exactly one target: a point, a structure label or a seed point")
    preset = load_preset(procedure, approach)  # an unknown id or approach fails before the long work
    if modality not in ("CT", "MR"):
        raise InputError(f"modality {modality!r}: plans are made on CT or MR")
    if modality == "MR" and structures is None:
        raise InputError(f"{ct_path}: an MR plan needs --structures (the automatic segmentation works on CT "
                         "Hounsfield units only); segment the MR in 3D Slicer or TotalSegmentator's MR task")
    if modality == "MR" and any(kind == "seed" for kind, _ in specs):
        raise InputError("--seed segments a lesion by CT density; on MR give --target X,Y,Z or --target-label")
    for kind, text in specs:  # a mistyped point fails now, before the long work
        if kind in ("point", "seed"):
            parse_point(text)
    points = None
    if fissure_points is not None:
        if structures is not None:
            raise InputError("--fissure-points shape the automatic segmentation's lobes; with --structures, give "
                             "the lobes among the structures instead")
        points = read_fissure_points(fissure_points)
    ct = load_image(ct_path, series_uid, modality, progress)
    if structures is not None:
        sset = load_structures(structures, ct, progress=progress)
        source = str(structures)
    else:
        sset = segment_ct(ct, progress=progress, fissure_points=points)
        source = "automatic segmentation"
    if modality == "MR":
        sset.notes.append(f"MR scan: every structure comes from {source}; the automatic segmentation is "
                          "CT-specific and was not used; the skin is found from the MR signal")
    resolved = [_resolve_target(ct, sset, kind, text) for kind, text in specs]
    body = body_of(ct, sset)
    warnings: list[str] = []
    if structures is not None:  # imported: they must lie in this scan's own body
        warnings += check_structures_fit(sset, body_of(ct), str(structures))
    for target in resolved:
        warnings += check_target(ct, body, target)
    results = []
    for target in resolved:
        result = plan(ct, sset, target, preset, body, n_best=n_best, side=side)
        for t in result.trajectories:
            describe(t, sset, preset, target.label, target.diameter_mm)
        results.append(result)
    out_dir = Path(out)
    # the structures the plan was made against, so the viewer and review reopen the very same
    # masks; plan.json records their hash
    save_slicer_seg(sset, out_dir / STRUCTURES_FILE)
    doc = plan_document(ct, resolved[0], preset, results[0], source, sset.notes, side=side,
                        structures_sha256=file_sha256(out_dir / STRUCTURES_FILE))
    doc["warnings"] = warnings
    if len(resolved) > 1:
        doc["targets"] = [target_block(t, r) for t, r in zip(resolved, results)]
        failed = [t.label for t, r in zip(resolved, results) if r.status != "ok"]
        if failed:
            doc["status"] = "no_safe_path"
            doc["explanation"] = list(doc["explanation"]) + [f"no safe trajectory for: {', '.join(failed)}"]
    write_json_atomic(doc, out_dir / "plan.json")
    for n, result in enumerate(results):
        write_risk_map(result, out_dir / ("risk_map.npz" if n == 0 else f"risk_map_{n + 1}.npz"))
    for n, result in enumerate(results):
        if result.trajectories and result.trajectories[0].probe is not None:
            name = "probe_plane.png" if n == 0 else f"probe_plane_{n + 1}.png"
            write_probe_view(ct, result.trajectories[0], out_dir / "images" / name)
    return PlanRun(ct, sset, resolved[0], preset, results[0], doc, out_dir, resolved, results, body)


def plan_and_write(ct_path: str | os.PathLike[str], procedure: str, out: str | os.PathLike[str], *,
                   dicom: bool = False, anonymize: bool = False,
                   also: Callable[[Path], Any] | None = None, **options: Any) -> tuple[PlanRun, Any]:
    """Plan (:func:`run_plan`, same ``options``) and write the whole plan folder ``out`` as one piece.

    ``out`` is checked (creatable, not somebody's other folder, not being written by another
    run) before any work; everything (``plan.json``, risk maps, structures, the report set,
    with ``dicom`` the DICOM objects, and what ``also(folder)`` adds) is written into a hidden
    sibling that replaces ``out`` only when all of it is written. A run that fails or is killed
    leaves the previous plan folder as it was; a new plan never mixes with an old one's files.
    Returns the run and its :class:`~planner.report.ReportSet`, both pointing into ``out``.
    """
    from .report import write_report_set

    if dicom:
        from .images import source_kind

        if source_kind(ct_path) != "dicom":
            raise InputError(f"{ct_path}: --dicom files the report in the CT's study, so the CT must be given as DICOM")
    dest = Path(out)
    with replace_folder(dest) as staging:
        run = run_plan(ct_path, procedure, staging, **options)
        rs = write_report_set(staging, run.ct, run.structures, dicom=dicom, anonymize=anonymize,
                              target=run.target, body=run.body)
        if also is not None:
            also(staging)
    run.out = dest
    return run, rs.moved(staging, dest)


def _resolve_target(ct: Image, sset: StructureSet, kind: str, text: str) -> Target:
    if kind == "point":
        return target_at_point(ct, parse_point(text))
    if kind == "seed":
        return target_from_seed(ct, parse_point(text))
    if kind == "label":
        return target_from_structure(ct, sset, str(text))
    if kind == "joint":
        from .anatomy.joints import joint_target

        return joint_target(ct, sset, str(text))
    raise InputError(f"unknown kind of target {kind!r} (point, label, seed or joint)")


def write_probe_view(image: Image, trajectory: Any, path: Path, pixel_mm: float = 0.2) -> Path:
    """The scan in the ultrasound probe's plane, framed like the ultrasound image: the probe
    face on top (its marker end, towards the needle's entry, on the right), the needle drawn from
    the entry to the target, the target circled, a 1 cm scale bar. Written atomically as PNG."""
    from PIL import Image as PILImage, ImageDraw

    from .images.reslice import window
    from .planning.ultrasound import probe_plane_image

    probe = trajectory.probe
    pixels, to_lps = probe_plane_image(image, probe, trajectory.entry, trajectory.target, pixel_mm=pixel_mm)
    level, width = (400, 1800) if image.meta.modality == "CT" else (float(np.percentile(pixels, 60)),
                                                                   float(np.ptp(pixels)) or 1.0)
    im = PILImage.fromarray(window(pixels, level, width)).convert("RGB")
    draw = ImageDraw.Draw(im)
    def px(lps: np.ndarray) -> tuple[float, float]:
        """(col, row) of an LPS point of the plane."""
        cr = np.linalg.lstsq(to_lps[:, :2], np.asarray(lps, float) - to_lps[:, 2], rcond=None)[0]
        return float(cr[0]), float(cr[1])

    half = 20.0
    a, b = px(probe.centre - half * probe.long_axis), px(probe.centre + half * probe.long_axis)
    draw.line([a, b], fill=(80, 160, 255), width=6)  # the probe face
    draw.ellipse([b[0] - 6, b[1] - 6, b[0] + 6, b[1] + 6], fill=(80, 160, 255))  # its marker end
    e, t = px(trajectory.entry), px(trajectory.target)
    draw.line([e, t], fill=(255, 220, 0), width=3)
    draw.ellipse([t[0] - 12, t[1] - 12, t[0] + 12, t[1] + 12], outline=(255, 60, 60), width=3)
    bar = 10.0 / pixel_mm
    h = im.height
    draw.line([(20, h - 20), (20 + bar, h - 20)], fill=(255, 255, 255), width=3)
    draw.text((20, h - 38), "1 cm", fill=(255, 255, 255))
    draw.text((10, 10), f"probe plane: depth {probe.target_depth_mm:.0f} mm, needle {probe.needle_angle_deg:.0f} deg "
              f"to the skin", fill=(255, 255, 255))
    with atomic_path(path, ".png") as tmp:
        im.save(tmp, format="PNG")
    return path
