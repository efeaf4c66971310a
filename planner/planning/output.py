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
from ..atomic import atomic_path, file_sha256, write_json_atomic  # noqa: F401  (file_sha256, write_json_atomic: used by callers)
from ..errors import InputError, brief
from ..images import Image
from .engine import PlanResult
from .presets import Preset

from .model import SCHEMA, STRUCTURES_FILE  # noqa: F401  (the names callers import from here)


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
    check_plan_document(doc, str(p))
    return doc


def check_plan_document(doc: Any, where: str = "plan.json") -> None:
    """Refuse (one-line :class:`InputError`) a document that is not a valid ``planner.plan/1``."""
    schema = doc.get("schema") if isinstance(doc, dict) else None
    if schema != SCHEMA:
        if isinstance(schema, str) and schema.startswith("planner.plan/"):
            raise InputError(f"{where}: schema {brief(schema, 40)} was written by another version of planner; "
                             f"this one reads {SCHEMA}")
        raise InputError(f"{where}: not a plan (schema {brief(repr(schema), 40)}, expected {SCHEMA})")
    problem = plan_schema_problem(doc)
    if problem:
        raise InputError(f"{where}: malformed plan: {problem}")


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


def plan_identity(ct: Image, procedure_title: str | None) -> dict[str, Any]:
    """The patient and study a plan is for, as the scan names them, and the procedure's title."""
    m = ct.meta
    out: dict[str, Any] = {
        "patient": {"name": m.patient_name.replace("^", " ").strip(), "id": m.patient_id,
                    "birth_date": m.patient_birth_date, "sex": m.patient_sex},
        "study": {"date": m.study_date, "description": m.study_description,
                  "accession_number": m.accession_number, "series_description": m.series_description,
                  "acquisition_date": m.acquisition_date},
    }
    if procedure_title is not None:
        out["procedure_title"] = procedure_title
    return out


def plan_extras(ct: Image, preset: Preset, result: PlanResult, structures_source: str,
                notes: list[str] | tuple[str, ...] = ()) -> dict[str, Any]:
    """What ``plan.json`` carries beside its typed core: the hard constraints as the planner
    applied them (for the reader: review re-derives them from the preset), the score's weights,
    where the structures came from and what is known of them, and provenance."""
    return {
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




def write_risk_map(result: PlanResult, path: str | os.PathLike[str]) -> None:
    """Every candidate entry (LPS), its score (NaN if infeasible) and its rejection reason."""
    rm = result.risk_map
    with atomic_path(path, ".npz") as tmp:
        np.savez_compressed(tmp, entries_lps=rm["entries"].astype(np.float32), score=rm["score"].astype(np.float32),
                            reason=rm["reason"].astype("U40"))
