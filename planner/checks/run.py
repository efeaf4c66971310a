"""``planner check DIR --ct CHECK``: a check scan with the needle in, compared with the plan.

1. Identity: the check scan must be the plan's patient (another patient is refused; blank
   identifiers are said and need ``force``).
2. Registration of the check scan to the planning CT (:mod:`.register`), refused when not credible.
3. The needles in the check scan (:mod:`.needle`), mapped into the planning CT; the one nearest
   the planned path is compared (:mod:`.compare`); none found: :class:`NoNeedleFound` (exit 3).
4. Clearance of the actual path, and of its extension to the target's depth, from every
   avoided structure of the plan's preset, measured exactly as review measures it.
5. ``DIR/checks/NN/check.json`` (schema ``planner.check/1``) and a line in the procedure log
   ``DIR/checks/log.json``, written atomically under the plan folder's lock; the plan itself is
   never changed.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import folder_lock, write_json_atomic
from ..errors import InputError, PlannerError
from ..images import Image, load_image

SCHEMA = "planner.check/1"


class NoNeedleFound(PlannerError):
    """The check scan shows no needle (the command exits 3)."""


@dataclass
class CheckResult:
    folder: Path  # DIR/checks/NN
    document: dict[str, Any]
    notes: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        d = self.document
        dev, cor = d["deviation"], d["correction"]
        out = list(self.notes)
        out.append(f"registration: {d['registration']['summary']}")
        out.append(f"needle tip at LPS ({', '.join(f'{x:.1f}' for x in d['needle']['tip_lps'])}) mm (planning CT), "
                   f"{len(d['needles_found'])} needle(s) found")
        out.append(f"deviation: {dev['angle_deg']:.1f} deg from the planned axis, tip {dev['lateral_offset_mm']:.1f} mm "
                   f"off the planned line, {dev['depth_reached_mm']:.1f} mm deep along the plan "
                   f"({dev['remaining_mm']:.1f} mm to go); advanced along its axis it would miss the target by "
                   f"{dev['predicted_miss_mm']:.1f} mm: target {'HIT' if dev['target_hit'] else 'MISSED'}")
        for name, c in sorted(d["clearance_mm"].items(), key=lambda kv: kv[1]["now"])[:3]:
            flag = "" if c["ok"] else f"  BELOW its {c['needed']:.1f} mm"
            out.append(f"clearance: {name} {c['now']:.1f} mm now, {c['extended']:.1f} mm if advanced{flag}")
        out.append(f"correction: {cor['text']}")
        for why in cor.get("considered", []):
            out.append(f"  not simpler, because {why}")
        out.append(f"wrote {self.folder / 'check.json'}")
        return out


def _identity(plan_ct: Image, check: Image, force: bool) -> list[str]:
    a, b = plan_ct.meta, check.meta
    notes = []
    if not (b.patient_id or b.patient_name):
        if not force:
            raise InputError(f"{b.source}: the check scan names no patient (blank ID and name): it cannot be "
                             "matched to the plan's patient; give --force if you are sure it is theirs")
        notes.append("the check scan names no patient: taken as the plan's patient on the user's word (--force)")
    elif (a.patient_id and b.patient_id and a.patient_id != b.patient_id) or \
            (a.patient_name and b.patient_name and a.patient_name != b.patient_name):
        raise InputError(f"{b.source}: patient {b.patient_id or b.patient_name!r} is not the plan's patient "
                         f"{a.patient_id or a.patient_name!r}; refusing to compare scans of two patients")
    notes.append("same study as the plan" if a.study_instance_uid and a.study_instance_uid == b.study_instance_uid
                 else "another study than the plan's")
    notes.append("same frame of reference" if a.frame_of_reference_uid and
                 a.frame_of_reference_uid == b.frame_of_reference_uid else "another frame of reference")
    return notes


def _to(matrix: np.ndarray, p: Any) -> np.ndarray:
    return (np.asarray(matrix, float) @ np.append(np.asarray(p, float), 1.0))[:3]


def run_check(plan_dir: str | os.PathLike[str], check_path: str | os.PathLike[str], *, force: bool = False,
              series_uid: str | None = None, progress: Any = None, dicom: bool = False,
              anonymize: bool = False) -> CheckResult:
    """Compare the needle of a check scan with the plan in ``plan_dir`` and write the check:
    ``check.json``, its images and its report page (PDF, HTML), and with ``dicom`` the images and
    the page as DICOM (``anonymize``: without the patient's identifiers)."""
    from ..anatomy.slicer_seg import load_slicer_seg
    from ..planning.model import read_plan_file
    from ..planning.output import STRUCTURES_FILE, file_sha256
    from ..planning.verify import check_preset
    from ..anatomy.autoseg.mr import body_of
    from ..anatomy.target import Target
    from ..session import PlanningSession
    from .compare import deviation, hit_structure
    from .correct import choose_correction, skin_puncture
    from .correct import clearances as clearances_of
    from .needle import find_needles
    from .register import register_check

    d = Path(plan_dir)
    plan = read_plan_file(d)
    doc = plan.to_json()
    preset = check_preset(doc, str(d / "plan.json"))
    if not plan.trajectories:
        raise InputError(f"{d}: the plan holds no safe trajectory: there is nothing to compare a needle with")
    im = plan.image
    if not im.source:
        raise InputError(f"{d / 'plan.json'}: image.source is empty (a de-identified plan): the planning CT cannot "
                         "be found")
    planning = load_image(im.source, modality=im.modality or "CT", echo=im.echo, phase=im.phase, progress=progress)
    if planning.sha256 != im.sha256:
        raise InputError(f"{im.source}: is not the CT the plan was made on (voxel hash differs)")
    if dicom:  # said before the long work: --dicom files the check in the planning CT's study
        from ..images import source_kind

        if source_kind(im.source) != "dicom" or not planning.meta.study_instance_uid:
            raise InputError(f"{im.source}: --dicom files the check in the planning CT's study, so the planning CT "
                             "must be DICOM with a StudyInstanceUID; check without --dicom")
    check = load_image(check_path, series_uid, im.modality or "CT", progress)
    notes = _identity(planning, check, force)
    seg = d / STRUCTURES_FILE
    if not seg.is_file() or file_sha256(seg) != plan.structures_sha256:
        raise InputError(f"{seg}: missing or not the structures the plan was made against")

    best = plan.trajectories[0]
    entry, target = np.asarray(best.entry, float), np.asarray(best.target, float)
    # the needles and the structures do not depend on the registration: found and read beside it
    # (ITK, numba and zlib work outside Python's lock), each result the same as one after another
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="check") as pool:
        needles_job = pool.submit(find_needles, check)
        structures_job = pool.submit(load_slicer_seg, seg, planning)
        try:
            reg = register_check(planning, check, entry_lps=entry, target_lps=target)
            found = needles_job.result()
            structures = structures_job.result()
        finally:
            needles_job.cancel()
            structures_job.cancel()
    m = np.asarray(reg.check_to_planning, float)
    rot = m[:3, :3]

    if not found:
        from .needle import MIN_EDGE_LENGTH_MM

        raise NoNeedleFound(f"{check.meta.source}: no needle found in the check scan (no straight line of metal of "
                            f"8 mm or more, or of {MIN_EDGE_LENGTH_MM:g} mm where it runs out of the scan): nothing "
                            "to compare with the plan")
    w = (target - entry) / np.linalg.norm(target - entry)
    mapped = []
    for n in found:
        tip, hub = _to(m, n.tip_lps), _to(m, n.hub_end_lps)
        u = rot @ np.asarray(n.direction_lps, float)
        u /= np.linalg.norm(u)
        off = float(np.linalg.norm(np.cross(tip - entry, w)))
        angle = float(np.degrees(np.arccos(np.clip(u @ w, -1, 1))))
        mapped.append((off + angle, tip, hub, u, n))
    mapped.sort(key=lambda x: x[0])
    _, tip, hub, u, chosen = mapped[0]

    dev = deviation(entry, target, tip, u, plan.target.diameter_mm)
    if plan.target.label in structures:  # a segmented target: hit or not on its own voxels
        dev = hit_structure(dev, structures[plan.target.label], structures.affine, target)
    body = body_of(planning, structures)
    # the needle's skin puncture: where its line leaves the body going back from the tip (a tip
    # outside the body, or no body: the point of its line nearest the planned entry)
    puncture = skin_puncture(body, planning, tip, u)
    actual_entry = puncture if puncture is not None else tip + float((entry - tip) @ u) * u
    if float((tip - actual_entry) @ u) < 0:  # never behind the tip
        actual_entry = tip.copy()
    extension = [(tip, dev.predicted_tip_lps)] if np.linalg.norm(dev.predicted_tip_lps - tip) > 0.1 else []
    clearances = clearances_of(structures, preset, {"now": [(actual_entry, tip)],
                                                    "extended": extension or [(actual_entry, tip)]})

    too_close = [f"{n} at {c['extended']:.1f} mm (needs {c['needed']:.1f})"
                 for n, c in sorted(clearances.items(), key=lambda kv: kv[1]["extended"]) if c["extended"] < c["needed"]]

    def replan(point: np.ndarray, radius: float):
        session = PlanningSession(planning, structures, procedure=plan.procedure, approach=plan.preset.approach,
                                  side=plan.preset.side, structures_source="the plan's structures", body=body,
                                  preset_file=preset.variant["file"] if preset.variant else None)
        r = plan.target
        tgt = Target(tuple(float(x) for x in r.point), r.label, r.how, None, r.volume_ml, r.diameter_mm,
                     r.max_diameter_mm)
        again = session.plan([tgt], n_best=1, entry_near=(point, radius))
        block = again.targets[0]
        return [t.to_json() for t in block.trajectories], dict(block.rejected), block.n_candidates

    if chosen.tip_in_scan:
        cor = choose_correction(dev, entry=actual_entry, tip=tip, u=u, target=target, structures=structures,
                                image=planning, preset=preset,
                                extension_ok=not too_close, extension_why=", ".join(too_close[:3]),
                                replan=replan, position=best.patient_position)
    else:  # the true tip is deeper than the metal seen: no advance or withdraw can be measured from it
        from .correct import Correction

        cor = Correction("rescan", f"scan again over the tip before moving the needle: the tip is not in the check "
                                   f"scan, it is at least {dev.depth_reached_mm:.0f} mm deep along the plan "
                                   f"({max(dev.remaining_mm, 0.0):.0f} mm or less to the target's depth); the angle "
                                   f"from the plan ({dev.angle_deg:.1f} deg) is measured on the metal seen")
    document = {
        "schema": SCHEMA,
        "coordinate_system": "LPS",
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "plan": {"procedure": plan.procedure, "trajectory_rank": best.rank, "entry": list(best.entry),
                 "target": list(best.target), "plan_sha256": file_sha256(d / "plan.json")},
        # with --anonymize, nothing that can name the patient: not the scan's path, not its UIDs
        "check_image": {"series_instance_uid": "" if anonymize else check.meta.series_instance_uid,
                        "sha256": check.sha256, "source": "" if anonymize else check.meta.source,
                        "corrections": list(check.meta.corrections)},
        "identity": notes,
        "registration": {"check_to_planning": [[round(float(x), 6) for x in row] for row in m],
                         "quality": reg.quality, "notes": list(reg.notes),
                         "summary": _registration_summary(reg.quality)},
        "needle": {"entry_lps": [round(float(x), 2) for x in actual_entry], "tip_lps": [round(float(x), 2) for x in tip], "direction_lps": [round(float(x), 5) for x in u],
                   "hub_end_lps": [round(float(x), 2) for x in hub], "length_mm": round(float(chosen.length_mm), 1),
                   "diameter_mm": round(float(chosen.diameter_mm), 2), "notes": list(chosen.notes)},
        "needles_found": [{"tip_lps": [round(float(x), 2) for x in t], "direction_lps": [round(float(x), 5) for x in uu],
                           "length_mm": round(float(n.length_mm), 1)} for _, t, _, uu, n in mapped],
        "deviation": dev.to_json(),
        "clearance_mm": clearances,
        "correction": cor.to_json(),
    }
    problem = check_schema_problem(document)
    if problem:  # pragma: no cover - a bug: the document is built above
        raise AssertionError(f"check.json would break its schema: {problem}")
    from .outputs import CheckContext, write_check_outputs

    context = CheckContext(plan=plan, plan_dir=d, planning=planning, check=check, structures=structures,
                           check_to_planning=m, preset=preset)
    folder = _write_check(d, document, lambda staging: write_check_outputs(staging, document, context,
                                                                           dicom=dicom, anonymize=anonymize))
    notes.extend(f"needle: {n}" for n in chosen.notes)
    if any(not c["ok"] for c in clearances.values()):
        notes.append("WARNING: the actual path, or its extension to the target's depth, is closer to a structure "
                     "at risk than the preset allows (see clearance)")
    return CheckResult(folder, document, notes)


def check_schema_problem(doc: Any) -> str | None:
    """The first way ``doc`` breaks the schema of ``check.json`` (shipped in the package), or None."""
    import jsonschema
    from importlib import resources

    schema = json.loads(resources.files("planner").joinpath("data", "schemas", "check.schema.json").read_text("utf-8"))
    error = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(schema).iter_errors(doc))
    return None if error is None else f"{'/'.join(str(x) for x in error.absolute_path)}: {error.message}"


def _registration_summary(quality: dict[str, Any]) -> str:
    parts = [f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in quality.items()
             if isinstance(v, (int, float, str))]
    return ", ".join(parts[:4]) or "done"


def _write_check(plan_dir: Path, document: dict[str, Any], extra: Any = None) -> Path:
    """``checks/NN/check.json`` (NN the next number), what ``extra(staging_folder)`` writes beside
    it, and the procedure log, under the plan folder's lock; the folder appears whole (renamed
    from its staging name) or not at all; the plan's own files are not touched."""
    with folder_lock(plan_dir):
        checks = plan_dir / "checks"
        checks.mkdir(exist_ok=True)
        numbers = [int(p.name) for p in checks.iterdir() if p.is_dir() and p.name.isdigit()]
        n = max(numbers, default=0) + 1
        folder = checks / f"{n:02d}"
        staging = checks / f".{n:02d}.new"
        if staging.exists():
            import shutil

            shutil.rmtree(staging)
        staging.mkdir()
        write_json_atomic(document, staging / "check.json")
        if extra is not None:
            extra(staging)
        os.rename(staging, folder)
        log_path = checks / "log.json"
        log = json.loads(log_path.read_text("utf-8")) if log_path.is_file() else {"schema": "planner.checklog/1",
                                                                                  "checks": []}
        log["checks"].append({"number": n, "folder": f"checks/{n:02d}", "created": document["created"],
                              "check_scan": document["check_image"]["source"],
                              "predicted_miss_mm": document["deviation"]["predicted_miss_mm"],
                              "correction": document["correction"]["text"]})
        write_json_atomic(log, log_path)
    return folder
