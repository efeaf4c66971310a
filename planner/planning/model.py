"""The plan as typed objects: what ``plan.json`` (schema ``planner.plan/1``) holds, read and written.

:class:`Plan` is what :func:`planner.plan` returns and :func:`planner.read_plan` reads back;
``Plan.to_json()`` gives the ``plan.json`` document and ``Plan.from_json(doc)`` reads one (checked
against the JSON Schema shipped in the package first). The core that other programs rely on is
typed (image, preset, targets, trajectories, rejections); everything else a plan carries
(hard constraints as printed, score weights, provenance, patient and study, notes) is kept as
it is in ``extra`` and written back unchanged, so that ``from_json(to_json())`` is the identity.

Every position is LPS millimetres. The first target's block is the top level of ``plan.json``
(the conventions' core fields); a plan of several targets lists every block under ``targets``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from ..errors import InputError

SCHEMA = "planner.plan/1"
STRUCTURES_FILE = "structures.seg.nrrd"

_TARGET_BLOCK_KEYS = ("target", "status", "trajectories", "rejected", "n_candidates", "explanation")


def _point(value: Any) -> tuple[float, float, float]:
    return tuple(float(x) for x in value)  # type: ignore[return-value]


@dataclass
class ImageRef:
    """The scan a plan was made on: identified by its UIDs and its voxel hash."""

    series_instance_uid: str
    sha256: str
    source: str
    study_instance_uid: str = ""
    frame_of_reference_uid: str = ""
    modality: str = ""
    corrections: list[str] = field(default_factory=list)
    echo: int | None = None  # the echo / phase asked for, in a series with several images per position
    phase: int | None = None

    def to_json(self) -> dict[str, Any]:
        out = {"series_instance_uid": self.series_instance_uid, "study_instance_uid": self.study_instance_uid,
               "frame_of_reference_uid": self.frame_of_reference_uid, "sha256": self.sha256,
               "source": self.source, "modality": self.modality, "corrections": list(self.corrections)}
        out.update({k: getattr(self, k) for k in ("echo", "phase") if getattr(self, k) is not None})
        return out

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "ImageRef":
        return cls(str(d["series_instance_uid"]), str(d["sha256"]), str(d["source"]),
                   str(d.get("study_instance_uid", "")), str(d.get("frame_of_reference_uid", "")),
                   str(d.get("modality", "")), [str(c) for c in d.get("corrections", [])], d.get("echo"),
                   d.get("phase"))


@dataclass
class PresetRef:
    """The rules a plan was made under: the preset's id, version and file hash, approach, side."""

    id: str
    version: int
    sha256: str
    approach: str | None = None
    side: str | None = None
    variant: dict[str, Any] | None = None  # a department variant: file, sha256, of_version, of_sha256, cases

    def to_json(self) -> dict[str, Any]:
        out = {"id": self.id, "version": self.version, "sha256": self.sha256, "approach": self.approach,
               "side": self.side}
        if self.variant is not None:
            out["variant"] = dict(self.variant)
        return out

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "PresetRef":
        v = d.get("variant")
        return cls(str(d["id"]), int(d["version"]), str(d["sha256"]), d.get("approach"), d.get("side"),
                   dict(v) if isinstance(v, dict) else None)


@dataclass
class TargetRecord:
    """Where the needle tip goes (LPS mm) and, for a structure or a lesion, its size."""

    point: tuple[float, float, float]
    label: str
    how: str = "point"
    volume_ml: float | None = None
    diameter_mm: float | None = None
    max_diameter_mm: float | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"point": [float(x) for x in self.point], "label": self.label, "how": self.how}
        for key in ("volume_ml", "diameter_mm", "max_diameter_mm"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        return out

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "TargetRecord":
        return cls(_point(d["point"]), str(d["label"]), str(d.get("how", "point")), d.get("volume_ml"),
                   d.get("diameter_mm"), d.get("max_diameter_mm"))


@dataclass
class TrajectoryRecord:
    """One ranked, feasible trajectory as the plan states it (LPS mm, degrees)."""

    rank: int
    entry: tuple[float, float, float]
    target: tuple[float, float, float]
    length_mm: float
    needle: dict[str, Any]
    clearance_mm: dict[str, float]
    metrics: dict[str, float]
    patient_position: str = ""
    angle_from_vertical_deg: float = 0.0
    craniocaudal_deg: float = 0.0
    angle_from_skin_normal_deg: float = 0.0
    score: float = 0.0
    limiting: str = ""
    risk_factors: list[str] = field(default_factory=list)
    pareto_optimal: bool = False
    room: dict[str, Any] | None = None
    ultrasound_probe: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    _ORDER = ("rank", "entry", "target", "length_mm", "needle", "clearance_mm", "metrics", "patient_position",
              "angle_from_vertical_deg", "craniocaudal_deg", "angle_from_skin_normal_deg", "score", "limiting",
              "risk_factors", "pareto_optimal", "ultrasound_probe", "room")

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key in self._ORDER:
            value = getattr(self, key)
            if key in ("entry", "target"):
                value = [float(x) for x in value]
            if value is None and key in ("room", "ultrasound_probe"):
                continue
            out[key] = value
        out.update(self.extra)
        return out

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "TrajectoryRecord":
        known = {f.name for f in fields(cls)} - {"extra"}
        kw = {k: v for k, v in d.items() if k in known}
        kw["entry"], kw["target"] = _point(d["entry"]), _point(d["target"])
        return cls(**kw, extra={k: v for k, v in d.items() if k not in known})


@dataclass
class TargetPlan:
    """One target's outcome: its trajectories (best first) or why there is none."""

    target: TargetRecord
    status: str
    trajectories: list[TrajectoryRecord]
    rejected: dict[str, int]
    n_candidates: int = 0
    explanation: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def to_json(self) -> dict[str, Any]:
        return {"target": self.target.to_json(), "status": self.status,
                "trajectories": [t.to_json() for t in self.trajectories], "rejected": dict(self.rejected),
                "n_candidates": self.n_candidates, "explanation": list(self.explanation)}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "TargetPlan":
        return cls(TargetRecord.from_json(d["target"]), str(d["status"]),
                   [TrajectoryRecord.from_json(t) for t in d["trajectories"]],
                   {str(k): int(v) for k, v in d["rejected"].items()}, int(d.get("n_candidates", 0)),
                   [str(e) for e in d.get("explanation", [])])


@dataclass
class Plan:
    """A plan: the scan, the procedure and its rules, and each target's trajectories.

    ``plan.targets[0]`` is the first (or only) target; ``status`` is "ok" only when every
    target has a safe trajectory. ``warnings`` are what the user must check before trusting it.
    A plan made by :func:`planner.plan` also holds the image and structures it was made on
    (``session``) so that :meth:`write` can write the whole report set.
    """

    image: ImageRef
    procedure: str
    targets: list[TargetPlan]
    preset: PresetRef | None = None
    structures_sha256: str | None = None
    warnings: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    session: Any = field(default=None, repr=False, compare=False)
    results: list[Any] = field(default_factory=list, repr=False, compare=False)  # the planner's, per target
    resolved: list[Any] = field(default_factory=list, repr=False, compare=False)  # the Target objects planned
    folder: Path | None = field(default=None, compare=False)  # the folder it was read from

    # -- what a reader asks most ------------------------------------------------------------
    @property
    def status(self) -> str:
        return "ok" if all(t.ok for t in self.targets) else "no_safe_path"

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def target(self) -> TargetRecord:
        return self.targets[0].target

    @property
    def trajectories(self) -> list[TrajectoryRecord]:
        """The first target's trajectories, best first."""
        return self.targets[0].trajectories

    # -- plan.json ---------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        """The ``plan.json`` document (a fresh dict)."""
        first = self.targets[0].to_json()
        if len(self.targets) > 1:
            failed = [t.target.label for t in self.targets if not t.ok]
            first["status"] = self.status
            if failed:
                first["explanation"] = first["explanation"] + [f"no safe trajectory for: {', '.join(failed)}"]
        doc: dict[str, Any] = {"schema": SCHEMA, "coordinate_system": "LPS", "image": self.image.to_json(),
                               "procedure": self.procedure}
        if self.preset is not None:
            doc["preset"] = self.preset.to_json()
        if self.structures_sha256:
            doc["structures_file"] = {"name": STRUCTURES_FILE, "sha256": self.structures_sha256}
        doc.update(first)
        if len(self.targets) > 1:
            doc["targets"] = [t.to_json() for t in self.targets]
        doc["warnings"] = list(self.warnings)
        doc.update(self.extra)
        return doc

    @classmethod
    def from_json(cls, doc: Any, where: str = "plan.json") -> "Plan":
        """A plan from a ``plan.json`` document; refused (one-line :class:`InputError`) when it is
        not a valid ``planner.plan/1`` document."""
        from .output import check_plan_document

        check_plan_document(doc, where)
        blocks = doc.get("targets") or [{k: doc[k] for k in _TARGET_BLOCK_KEYS if k in doc}]
        targets = [TargetPlan.from_json(b) for b in blocks]  # (the top level repeats the first block)
        core = {"schema", "coordinate_system", "image", "procedure", "preset", "structures_file", "targets",
                "warnings", *_TARGET_BLOCK_KEYS}
        return cls(
            image=ImageRef.from_json(doc["image"]), procedure=str(doc["procedure"]), targets=targets,
            preset=PresetRef.from_json(doc["preset"]) if doc.get("preset") else None,
            structures_sha256=(doc.get("structures_file") or {}).get("sha256"),
            warnings=[str(w) for w in doc.get("warnings", [])],
            extra={k: v for k, v in doc.items() if k not in core},
        )

    # -- files -------------------------------------------------------------------------------
    def write(self, folder: str | os.PathLike[str], *, dicom: bool = False, anonymize: bool = False,
              also: Any = None, scene_html: bool = False) -> Any:
        """Write the whole plan folder (``plan.json``, risk maps, structures, the report set) as one
        piece, replacing a previous plan there (see :func:`planner.atomic.replace_folder`).
        ``scene_html`` adds the 3D scene as one offline page (``scene3d.html``, linked from
        ``report.html``; about 2 s more), as ``planner plan`` does.
        Returns the :class:`~planner.report.ReportSet` written."""
        if self.session is None:
            raise InputError("this plan was read from a folder: it is already written (copy the folder, or "
                             "plan again to write a new one)")
        return self.session.write(self, folder, dicom=dicom, anonymize=anonymize, also=also, scene_html=scene_html)


def read_plan_file(folder: str | os.PathLike[str]) -> Plan:
    """The plan in ``folder/plan.json`` as a :class:`Plan` (see :func:`planner.read_plan`)."""
    from .output import read_plan

    doc = read_plan(folder)
    plan = Plan.from_json(doc, str(Path(folder) / "plan.json"))
    plan.folder = Path(folder)
    return plan
