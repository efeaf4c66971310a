"""Points on the interlobar fissures, placed by the user in 3D Slicer (a ``.mrk.json`` file).

Where the automatic segmentation cannot find a lung's fissures credibly, a few points clicked on
each fissure (on the axial, sagittal or coronal views, anywhere along it) are enough to fit it
and split the lung into its lobes. The file holds one or more point lists (Slicer's "Point
List" or any other markup with control points); which fissure a point is on is read from the
markup's name, or else from the point's own label: ``oblique`` (or ``major``) or ``minor`` (or
``horizontal``). The side is the lung the point lies in. Positions are converted from RAS when
the file says so (Slicer writes LPS by default).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from ..errors import InputError, brief

KINDS = {"oblique": ("oblique", "major"), "minor": ("minor", "horizontal")}


def _kind(text: str) -> str | None:
    t = text.lower()
    found = [k for k, words in KINDS.items() if any(w in t for w in words)]
    return found[0] if len(found) == 1 else None


def read_fissure_points(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """``{"oblique": (n, 3), "minor": (m, 3)}`` LPS mm (a kind with no point is left out)."""
    p = Path(path)
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{p}: no such fissure points file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputError(f"{p}: not a 3D Slicer markups file (.mrk.json): {brief(e)}") from None
    except RecursionError:
        raise InputError(f"{p}: not a 3D Slicer markups file (.mrk.json): JSON nested too deeply") from None
    markups = doc.get("markups") if isinstance(doc, dict) else None
    if not isinstance(markups, list) or not markups:
        raise InputError(f"{p}: no markups in it (expected a 3D Slicer .mrk.json with points on the fissures)")
    out: dict[str, list[list[float]]] = {"oblique": [], "minor": []}
    for n, m in enumerate(markups):
        points = m.get("controlPoints") if isinstance(m, dict) else None
        if not isinstance(m, dict) or not isinstance(points, (list, type(None))):
            raise InputError(f"{p}: markup {n + 1} is not a markup with a list of control points")
        name = brief(repr(m.get("name", "")), 60)
        system = str(m.get("coordinateSystem", "LPS")).upper()
        if system not in ("LPS", "RAS"):
            raise InputError(f"{p}: markup {name}: coordinate system {brief(repr(system), 40)} is not LPS or RAS")
        flip = np.array([-1.0, -1.0, 1.0]) if system == "RAS" else np.ones(3)
        whole = _kind(str(m.get("name", "")))
        for cp in points or []:
            if not isinstance(cp, dict):
                raise InputError(f"{p}: markup {name}: a control point is not an object")
            if cp.get("positionStatus", "defined") != "defined":
                continue
            label = brief(repr(cp.get("label", "")), 60)
            kind = whole or _kind(str(cp.get("label", "")))
            if kind is None:
                raise InputError(f"{p}: point {label} of markup {name}: say which "
                                 "fissure it is on in the markup's name or the point's label ('oblique' or 'minor')")
            pos = cp.get("position")
            try:
                xyz = np.asarray(pos, float) if isinstance(pos, list) and not any(isinstance(x, bool) for x in pos) \
                    else None
            except (TypeError, ValueError, OverflowError):
                xyz = None
            if xyz is None or xyz.shape != (3,) or not np.all(np.isfinite(xyz)):
                raise InputError(f"{p}: point {label} has no position (three finite numbers)")
            out[kind].append(list(xyz * flip))
    got = {k: np.asarray(v, float) for k, v in out.items() if v}
    if not got:
        raise InputError(f"{p}: no defined points on a fissure")
    return got
