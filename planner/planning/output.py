"""``plan.json`` (schema ``planner.plan/1``, see shared/design/CONVENTIONS.md), written atomically."""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from .. import __version__
from ..anatomy.target import Target
from ..atomic import atomic_path, write_json_atomic  # noqa: F401  (write_json_atomic: used by callers)
from ..errors import InputError, brief
from ..images import Image
from .engine import PlanResult
from .presets import Preset

SCHEMA = "planner.plan/1"
STRUCTURES_FILE = "structures.seg.nrrd"


def target_block(target: Target, result: PlanResult) -> dict[str, Any]:
    """What the plan says of one target: the target, its status, trajectories and reasons (the
    top level of ``plan.json`` for the first target, an entry of ``targets`` for the others)."""
    return {
        "target": target.to_dict(),
        "status": result.status,
        "trajectories": [t.to_dict() for t in result.trajectories],
        "rejected": dict(result.rejected),
        "n_candidates": result.n_candidates,
        "explanation": list(result.explanation),
    }


def read_plan(plan_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """``plan.json`` of a plan folder, checked against the plan's JSON Schema (shipped in the
    package, ``planner/data/schemas/plan.schema.json``); refused with a one-line
    :class:`InputError` when missing, unreadable, of another schema version, or malformed (a
    NaN, a string where a number belongs, a missing field)."""
    p = Path(plan_dir) / "plan.json"
    if not p.is_file():
        raise InputError(f"{p}: no plan.json in {plan_dir} (not a plan folder written by 'planner plan')")

    def no_constant(name: str) -> Any:
        raise ValueError(f"{name} is not a number a plan may hold")

    try:
        doc = json.loads(p.read_bytes().decode("utf-8"), parse_constant=no_constant)
    except (OSError, ValueError, RecursionError) as exc:
        raise InputError(f"{p}: not a readable plan ({brief(exc)})") from None
    schema = doc.get("schema") if isinstance(doc, dict) else None
    if schema != SCHEMA:
        if isinstance(schema, str) and schema.startswith("planner.plan/"):
            raise InputError(f"{p}: schema {brief(schema, 40)} was written by another version of planner; "
                             f"this one reads {SCHEMA}")
        raise InputError(f"{p}: not a plan (schema {brief(repr(schema), 40)}, expected {SCHEMA})")
    problem = plan_schema_problem(doc)
    if problem:
        raise InputError(f"{p}: malformed plan: {problem}")
    return doc


@lru_cache(maxsize=1)
def plan_schema() -> dict[str, Any]:
    """The JSON Schema of ``plan.json`` (draft 2020-12), as shipped in the package."""
    return json.loads(resources.files("planner").joinpath("data", "schemas", "plan.schema.json").read_text("utf-8"))


def plan_schema_problem(doc: Any) -> str | None:
    """The first way ``doc`` breaks the plan's schema, in one line; None when it is valid."""
    import jsonschema

    validator = jsonschema.Draft202012Validator(plan_schema())
    error = jsonschema.exceptions.best_match(validator.iter_errors(doc))
    if error is None:
        return None
    where = "/".join(str(x) for x in error.absolute_path) or "(top level)"
    return f"{brief(where, 80)}: {brief(error.message, 160)}"


def plan_document(ct: Image, target: Target, preset: Preset, result: PlanResult, structures_source: str,
                  notes: list[str] | tuple[str, ...] = (), *, side: str | None = None,
                  structures_sha256: str | None = None) -> dict[str, Any]:
    """The plan as a JSON-able dict: the required core plus explanations and provenance.

    ``preset`` binds the plan to the rules it was made under (id, version, hash of the preset
    file, approach, side) and ``structures_file`` to the structures saved beside it (the hash of
    ``structures.seg.nrrd``): ``planner review`` re-derives every hard constraint from these,
    never from the numbers written here."""
    return {
        "schema": SCHEMA,
        "coordinate_system": "LPS",
        "image": {
            "series_instance_uid": ct.meta.series_instance_uid,
            "study_instance_uid": ct.meta.study_instance_uid,
            "frame_of_reference_uid": ct.meta.frame_of_reference_uid,
            "sha256": ct.sha256,
            "source": ct.meta.source,
            "modality": ct.meta.modality,
            "corrections": list(ct.meta.corrections),
        },
        "procedure": preset.id,
        "preset": preset.binding(side),
        **({"structures_file": {"name": STRUCTURES_FILE, "sha256": structures_sha256}} if structures_sha256 else {}),
        **target_block(target, result),
        "clearance_definition": "distance from the needle axis to the nearest voxel centre of a structure, mm; "
                                "a feasible trajectory keeps at least margin + needle radius from every avoided one",
        "hard_constraints": {
            "clearance_mm (margin + needle radius)": {k: round(v, 2) for k, v in result.hard_margins_mm.items()},
            "max_angle_from_skin_normal_deg": preset.max_angle_from_skin_normal_deg,
            "max_craniocaudal_deg": preset.max_craniocaudal_deg,
            "positions": list(preset.positions),
            "max_depth_mm": preset.max_depth_mm,
            "fixed_position": preset.fixed_position,
            "approach": preset.approach.to_dict() if preset.approach else None,
        },
        "score": {"weights": dict(preset.weights), "note": preset.raw.get("weights_note", "")},
        "structures_source": structures_source,
        "structures_notes": list(notes),
        "provenance": {
            "planner_version": __version__,
            "python": platform.python_version(),
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "timings_s": {k: round(v, 3) for k, v in result.timings_s.items()},
        },
    }


def file_sha256(path: str | os.PathLike[str]) -> str:
    """The SHA-256 of a file's bytes."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_risk_map(result: PlanResult, path: str | os.PathLike[str]) -> None:
    """Every candidate entry (LPS), its score (NaN if infeasible) and its rejection reason."""
    rm = result.risk_map
    with atomic_path(path, ".npz") as tmp:
        np.savez_compressed(tmp, entries_lps=rm["entries"].astype(np.float32), score=rm["score"].astype(np.float32),
                            reason=rm["reason"].astype("U40"))
