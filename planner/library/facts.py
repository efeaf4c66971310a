"""What the library keeps of a plan folder: its de-identified files and the facts derived from
``plan.json`` (and its structures file, for the target's lobe and the normalised frame).

De-identification uses the product's anonymiser (:func:`planner.report.anonymize.anonymize_plan`)
and then removes, from every string of the documents kept, each identifier the source held
(patient name and its parts, ID, birth date, accession, UIDs, the scan's and the structures'
paths, the plan folder's path) and anything that looks like a file path; what comes out is
checked once more and refused if an identifier is still in it.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError

#: The lung lobes by structure name (TotalSegmentator's names) and their usual abbreviations.
LOBES = {"lung_upper_lobe_right": "RUL", "lung_middle_lobe_right": "RML", "lung_lower_lobe_right": "RLL",
         "lung_upper_lobe_left": "LUL", "lung_lower_lobe_left": "LLL"}
_LUNG_NAMES = set(LOBES) | {"lung_left", "lung_right", "lung"}
_NOT_ANATOMY = {"body", "skin", "lung_vessels", "lung_fissures", "emphysema", "unidentified"}
_PATH = re.compile(r"(?:(?<=\s)|^|(?<=[\"'(=:]))(?:[A-Za-z]:[\\/]|~?/)[^\s\"',;)]*")
KEY_IMAGES = ("images/planning_slice.png", "images/slice_axial.png")


# ---------------------------------------------------------------------------------------------
# de-identification
def identifiers(doc: dict[str, Any], folder: Path | None = None) -> list[str]:
    """The identifying strings of a plan document (and its folder) that must not be stored."""
    out: list[str] = []
    pat, study, im = doc.get("patient") or {}, doc.get("study") or {}, doc.get("image") or {}
    for v in (pat.get("name"), pat.get("id"), pat.get("birth_date"), study.get("accession_number"),
              study.get("description"), study.get("series_description"), im.get("series_instance_uid"),
              im.get("study_instance_uid"), im.get("frame_of_reference_uid"), im.get("source"),
              doc.get("structures_source")):
        if isinstance(v, str) and len(v.strip()) >= 3 and v != "automatic segmentation":
            out.append(v.strip())
    name = pat.get("name")
    if isinstance(name, str):
        out += [p for p in re.split(r"[\^\s,]+", name) if len(p) >= 3]
    for v in (im.get("source"), doc.get("structures_source")):
        if isinstance(v, str) and v and v != "automatic segmentation":
            p = Path(v)
            out += [str(p.absolute()), str(p.resolve())] if len(v) >= 3 else []
    if folder is not None:
        out += [str(folder.absolute()), str(folder.resolve())]
    seen: list[str] = []
    for v in sorted(out, key=len, reverse=True):
        if v not in seen and v not in ("/", "."):
            seen.append(v)
    return seen


def scrub(value: Any, ids: list[str]) -> Any:
    """``value`` (JSON) with every identifier in ``ids`` and every file path removed from its strings."""
    if isinstance(value, dict):  # names are keys too (a structure's clearance): scrubbed as well
        return {scrub(k, ids) if isinstance(k, str) else k: scrub(v, ids) for k, v in value.items()}
    if isinstance(value, list):
        return [scrub(v, ids) for v in value]
    if isinstance(value, str):
        s = value
        for ident in ids:
            if ident.lower() in s.lower():
                s = _pattern(ident).sub("[removed]", s)
        return _PATH.sub("[path removed]", s)
    return value


def _pattern(ident: str) -> re.Pattern[str]:
    """A part of a name (letters only) as a word: "Lee" is removed, "needle" is kept; anything
    else (a full name, an ID, a UID, a path) wherever it is."""
    if ident.isalpha():
        return re.compile(r"(?<![^\W\d_])" + re.escape(ident) + r"(?![^\W\d_])", re.IGNORECASE)
    return re.compile(re.escape(ident), re.IGNORECASE)


def assert_clean(data: bytes, ids: list[str], what: str, allowed: Any = ()) -> None:
    """Refuse ``data`` (a text) if any identifier is in it (any case); ``allowed``: whole JSON
    string values of the product's vocabulary (:func:`vocabulary`) not searched."""
    for word in allowed:
        data = data.replace(json.dumps(word).encode(), b'""')
    low = data.lower()
    text = None
    for i in ids:
        if i.lower().encode() not in low:
            continue
        if i.isalpha():  # a part of a name: only as a word
            text = data.decode("utf-8", "replace") if text is None else text
            if not _pattern(i).search(text):
                continue
        raise InputError(f"{what}: an identifier of the source is still in it after de-identification; "
                         "refusing to store it")


def deidentify_plan(doc: dict[str, Any], ids: list[str], salt: bytes | None = None) -> dict[str, Any]:
    from ..report.anonymize import anonymize_plan, new_uid_map

    out = anonymize_plan(doc, new_uid_map(salt))
    out.pop("patient", None)
    out.pop("study", None)
    out["image"]["corrections"] = scrub(out["image"].get("corrections", []), ids)
    clean = scrub(out, ids)
    # The procedure's id is the product's own word (a shipped preset), never the patient's: kept
    # whole even when it shares a word with a name ("Knee" and "knee-injection").
    for key, value in vocabulary(doc).items():
        clean[key] = value
    return clean


def vocabulary(doc: dict[str, Any]) -> dict[str, str]:
    """The plan's words that are the product's own, never the patient's: the procedure's id and
    title when it is a shipped preset. A name part they share ("Knee", "knee-injection") is
    removed everywhere else; these are kept whole (see :func:`assert_clean`'s ``allowed``)."""
    from ..planning.presets import list_presets, load_preset

    proc = doc.get("procedure")
    if not isinstance(proc, str) or proc not in list_presets():
        return {}
    out = {"procedure": proc}
    title = load_preset(proc).title
    if doc.get("procedure_title") == title:
        out["procedure_title"] = title
    return out


def deidentify_check(doc: dict[str, Any], ids: list[str]) -> dict[str, Any]:
    out = dict(doc)
    im = dict(out.get("check_image") or {})
    for key in ("series_instance_uid", "study_instance_uid", "source"):
        if key in im:
            im[key] = ""
    out["check_image"] = im
    out["identity"] = ["(identity notes removed in the library)"] if out.get("identity") else []
    return scrub(out, ids)


_PNG_CACHE: dict[str, bytes] = {}


def clean_png(data: bytes) -> bytes:
    """A PNG re-encoded from its pixels only (no text chunks, no metadata), deterministically."""
    key = sha256(data)
    if key not in _PNG_CACHE:
        if len(_PNG_CACHE) > 64:
            _PNG_CACHE.clear()
        _PNG_CACHE[key] = _clean_png(data)
    return _PNG_CACHE[key]


def _clean_png(data: bytes) -> bytes:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        im.load()
        pixels = im.convert("RGB") if im.mode not in ("L", "RGB", "RGBA") else im.copy()
    buf = io.BytesIO()
    pixels.save(buf, format="PNG", optimize=False, compress_level=3)
    return buf.getvalue()


# ---------------------------------------------------------------------------------------------
# facts
def target_blocks(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """One block per target (``targets`` of a multi-target plan, else the top level)."""
    blocks = doc.get("targets")
    if isinstance(blocks, list) and blocks:
        return blocks
    return [{k: doc[k] for k in ("target", "status", "trajectories", "rejected") if k in doc}]


def frame_facts(seg_path: Path) -> dict[str, Any]:
    """The segments of a structures file with their LPS bounding boxes, read once per file:
    ``{"segments": {name: [lo, hi]}}`` plus the label grid kept for the target's neighbourhood."""
    from ..anatomy.slicer_seg import _read, _segments

    data, affine, header = _read(seg_path)
    segs = _segments(header, data.shape[0], seg_path)
    from scipy import ndimage

    boxes: dict[str, Any] = {}
    found = {layer: ndimage.find_objects(data[layer].astype(np.int32)) for layer in {s["layer"] for s in segs}}
    for s in segs:
        objs = found[s["layer"]]
        sl = objs[s["value"] - 1] if 1 <= s["value"] <= len(objs) else None
        if sl is None:
            continue
        lo = np.array([x.start for x in sl])[::-1]  # (i, j, k)
        hi = np.array([x.stop - 1 for x in sl])[::-1]
        corners = np.array([[a, b, c, 1.0] for a in (lo[0], hi[0]) for b in (lo[1], hi[1]) for c in (lo[2], hi[2])])
        lps = (affine @ corners.T).T[:, :3]
        boxes[s["name"]] = [lps.min(axis=0).round(2).tolist(), lps.max(axis=0).round(2).tolist()]
    return {"segments": boxes, "_grid": (data, affine, segs)}


def _region_near(grid: Any, point: np.ndarray, radius_mm: float, target_label: str) -> str:
    """The anatomical structure most present within ``radius_mm`` of the target (lobes first)."""
    data, affine, segs = grid
    inv = np.linalg.inv(affine)
    ijk = (inv @ np.append(point, 1.0))[:3]
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    r = np.ceil(radius_mm / spacing).astype(int)
    lo = np.maximum(np.rint(ijk).astype(int) - r, 0)
    hi = np.minimum(np.rint(ijk).astype(int) + r + 1, np.array(data.shape[1:][::-1]))
    if np.any(hi <= lo):
        return ""
    counts: dict[str, int] = {}
    for s in segs:
        name = s["name"]
        if name == target_label or name in _NOT_ANATOMY or name.endswith("_by_position"):
            continue  # (a limb's bundles placed by position are a keep-out zone, not anatomy seen)
        block = data[s["layer"], lo[2]:hi[2], lo[1]:hi[1], lo[0]:hi[0]] == s["value"]
        n = int(block.sum())
        if n:
            counts[name] = n
    lobes = {k: v for k, v in counts.items() if k in LOBES}
    pick = lobes or counts
    return max(pick, key=lambda k: pick[k]) if pick else ""


def _named_region(label: str) -> str:
    """The region a target names itself: an anatomical structure (a lobe, an organ, a bone) is its
    own region; a joint's effusion is its joint (``knee_effusion_right`` -> ``knee_right``)."""
    from ..anatomy.registry import StructureClass, class_of

    m = re.match(r"^(\w+?)_effusion_(left|right)$", label)
    if m and m.group(1) not in ("pleural", "pericardial"):
        return f"{m.group(1)}_{m.group(2)}"
    if label in LOBES:
        return LOBES[label]
    if class_of(label) in (StructureClass.TARGET, StructureClass.FLUID, StructureClass.OTHER, StructureClass.BODY):
        return ""
    return label


def _box_of(boxes: dict[str, Any], names: set[str] | None) -> list[list[float]] | None:
    sel = [v for k, v in boxes.items() if (names is None or k in names) and k not in _NOT_ANATOMY]
    if not sel:
        return None
    lo = np.min([b[0] for b in sel], axis=0)
    hi = np.max([b[1] for b in sel], axis=0)
    return [lo.tolist(), hi.tolist()]


GAUGE = re.compile(r"^(\d+)\s*G$", re.IGNORECASE)


def risk_flags(procedure: str, metrics: dict[str, Any], size_mm: float | None, gauge: str) -> dict[str, bool]:
    """The binary risk factors of the chosen trajectory of a lung biopsy (those the published odds
    ratios of pneumothorax are for, as ``planner/planning/explain.py`` defines them); none for
    other procedures."""
    m = metrics
    g = GAUGE.match(gauge or "")
    flags = {
        "lung_3cm": float(m.get("lung_mm", 0) or 0) >= 30,
        "fissure": float(m.get("fissures", 0) or 0) >= 1,
        "emphysema": float(m.get("emphysema_mm", 0) or 0) > 0,
        "multiple_punctures": float(m.get("pleura_crossings", 0) or 0) > 1,
        "small_lesion": size_mm is not None and size_mm < 40,
        "large_needle": bool(g) and int(g.group(1)) <= 18,  # type: ignore[union-attr]
    }
    if procedure != "lung-biopsy":
        return {}  # the published factors (planner/data/risk_factors/) are those of pneumothorax
    return flags


def derive(doc: dict[str, Any], block: dict[str, Any], frames: dict[str, Any] | None,
           chosen_rank: int | None) -> dict[str, Any]:
    """The facts of one target block: procedure, region, size, depth, lung, risk factors, ..."""
    target = block.get("target") or {}
    point = np.asarray(target.get("point") or [np.nan] * 3, float)
    label = str(target.get("label") or "")
    trajs = [t for t in block.get("trajectories") or [] if isinstance(t, dict)]
    rank = chosen_rank if chosen_rank and any(t.get("rank") == chosen_rank for t in trajs) else (1 if trajs else None)
    chosen = next((t for t in trajs if t.get("rank") == rank), {})
    metrics = chosen.get("metrics") or {}
    size = target.get("diameter_mm")
    size = float(size) if isinstance(size, (int, float)) else None
    procedure = str(doc.get("procedure", ""))
    region, frame, fxyz = "", "none", [None, None, None]
    boxes = (frames or {}).get("segments") or {}
    if frames and np.all(np.isfinite(point)):
        grid = frames.get("_grid")
        near = _region_near(grid, point, (size or 10.0) / 2 + 6.0, label) if grid is not None else ""
        region = LOBES.get(near, near)
        box, frame = None, "none"
        if procedure == "lung-biopsy":
            box, frame = _box_of(boxes, _LUNG_NAMES), "lungs"
        if box is None:
            box, frame = _box_of(boxes, {"body"}), "body"
        if box is None:
            box, frame = _box_of(boxes, None), "structures"
        if box is not None:
            lo, hi = np.asarray(box[0]), np.asarray(box[1])
            fxyz = [round(float(v), 4) for v in (point - lo) / np.maximum(hi - lo, 1e-6)]
        else:
            frame = "none"
    region = _named_region(label) or region or label or "unknown"
    side = "right" if np.isfinite(point[0]) and point[0] < 0 else "left" if np.isfinite(point[0]) else ""
    for word in ("right", "left"):
        if label.endswith(f"_{word}") or region.endswith(f"_{word}"):
            side = word
    if region in LOBES.values():
        side = "right" if region.startswith("R") else "left"
    gauge = str((chosen.get("needle") or {}).get("gauge", ""))
    traj_rows = [{"rank": int(t.get("rank", 0)), "length_mm": t.get("length_mm"),
                  "gauge": str((t.get("needle") or {}).get("gauge", "")),
                  "metrics": {k: float(v) for k, v in (t.get("metrics") or {}).items() if isinstance(v, (int, float))}}
                 for t in trajs]
    return {
        "procedure": procedure, "status": str(block.get("status", doc.get("status", ""))),
        "region": region, "target_label": label, "side": side,
        "size_mm": size, "depth_mm": float(chosen["length_mm"]) if "length_mm" in chosen else None,
        "lung_mm": float(metrics["lung_mm"]) if "lung_mm" in metrics else None,
        "needle_gauge": gauge, "limiting": str(chosen.get("limiting", "")),
        "chosen_rank": rank, "n_trajectories": len(trajs),
        "frame": frame, "frame_x": fxyz[0], "frame_y": fxyz[1], "frame_z": fxyz[2],
        "risk_factors": risk_flags(procedure, metrics, size, gauge),
        "risk_text": [str(x) for x in chosen.get("risk_factors", [])],
        "trajectories": traj_rows,
        "preset_sha256": str((doc.get("preset") or {}).get("sha256", "")),
    }


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def dumps(doc: Any) -> bytes:
    return json.dumps(doc, indent=1, sort_keys=True, allow_nan=False).encode()
