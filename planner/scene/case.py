"""What the scene shows, gathered from a plan folder or from objects in memory (no VTK here).

A plan folder written by ``planner plan`` holds ``plan.json`` (its ``image.source`` names the
CT), ``structures.seg.nrrd`` (the very structures planned against) and ``risk_map.npz``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..anatomy.structures import StructureSet
from ..errors import InputError
from ..images import Image


@dataclass(frozen=True)
class NeedlePath:
    """One trajectory as the scene draws it; positions in LPS mm.

    ``rank`` 1 is the chosen one. ``diameter_mm`` is the needle's outer diameter (from its gauge).
    """

    rank: int
    entry: np.ndarray
    target: np.ndarray
    diameter_mm: float
    gauge: str = ""
    needle_length_mm: float = 0.0
    clearance_mm: dict[str, float] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def length_mm(self) -> float:
        return float(np.linalg.norm(self.target - self.entry))

    @property
    def direction(self) -> np.ndarray:
        """Unit vector from the entry to the target."""
        return (self.target - self.entry) / max(self.length_mm, 1e-9)

    @classmethod
    def from_dict(cls, t: dict[str, Any]) -> "NeedlePath":
        needle = t.get("needle", {})
        return cls(
            rank=int(t.get("rank", 1)),
            entry=np.asarray(t["entry"], float),
            target=np.asarray(t["target"], float),
            diameter_mm=float(needle.get("outer_diameter_mm") or gauge_diameter_mm(needle.get("gauge", "18G"))),
            gauge=str(needle.get("gauge", "")),
            needle_length_mm=float(needle.get("length_mm", 0.0)),
            clearance_mm={k: float(v) for k, v in t.get("clearance_mm", {}).items()},
            info=dict(t),
        )


#: Outer diameter (mm) of common needle gauges (Stubs gauge), used when a plan gives no diameter.
GAUGE_MM = {"11G": 3.05, "13G": 2.41, "14G": 2.11, "15G": 1.83, "16G": 1.65, "17G": 1.47, "18G": 1.27,
            "19G": 1.07, "20G": 0.91, "21G": 0.82, "22G": 0.72, "23G": 0.64, "25G": 0.51}


def gauge_diameter_mm(gauge: str) -> float:
    """Outer diameter of a needle gauge such as ``'17G'``; unknown gauges raise ``InputError``."""
    g = str(gauge).upper().replace(" ", "")
    if not g.endswith("G"):
        g += "G"
    if g not in GAUGE_MM:
        raise InputError(f"needle gauge {gauge!r} unknown; known: {', '.join(GAUGE_MM)}")
    return GAUGE_MM[g]


@dataclass
class RiskMap:
    """Candidate skin entries (n, 3) LPS, their score (NaN: ruled out) and the reason."""

    entries: np.ndarray
    score: np.ndarray
    reason: np.ndarray

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> "RiskMap":
        with np.load(path, allow_pickle=False) as z:
            return cls(z["entries_lps"].astype(float), z["score"].astype(float), z["reason"].astype(str))


@dataclass(frozen=True)
class ActualNeedle:
    """The needle found by a check scan (``checks/NN/check.json``), in the planning CT's LPS mm.

    ``far_end`` is the needle's end farthest from the tip that the check scan shows (its hub
    side), ``puncture`` where it crosses the skin, ``predicted_tip`` where its tip would be if
    advanced along its axis to the target's depth; ``deviation`` and ``correction`` are the
    check's own figures and words.
    """

    number: int
    tip: np.ndarray
    direction: np.ndarray
    far_end: np.ndarray
    puncture: np.ndarray
    predicted_tip: np.ndarray
    diameter_mm: float
    trajectory_rank: int = 1
    created: str = ""
    deviation: dict[str, Any] = field(default_factory=dict)
    correction: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_check(cls, doc: dict[str, Any], number: int) -> "ActualNeedle":
        n, dev = doc["needle"], doc["deviation"]
        tip = np.asarray(n["tip_lps"], float)
        u = np.asarray(n["direction_lps"], float)
        u = u / np.linalg.norm(u)
        entry = np.asarray(doc["plan"]["entry"], float)
        puncture = np.asarray(n["entry_lps"], float) if n.get("entry_lps") is not None \
            else tip + float((entry - tip) @ u) * u
        far = np.asarray(n.get("hub_end_lps", puncture), float)
        if float((tip - far) @ u) < float((tip - puncture) @ u):
            far = puncture
        return cls(number=number, tip=tip, direction=u, far_end=far, puncture=puncture,
                   predicted_tip=np.asarray(dev.get("predicted_tip_lps", tip), float),
                   diameter_mm=float(n.get("diameter_mm") or 1.5),
                   trajectory_rank=int(doc.get("plan", {}).get("trajectory_rank", 1)),
                   created=str(doc.get("created", "")), deviation=dict(dev), correction=dict(doc.get("correction", {})))

    def caption(self) -> str:
        """The deviation in words, for a view: what the check found and what to do."""
        d = self.deviation
        verdict = "HIT" if d.get("target_hit") else "MISSED"
        return (f"check {self.number:02d}: needle {float(d.get('angle_deg', 0)):.1f}\u00b0 off the plan, tip "
                f"{float(d.get('lateral_offset_mm', 0)):.1f} mm off the planned line\n"
                f"advanced to the target's depth: miss {float(d.get('predicted_miss_mm', 0)):.1f} mm, target {verdict}\n"
                f"correction: {str(self.correction.get('action', '-')).replace('_', ' ')}")


def load_checks(plan_dir: str | os.PathLike[str]) -> tuple[list[ActualNeedle], list[str]]:
    """The needles of the check scans of a plan folder (``checks/NN/check.json``), oldest first,
    and a note for each check that could not be read (left out, never fatal to the plan's view)."""
    from ..checks.run import check_schema_problem

    import json

    checks, notes = [], []
    folder = Path(plan_dir) / "checks"
    if not folder.is_dir():
        return [], []
    for d in sorted((p for p in folder.iterdir() if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name)):
        f = d / "check.json"
        if not f.is_file():
            continue
        try:
            doc = json.loads(f.read_text("utf-8"))
            problem = check_schema_problem(doc)
            if problem:
                raise ValueError(problem)
            checks.append(ActualNeedle.from_check(doc, int(d.name)))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            notes.append(f"{f}: left out of the view ({exc})")
    return checks, notes


@dataclass
class Case:
    """Everything one scene shows: the CT, its structures, the target and the trajectories."""

    ct: Image
    structures: StructureSet | None = None
    target: np.ndarray | None = None
    target_label: str = ""
    target_diameter_mm: float | None = None
    paths: list[NeedlePath] = field(default_factory=list)
    risk_map: RiskMap | None = None
    plan: dict[str, Any] | None = None
    title: str = ""
    checks: list[ActualNeedle] = field(default_factory=list)  # the check scans' needles, oldest first
    actual: ActualNeedle | None = None  # the one the views show (by default the latest)
    notes: list[str] = field(default_factory=list)
    pet: Image | None = None  # the plan's PET in SUV on the CT's grid (NaN outside it), shown over the slices
    pet_top_suv: float = 1.0  # the top of the PET colour scale (the lesion's SUVmax)
    folder: Path | None = None  # the plan folder it was read from (its surfaces are cached there)

    @property
    def chosen(self) -> NeedlePath | None:
        return self.paths[0] if self.paths else None


def case_from_objects(
    ct: Image,
    structures: StructureSet | None = None,
    plan: dict[str, Any] | None = None,
    risk_map: RiskMap | dict[str, np.ndarray] | None = None,
    target: Sequence[float] | None = None,
    title: str = "",
) -> Case:
    """A case from objects in memory (a ``plan.json`` dict, a ``PlanResult.risk_map`` dict, ...)."""
    paths = sorted((NeedlePath.from_dict(t) for t in (plan or {}).get("trajectories", [])), key=lambda p: p.rank)
    tgt_info = (plan or {}).get("target", {})
    point = target if target is not None else tgt_info.get("point")
    if isinstance(risk_map, dict):
        risk_map = RiskMap(np.asarray(risk_map["entries"], float), np.asarray(risk_map["score"], float),
                           np.asarray(risk_map["reason"]).astype(str))
    return Case(
        ct=ct, structures=structures, target=None if point is None else np.asarray(point, float),
        target_label=str(tgt_info.get("label", "target" if point is not None else "")),
        target_diameter_mm=tgt_info.get("diameter_mm"), paths=paths, risk_map=risk_map, plan=plan,
        title=title or str((plan or {}).get("procedure", "")),
    )


def load_case(plan_dir: str | os.PathLike[str], ct_path: str | os.PathLike[str] | None = None,
              check: int | str | None = "latest", voxels: bool = True) -> Case:
    """Reopen a plan folder: ``plan.json``, its CT (``image.source`` or ``ct_path``), structures,
    risk map, and the needles of its check scans (``checks/NN``): the views show the ``check``
    numbered so, the latest by default, or none (``None``).

    ``voxels=False`` leaves the CT unread where the folder has its structures: the case's ``ct``
    is then the structures' grid (:class:`~planner.images.image.ImageGrid`), enough for the 3D
    scene of surfaces and needles, until :func:`read_case_ct` reads and checks the CT."""
    from ..anatomy.slicer_seg import load_slicer_seg, read_grid
    from ..planning.output import read_plan

    d = Path(plan_dir)
    plan = read_plan(d)
    source = _ct_source(d, plan, ct_path)
    seg = d / "structures.seg.nrrd"
    im = plan.get("image", {})
    if voxels or not seg.is_file():
        ct = _read_ct(d, plan, source)
        sset = load_slicer_seg(seg, ct) if seg.is_file() else None
    else:
        ct = read_grid(seg).with_meta(modality=str(im.get("modality") or "CT"), source=str(source),
                                      frame_of_reference_uid=str(im.get("frame_of_reference_uid") or ""))
        sset = load_slicer_seg(seg, ct, ct_sha256=im.get("sha256"))
    rm = d / "risk_map.npz"
    risk = RiskMap.load(rm) if rm.is_file() else None
    case = case_from_objects(ct, sset, plan, risk, title=str(plan.get("procedure", "")))
    case.folder = d if sset is not None else None
    case.checks, case.notes = load_checks(d)
    if plan.get("pet") and voxels:
        load_pet_layer(case, plan["pet"])
    if check is not None and case.checks:
        if check == "latest":
            case.actual = case.checks[-1]
        else:
            found = [c for c in case.checks if c.number == int(check)]
            if not found:
                raise InputError(f"{d / 'checks'}: no check {check} (checks: {[c.number for c in case.checks]})")
            case.actual = found[0]
    return case


def read_case_ct(case: Case, plan_dir: str | os.PathLike[str], ct_path: str | os.PathLike[str] | None = None) -> None:
    """Read the CT of a case loaded with ``voxels=False`` (checked against the plan's voxel hash,
    as :func:`load_case` does), with its structures on the CT's grid and its PET; nothing to do
    for a case whose CT is read."""
    from ..anatomy.slicer_seg import load_slicer_seg
    from ..images.image import ImageGrid

    if not isinstance(case.ct, ImageGrid):
        return
    d = Path(plan_dir)
    plan = case.plan or {}
    ct = _read_ct(d, plan, _ct_source(d, plan, ct_path))
    sset = case.structures
    if sset is not None and not (sset.shape == ct.shape and np.allclose(sset.affine, ct.affine, atol=1e-4)):
        sset = load_slicer_seg(d / "structures.seg.nrrd", ct)
    case.structures, case.ct = sset, ct
    if plan.get("pet"):
        load_pet_layer(case, plan["pet"])


def _ct_source(d: Path, plan: dict[str, Any], ct_path: str | os.PathLike[str] | None) -> Any:
    source = ct_path if ct_path is not None else plan.get("image", {}).get("source")
    if not source:
        raise InputError(f"{d / 'plan.json'}: image.source is empty; give the CT path")
    return source


def _read_ct(d: Path, plan: dict[str, Any], source: Any) -> Image:
    from ..images import load_image

    im = plan.get("image", {})
    ct = load_image(source, modality=im.get("modality") or "CT", echo=im.get("echo"), phase=im.get("phase"))
    want = im.get("sha256")
    if want and ct.sha256 != want:
        raise InputError(f"{source}: this scan is not the one {d / 'plan.json'} was planned on (voxel hash differs)")
    return ct


def load_pet_layer(case: Case, pet: dict[str, Any]) -> None:
    """The plan's PET (``plan.json``'s ``pet``: its series, and the registration it was fused
    through if any) on the case's CT grid, scaled to the target lesion's SUVmax; a PET that can
    no longer be read is said in the case's notes and left out (the plan itself does not need it)."""
    from ..images.pet import read_pet, resample_to

    source = str(pet.get("source") or "")
    try:
        if not source:
            raise InputError("the plan names no PET series (a de-identified plan)")
        kind = "lbm" if str(pet.get("suv", {}).get("kind", "bw")) == "lbm" else "bw"
        image, _ = read_pet(source, kind)
        reg = (pet.get("registration") or {}).get("pet_to_ct")
        case.pet = resample_to(image, case.ct, np.asarray(reg, float) if reg is not None else None)
    except (InputError, OSError) as exc:
        case.notes.append(f"PET {source or '-'}: not shown ({exc})")
        return
    lesion = next((b.get("lesion") for b in pet.get("targets", []) if b.get("lesion")), None)
    finite = np.isfinite(case.pet.voxels)
    top = float(lesion["suv_max"]) if lesion else (float(np.max(case.pet.voxels[finite])) if finite.any() else 1.0)
    case.pet_top_suv = top if top > 0 else 1.0
