"""The trajectories as 3D Slicer line markups (``.mrk.json``), in LPS millimetres.

``plan.mrk.json`` holds one Line markup per trajectory (entry -> target, named by rank);
``markups/trajectory_<rank>.mrk.json`` holds each alone, for Slicer versions that read only
the first markup of a file. The files follow Slicer's markups schema v1.0.3; the part of it we
use is in ``planner/data/markups-schema-subset.json`` (see its ``$comment`` for the source).
"""

from __future__ import annotations

import json
import os
from importlib import resources
from pathlib import Path
from typing import Any

from ..atomic import write_text_atomic

SCHEMA_ID = ("https://raw.githubusercontent.com/slicer/slicer/master/Modules/Loadable/Markups/Resources/Schema/"
             "markups-schema-v1.0.3.json#")
# Slicer writes the same LPS -> LPS identity orientation for a line's control points.
_IDENTITY = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]


def markups_schema() -> dict[str, Any]:
    """The JSON schema the markups files are checked against."""
    text = resources.files("planner").joinpath("data", "markups-schema-subset.json").read_text(encoding="utf-8")
    return json.loads(text)  # type: ignore[no-any-return]


def _point(pid: str, label: str, description: str, position: list[float]) -> dict[str, Any]:
    return {"id": pid, "label": label, "description": description, "associatedNodeID": "",
            "position": [float(x) for x in position], "orientation": list(_IDENTITY), "selected": True,
            "locked": True, "visibility": True, "positionStatus": "defined"}


def line_markup(traj: dict[str, Any], target_label: str = "target") -> dict[str, Any]:
    """One trajectory of ``plan.json`` as a Slicer Line markup (LPS)."""
    rank = int(traj["rank"])
    needle = traj.get("needle", {})
    chosen = rank == 1
    colour = [1.0, 0.85, 0.0] if chosen else [0.3, 0.8, 1.0]
    return {
        "type": "Line",
        "name": f"trajectory {rank}" + (" (chosen)" if chosen else ""),
        "coordinateSystem": "LPS",
        "coordinateUnits": "mm",
        "locked": True,
        "fixedNumberOfControlPoints": True,
        "labelFormat": "%N-%d",
        "controlPoints": [
            _point("1", f"entry {rank}", f"skin entry, {needle.get('gauge', '')} {needle.get('length_mm', '')} mm "
                                         f"needle, depth {float(traj['length_mm']):.1f} mm", traj["entry"]),
            _point("2", f"{target_label} {rank}", "needle tip target", traj["target"]),
        ],
        "measurements": [{"name": "length", "enabled": True, "value": float(traj["length_mm"]), "units": "mm",
                          "printFormat": "%-#4.4g%s"}],
        "display": {"visibility": True, "opacity": 1.0, "color": colour, "selectedColor": colour,
                    "propertiesLabelVisibility": chosen, "pointLabelsVisibility": chosen, "textScale": 3.0,
                    "glyphType": "Sphere3D", "glyphScale": 1.0, "glyphSize": 5.0, "useGlyphScale": True,
                    "sliceProjection": False, "lineThickness": 0.2},
    }


def markups_document(doc: dict[str, Any], ranks: list[int] | None = None) -> dict[str, Any]:
    """The markups file for the trajectories of ``doc`` (all, or those of ``ranks``)."""
    label = str(doc.get("target", {}).get("label", "target"))
    trajs = [t for t in doc.get("trajectories", []) if ranks is None or t["rank"] in ranks]
    return {"@schema": SCHEMA_ID, "markups": [line_markup(t, label) for t in trajs]}


def write_markups(doc: dict[str, Any], plan_dir: str | os.PathLike[str]) -> list[Path]:
    """Write ``plan.mrk.json`` and one ``markups/trajectory_<rank>.mrk.json`` per trajectory."""
    d = Path(plan_dir)
    out = [write_text_atomic(json.dumps(markups_document(doc), indent=2) + "\n", d / "plan.mrk.json")]
    for t in doc.get("trajectories", []):
        one = markups_document(doc, [int(t["rank"])])
        out.append(write_text_atomic(json.dumps(one, indent=2) + "\n", d / "markups" / f"trajectory_{t['rank']}.mrk.json"))
    return out
