"""One planning session: the scan, its structures, the procedure's rules, and what planning caches.

Every way of planning goes through :class:`PlanningSession`: ``planner plan`` and the demo
(:func:`plan_and_write`), the Python API (:func:`planner.plan`), the viewer's re-plan; later the
web review, check scans and batch runs. A session owns the CT, the structures, the preset with
its approach, the side, the body the skin comes from, and the prepared planning context of each
target region (distance fields, skin), so that re-planning a target moved a few millimetres
takes a fraction of a second and says everything the first plan said.

Data flows one way: images -> anatomy -> planning -> report; this module only wires them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from .anatomy import StructureSet, load_structures, segment_ct
from .anatomy.autoseg import body_of
from .anatomy.registry import StructureClass
from .anatomy.target import (Target, check_structures_fit, check_target, parse_point, target_at_point,
                             target_from_seed, target_from_structure)
from .atomic import atomic_path, replace_folder, write_json_atomic
from .errors import InputError
from .images import Image, load_image
from .planning import Preset, load_preset
from .planning.presets import load_preset_file
from .planning import plan as plan_target
from .planning import prepare
from .planning.explain import describe
from .planning.model import (STRUCTURES_FILE, ImageRef, Plan, PresetRef, TargetPlan, TargetRecord,
                             TrajectoryRecord)
from .planning.output import file_sha256, plan_extras, plan_identity, write_risk_map
from .planning.room import DEFINITION as ROOM_DEFINITION
from .planning.room import room_terms

Progress = Callable[[int, int, str], None]
TARGET_KINDS = ("point", "label", "seed", "joint")
#: A prepared context covers the needle's reach around its centre plus 10 mm: it is reused for
#: a target moved less than this (mm) from that centre.
CONTEXT_REUSE_MM = 5.0


@dataclass(frozen=True)
class TargetSpec:
    """A target as the user gives it: ``kind`` "point" or "seed" (``value`` "X,Y,Z" in LPS mm, or
    three numbers), "label" (a structure's name) or "joint" (``hip_right``, ``knee_recess_left``)."""

    kind: str
    value: Any

    def __post_init__(self) -> None:
        if self.kind not in TARGET_KINDS:
            raise InputError(f"unknown kind of target {self.kind!r} ({', '.join(TARGET_KINDS)})")
        if self.kind in ("point", "seed"):
            self.point()  # a mistyped point fails now, before any long work

    def point(self) -> np.ndarray:
        if isinstance(self.value, str):
            return parse_point(self.value)
        p = np.asarray(self.value, float).reshape(-1)
        if p.shape != (3,) or not np.all(np.isfinite(p)):
            raise InputError(f"target {self.value!r}: expected three finite numbers X,Y,Z in LPS millimetres")
        return p


@dataclass
class PlanRequest:
    """Everything ``planner plan`` is asked, checked (:meth:`check`) before any long work."""

    ct: str | os.PathLike[str]
    procedure: str
    targets: list[TargetSpec]
    structures: str | os.PathLike[str] | None = None
    series_uid: str | None = None
    modality: str = "CT"
    echo: int | None = None
    phase: int | None = None
    approach: str | None = None
    side: str | None = None
    n_best: int = 5
    fissure_points: str | os.PathLike[str] | None = None
    pet: str | os.PathLike[str] | None = None  # a PET series (same frame of reference as the CT), in SUV
    avid: bool = False  # aim at the lesion's most avid part (SUVpeak) instead of its deepest point
    pet_registration: str | os.PathLike[str] | None = None  # a 4x4 PET LPS -> CT LPS (another frame of reference)
    preset_file: str | os.PathLike[str] | None = None  # a department variant of the preset (weights only)

    def check(self) -> tuple[Preset, Any]:
        """The preset, and the fissure points when given; InputError for anything that cannot work."""
        if not self.targets:
            raise InputError("give a target: a point, a structure label, a seed point or a joint")
        preset = self.preset()  # an unknown id or approach, or a variant with other hard constraints, fails now
        if self.modality not in ("CT", "MR"):
            raise InputError(f"modality {self.modality!r}: plans are made on CT or MR")
        if self.side not in (None, "left", "right"):
            raise InputError(f"side {self.side!r}: left or right (of the patient)")
        if not isinstance(self.n_best, int) or self.n_best < 1:
            raise InputError(f"n {self.n_best!r}: at least one trajectory must be kept")
        if self.modality == "MR" and self.structures is None and self.fissure_points is not None:
            raise InputError("--fissure-points shape the lobes of a chest CT; an MR is segmented as a knee")
        if self.modality == "MR" and any(t.kind == "seed" for t in self.targets):
            raise InputError("--seed segments a lesion by CT density; on MR give --target X,Y,Z or --target-label")
        if self.avid and self.pet is None:
            raise InputError("--avid aims at the most avid part of the lesion on PET: give the PET with --pet PATH")
        if self.avid and any(t.kind not in ("label", "seed") for t in self.targets):
            raise InputError("--avid needs a lesion target: --target-label NAME (with --structures) or --seed X,Y,Z, "
                             "not a bare point or a joint")
        if self.pet is not None and not Path(self.pet).exists():
            raise InputError(f"{self.pet}: no such file or folder (--pet)")
        if self.pet_registration is not None:
            if self.pet is None:
                raise InputError("--pet-registration maps a PET onto the CT: give the PET with --pet PATH")
            from .images.pet import read_registration

            read_registration(self.pet_registration)  # a bad matrix fails now, before any work
        points = None
        if self.fissure_points is not None:
            if self.structures is not None:
                raise InputError("--fissure-points shape the automatic segmentation's lobes; with --structures, "
                                 "give the lobes among the structures instead")
            from .anatomy.fissure_points import read_fissure_points

            points = read_fissure_points(self.fissure_points)
        return preset, points

    def preset(self) -> Preset:
        """The shipped preset of the procedure, or the department variant of ``preset_file``."""
        if self.preset_file is not None:
            return load_preset_file(self.preset_file, self.approach, procedure=self.procedure)
        return load_preset(self.procedure, self.approach)


class PlanningSession:
    """The scan, its structures and one procedure's rules, planned against as often as asked.

    Parameters
    ----------
    image : Image
        The planning CT (or MR).
    structures : StructureSet
        The structures on the image's grid.
    procedure, approach, side
        The preset id, its approach (None: the default) and the side of the target for lateral
        and medial approaches (None: from the target's label).
    structures_source : str
        Where the structures came from ("automatic segmentation", or the file imported).
    imported : bool
        The structures were imported: each plan checks they lie in this scan's body.
    body : array, optional
        The body mask the skin comes from, when already known (else computed once when needed).
    preset_file : path, optional
        A department variant of the procedure's preset (:func:`planner.planning.presets.load_preset_file`):
        its weights rank the paths; its hard constraints are the shipped preset's.
    """

    def __init__(self, image: Image, structures: StructureSet, *, procedure: str, approach: str | None = None,
                 side: str | None = None, structures_source: str = "supplied structures", imported: bool = False,
                 body: np.ndarray | None = None, preset_file: str | os.PathLike[str] | None = None):
        self.image = image
        self.structures = structures
        self.preset = load_preset_file(preset_file, approach, procedure=procedure) if preset_file is not None \
            else load_preset(procedure, approach)
        self.side = side
        self.structures_source = structures_source
        self.imported = imported
        self._body: np.ndarray | None = body
        self._contexts: list[tuple[np.ndarray, Any]] = []
        self._fit_warnings: list[str] | None = None
        self.echo: int | None = None  # the echo / phase the image was loaded with, when asked for
        self.phase: int | None = None
        self.pet: Any = None  # a PlanPet: the PET in SUV on this image's grid (see attach_pet)
        self.avid = False  # lesion targets aim at their SUVpeak

    def attach_pet(self, path: str | os.PathLike[str], avid: bool = False, progress: Progress | None = None,
                   registration: str | os.PathLike[str] | None = None) -> None:
        """Load a PET in SUV and put it on this image's grid once (same frame of reference, or
        through ``registration``, a file with the 4x4 PET LPS -> CT LPS; else refused); with
        ``avid``, lesion targets aim at their most avid part."""
        from .planning.pet_plan import PlanPet, core_length_mm

        self.pet = PlanPet.load(path, self.image, progress, registration=registration)
        self.pet.core_length_mm = core_length_mm(self.preset)[0]
        self.avid = avid

    # -- opening -------------------------------------------------------------------------------
    @classmethod
    def open(cls, request: PlanRequest, progress: Progress | None = None) -> "PlanningSession":
        """Load the scan and its structures (imported, or segmented from a CT) for ``request``."""
        preset, points = request.check()
        ct = load_image(request.ct, request.series_uid, request.modality, progress, echo=request.echo,
                        phase=request.phase)
        mr_echo = request.echo
        if request.structures is not None:
            sset = load_structures(request.structures, ct, progress=progress)
            source = str(request.structures)
        elif request.modality == "MR":
            from .anatomy.autoseg.knee_mr import segment_mr_scan

            ct, seg = segment_mr_scan(request.ct, request.series_uid, request.echo, progress, image=ct)
            sset, mr_echo = seg.structures, seg.echo
            source = "automatic segmentation (knee MR)"
        else:
            from .anatomy.cache import cached_segmentation

            sset = cached_segmentation(ct) if points is None else None  # prepared in advance (planner listen)
            if sset is None:
                sset = segment_ct(ct, progress=progress, fissure_points=points)
            source = "automatic segmentation"
        if len(sset) == 0:  # nothing to avoid: every path would look safe
            raise InputError(f"{request.structures or request.ct}: " + (
                "holds no structure (every one is empty): there is nothing to plan against"
                if request.structures is not None else
                "the automatic segmentation found nothing (no body, lungs or bones): is it a CT of a patient?"))
        if request.modality == "MR" and request.structures is not None:
            sset.notes.append(f"MR scan: every structure comes from {source}; the automatic segmentation is "
                              "CT-specific and was not used; the skin is found from the MR signal")
        session = cls(ct, sset, procedure=preset.id, approach=request.approach, side=request.side,
                      structures_source=source, imported=request.structures is not None,
                      preset_file=request.preset_file)
        session.echo, session.phase = mr_echo, request.phase
        session.check_structures()  # the imported ones alone
        if request.structures is not None and request.modality != "MR":
            complement_structures(ct, sset, preset, progress)
        bundles = preset.raw.get("limb_bundles_by_position")
        if bundles and request.modality != "MR":
            from .anatomy.limb import limb_bundles

            sset.notes.extend(limb_bundles(ct, sset, session.body, bundles))
        if request.pet is not None:
            session.attach_pet(request.pet, request.avid, progress, registration=request.pet_registration)
        return session

    @property
    def body(self) -> np.ndarray:
        """The body mask the skin comes from (computed once)."""
        if self._body is None:
            self._body = body_of(self.image, self.structures)
        return self._body

    def check_structures(self) -> list[str]:
        """Imported structures must lie in this scan's own body (refused when they do not at all);
        the warnings when a share of them lies outside it."""
        if self._fit_warnings is None:
            self._fit_warnings = check_structures_fit(self.structures, body_of(self.image), self.structures_source) \
                if self.imported else []
        return list(self._fit_warnings)

    # -- targets -------------------------------------------------------------------------------
    def target(self, spec: TargetSpec | Target) -> Target:
        """The target a spec names on this scan (a point, a structure, a lesion grown from a seed, a joint)."""
        if isinstance(spec, Target):
            return spec
        if spec.kind == "point":
            return target_at_point(self.image, spec.point())
        if spec.kind == "seed":
            return self._avid(target_from_seed(self.image, spec.point()))
        if spec.kind == "label":
            label = str(spec.value)
            if label == "effusion" and label not in self.structures:  # the joint's effusion, whatever its side
                found = [n for n in self.structures.names() if "effusion" in n]
                label = found[0] if len(found) == 1 else label
            knee_mr = (self.structures_source.startswith("automatic segmentation")
                       and (self.image.meta.modality or "").upper() == "MR")
            if label.startswith("knee_effusion_") and (knee_mr or spec.value == "effusion"):
                # the knee MR's fluid is pockets: one a needle from the front or side can reach
                from .anatomy.autoseg.knee_mr import effusion_target

                return self._avid(effusion_target(self.image, self.structures, label))
            return self._avid(target_from_structure(self.image, self.structures, label))
        from .anatomy.joints import joint_target

        return joint_target(self.image, self.structures, str(spec.value))

    def _avid(self, target: Target) -> Target:
        return self.pet.avid_target(target) if self.avid and self.pet is not None else target

    # -- planning ------------------------------------------------------------------------------
    def _context(self, point: np.ndarray) -> Any:
        for centre, ctx in self._contexts:
            if np.linalg.norm(centre - point) <= CONTEXT_REUSE_MM:
                return ctx
        ctx = prepare(self.image, self.structures, self.preset, point, self.body)
        self._contexts.append((point.copy(), ctx))
        del self._contexts[:-4]  # a few regions at most: each holds distance fields
        return ctx

    def plan(self, targets: Sequence[TargetSpec | Target], n_best: int = 5, progress: Progress | None = None,
             entry_near: tuple[Any, float] | None = None) -> Plan:
        """Plan every target; returns the :class:`~planner.planning.model.Plan` (not yet written).
        ``entry_near`` (a point LPS, a radius mm): only skin entries that close to the point (a new
        trajectory from a needle's current skin puncture)."""
        if not targets:
            raise InputError("give a target: a point, a structure label, a seed point or a joint")
        resolved = [self.target(t) for t in targets]
        warnings = self.check_structures()
        for t in resolved:
            warnings += check_target(self.image, self.body, t)
        blocks, results = [], []
        for n, target in enumerate(resolved):
            if progress is not None:
                progress(n, len(resolved), "planning")
            point = np.asarray(target.point, float)
            rerank = self.avid and self.pet is not None and target.how.endswith("+avid")
            result = plan_target(self.image, self.structures, target, self.preset, self.body,
                                 n_best=n_best * 4 if rerank else n_best,
                                 context=self._context(point), side=self.side, entry_near=entry_near)
            if rerank:
                self.pet.rerank(result, target, n_best)  # by the SUV each core samples
            for t in result.trajectories:
                describe(t, self.structures, self.preset, target.label, target.diameter_mm)
            trajectories = []
            for t in result.trajectories:
                d = t.to_dict()
                d["room"] = room_terms(d, self.image, self.body)
                trajectories.append(TrajectoryRecord.from_json(d))
            blocks.append(TargetPlan(TargetRecord.from_json(target.to_dict()), result.status, trajectories,
                                     dict(result.rejected), result.n_candidates, list(result.explanation)))
            results.append(result)
        if progress is not None:
            progress(len(resolved), len(resolved), "planning")
        extra = plan_extras(self.image, self.preset, results[0], self.structures_source, self.structures.notes)
        extra.update(plan_identity(self.image, self.preset.title))
        extra["room_definition"] = ROOM_DEFINITION
        if self.pet is not None:
            extra["pet"] = self.pet.summary(resolved, results, self.preset, self.avid)
        if self.preset.raw.get("notes"):  # what the preset's rules cannot check (e.g. a sarcoma's compartments)
            extra["procedure_notes"] = [str(n) for n in self.preset.raw["notes"]]
        m = self.image.meta
        plan = Plan(
            image=ImageRef(m.series_instance_uid, self.image.sha256, m.source, m.study_instance_uid,
                           m.frame_of_reference_uid, m.modality, list(m.corrections), self.echo, self.phase),
            procedure=self.preset.id, targets=blocks, preset=PresetRef(**self.preset.binding(self.side)),
            warnings=warnings, extra=extra, session=self, results=results, resolved=resolved,
        )
        return plan

    # -- writing -------------------------------------------------------------------------------
    def write(self, plan: Plan, folder: str | os.PathLike[str], *, dicom: bool = False, anonymize: bool = False,
              also: Callable[[Path], Any] | None = None, scene_html: bool = False) -> Any:
        """Write ``plan`` as the whole folder ``folder`` (see :meth:`Plan.write`)."""
        ref = self._dicom_reference() if dicom else None  # fails before anything is written
        with replace_folder(folder) as staging:
            rs = self.write_into(plan, staging, dicom_reference=ref, anonymize=anonymize, scene_html=scene_html)
            if also is not None:
                also(staging)
        return rs.moved(staging, Path(folder))

    def _dicom_reference(self) -> Any:
        from .images import source_kind
        from .report.dicom_export import reference_header

        src = self.image.meta.source
        if not src or source_kind(src) != "dicom":
            raise InputError(f"{src or 'the scan'}: --dicom files the report in the CT's study, so the CT must be "
                             "given as DICOM")
        if not self.image.meta.study_instance_uid:
            raise InputError(f"{src}: its StudyInstanceUID is blank (an anonymised series): --dicom files the report "
                             "in the CT's study, which cannot be named; plan without --dicom")
        return reference_header(src, self.image.meta.series_instance_uid)

    def write_into(self, plan: Plan, staging: Path, *, dicom_reference: Any = None, anonymize: bool = False,
                   progress: Progress | None = None, report: bool = True, scene_html: bool = False) -> Any:
        """Every file of the plan folder into ``staging`` (an empty folder); ``plan.json`` once.
        Without ``report``: plan.json, the structures and the risk maps only (no report set; None
        is returned). ``scene_html``: also the 3D scene as one offline page (``scene3d.html``)."""
        from .report import write_report_set
        from .report.anonymize import anonymize_plan, new_uid_map

        save_structures = staging / STRUCTURES_FILE
        from .anatomy.slicer_seg import save_slicer_seg

        save_slicer_seg(self.structures, save_structures)
        plan.structures_sha256 = file_sha256(save_structures)
        doc = plan.to_json()
        uid_map = new_uid_map() if anonymize else None
        if uid_map is not None:
            doc = anonymize_plan(doc, uid_map)
        write_json_atomic(doc, staging / "plan.json")
        for n, result in enumerate(plan.results):
            write_risk_map(result, staging / ("risk_map.npz" if n == 0 else f"risk_map_{n + 1}.npz"))
            if result.trajectories and result.trajectories[0].probe is not None:
                name = "probe_plane.png" if n == 0 else f"probe_plane_{n + 1}.png"
                write_probe_view(self.image, result.trajectories[0], staging / "images" / name)
        if self.pet is not None and "pet" in plan.extra:
            write_pet_images(self.image, self.pet, plan.extra["pet"], plan.results, staging / "images")
        if not report:
            return None
        if any(r.trajectories for r in plan.results):  # read back once into the mask cache: the
            from .anatomy.slicer_seg import load_slicer_seg  # procedure room's checks then start at once

            load_slicer_seg(save_structures, self.image)
        first = plan.resolved[0] if plan.resolved else None
        return write_report_set(staging, self.image, self.structures, doc=doc, dicom_reference=dicom_reference,
                                uid_map=uid_map, target=first, body=self.body, progress=progress,
                                scene_html=scene_html)


#: Classes a preset may avoid that the automatic CT segmentation finds reliably, with its part.
COMPLEMENT_PARTS = {StructureClass.BONE: "bones", StructureClass.LUNG: "lungs", StructureClass.AIRWAY: "airways"}


def complement_structures(ct: Image, sset: StructureSet, preset: Any, progress: Progress | None = None) -> list[str]:
    """Imported structures that lack a class the preset avoids (e.g. a tumour contour alone, with
    no bone): that class is added from the automatic CT segmentation, minus the imported
    target's voxels, and a note says so; a plan never ignores the femur because the import had
    only the tumour. Returns the names added."""
    C = StructureClass
    have = {s.cls for s in sset}
    if C.LOBE in have:
        have.add(C.LUNG)
    wanted = [part for cls, part in COMPLEMENT_PARTS.items()
              if cls not in have and any(r.cls == cls for r in preset.avoid)]
    if not wanted:
        return []
    auto = segment_ct(ct, progress=progress, parts=wanted)
    targets = [t for t in sset if t.cls == C.TARGET]
    added = []
    for s in list(auto):
        if COMPLEMENT_PARTS.get(s.cls) not in wanted or s.name in sset:
            continue
        mask = s.full(sset.shape)
        for t in targets:
            mask[t.bbox()] &= ~t.mask
        if sset.add(s.name, mask, cls=s.cls, colour=s.colour, source="automatic segmentation (complement)"):
            added.append(s.name)
    for cls in sorted({c.value for c, part in COMPLEMENT_PARTS.items() if part in wanted}):
        found = [n for n in added if sset[n].cls.value == cls]
        if not found and cls != StructureClass.BONE.value:
            continue  # no lung in a thigh: nothing to say
        sset.notes.append(
            f"{cls}: not among the imported structures and avoided by the preset: found by the automatic CT "
            f"segmentation ({', '.join(found)}) and avoided" if found else
            f"{cls}: not among the imported structures; the automatic CT segmentation finds none in this scan")
    return added


def plan_and_write(request: PlanRequest, out: str | os.PathLike[str], *, dicom: bool = False, anonymize: bool = False,
                   also: Callable[[Path], Any] | None = None, progress: Progress | None = None,
                   report: bool = True, scene_html: bool = False) -> tuple[PlanningSession, Plan, Any]:
    """What ``planner plan`` does: check the request and ``out`` before any work, open the
    session, plan, and write the whole plan folder as one piece (a run that fails or is killed
    leaves the previous plan folder as it was). Returns the session, the plan and its
    :class:`~planner.report.ReportSet`, pointing into ``out``."""
    request.check()
    if dicom:
        from .images import source_kind

        if source_kind(request.ct) != "dicom":
            raise InputError(f"{request.ct}: --dicom files the report in the CT's study, so the CT must be given "
                             "as DICOM")
    dest = Path(out)
    with replace_folder(dest) as staging:
        session = PlanningSession.open(request, progress)
        plan = session.plan(request.targets, n_best=request.n_best, progress=progress)
        ref = session._dicom_reference() if dicom else None
        rs = session.write_into(plan, staging, dicom_reference=ref, anonymize=anonymize, progress=progress,
                                report=report, scene_html=scene_html)
        if also is not None:
            also(staging)
    plan.folder = dest
    return session, plan, (rs.moved(staging, dest) if rs is not None else None)


def write_pet_images(image: Image, pet: Any, summary: dict[str, Any], results: Sequence[Any], folder: Path) -> list[Path]:
    """``pet_fusion.png`` (PET over CT in the chosen needle's plane, its core marked) and
    ``pet_mip.png`` (the PET's coronal maximum intensity projection with the target), for the
    first target with a trajectory; scaled to its lesion's SUVmax (or the PET's maximum)."""
    from .atomic import write_bytes_atomic
    from .report.pet_images import fusion_image, mip_image

    for block, result in zip(summary.get("targets", []), results):
        if not result.trajectories:
            continue
        t = result.trajectories[0]
        core = next((c["core"] for c in block.get("trajectories", []) if c.get("rank") == t.rank), {})
        lesion = block.get("lesion") or {}
        finite = np.isfinite(pet.suv.voxels)
        top = float(lesion.get("suv_max") or (np.max(pet.suv.voxels[finite]) if finite.any() else 0.0)) or 1.0
        entry, target = np.asarray(t.entry, float), np.asarray(t.target, float)
        ends = (np.asarray(core["core_start"], float), np.asarray(core["core_end"], float)) \
            if "core_start" in core else (target, target)
        caption = (f"core SUV mean {core['suv_mean']:.1f}, lesion SUVmax {top:.1f}" if "suv_mean" in core
                   else f"lesion SUVmax {top:.1f}")
        return [write_bytes_atomic(fusion_image(image, pet.suv.voxels, entry, target, ends, top, caption=caption),
                                   folder / "pet_fusion.png"),
                write_bytes_atomic(mip_image(pet.suv, target, entry, top), folder / "pet_mip.png")]
    return []


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


__all__ = ["PlanRequest", "PlanningSession", "TargetSpec", "plan_and_write", "write_probe_view"]
