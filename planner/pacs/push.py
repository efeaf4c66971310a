"""``planner pacs push NODE DIR``: a plan folder's DICOM objects to a PACS node.

The objects are those ``planner plan --dicom`` (and ``planner check --dicom``) wrote: the report
as Encapsulated PDF, the images as Secondary Capture, the structures as DICOM SEG and the
trajectories as a Comprehensive 3D SR, all in the CT's study. Before anything is sent, every
object's study is looked up on the node: a study the node holds for another patient is refused
(a report filed into another patient's record is worse than none).
"""

from __future__ import annotations

from pathlib import Path

from ..errors import InputError
from .config import Node, PacsConfig
from .dimse import PacsError, Progress, dicom_files, find, push


def plan_objects(plan_dir: Path) -> list[Path]:
    """The DICOM objects of a plan folder: ``dicom/`` and each check's ``checks/NN/dicom/``."""
    if not (plan_dir / "plan.json").is_file():
        raise InputError(f"{plan_dir}: not a plan folder (no plan.json)")
    files = dicom_files(plan_dir / "dicom") if (plan_dir / "dicom").is_dir() else []
    checks = plan_dir / "checks"
    if checks.is_dir():
        for sub in sorted(checks.iterdir()):
            if (sub / "dicom").is_dir():
                files += dicom_files(sub / "dicom")
    if not files:
        raise InputError(f"{plan_dir}: holds no DICOM objects: plan with --dicom to write them")
    return files


def _identity(files: list[Path]) -> dict[str, set[tuple[str, str]]]:
    import pydicom

    out: dict[str, set[tuple[str, str]]] = {}
    for f in files:
        ds = pydicom.dcmread(f, stop_before_pixels=True, specific_tags=["StudyInstanceUID", "PatientID",
                                                                        "PatientName"])
        out.setdefault(str(ds.get("StudyInstanceUID", "")),
                       set()).add((str(ds.get("PatientID", "")), str(ds.get("PatientName", ""))))
    return out


def check_studies(cfg: PacsConfig, node: Node, files: list[Path]) -> list[str]:
    """Refuse objects whose study the node holds for another patient; notes for studies it lacks."""
    notes = []
    for study, patients in _identity(files).items():
        if len(patients) > 1:
            raise InputError(f"the objects of study {study} name {len(patients)} different patients; nothing sent")
        pid, name = next(iter(patients))
        rows = find(cfg, node, study_uid=study) if study else []
        held = {(r.patient_id, r.patient_name) for r in rows if r.study_uid == study}
        if not held:
            notes.append(f"study {study} is not on {node.name}: the objects start it there")
            continue
        for hid, hname in held:
            if (pid or hid) and hid != pid or (name and hname and hname != name):
                raise PacsError(f"PACS node {node.describe()}: study {study} belongs to patient {hid or hname!r}, "
                                f"the plan's objects name {pid or name!r}: refusing to file them there; nothing sent")
    return notes


def push_objects(cfg: PacsConfig, node: Node, files: list[Path], *, web: bool = False,
                 progress: Progress | None = None) -> int:
    """Check the studies, then send (C-STORE, or STOW-RS with ``web``); the number sent."""
    check_studies(cfg, node, files)
    if web:
        from .web import push as web_push

        return web_push(node, files, progress)
    return push(cfg, node, files, progress)

