"""What a Dask worker runs for a cohort: each function reads its scans from their paths (nothing
large goes through the scheduler) and returns a small record."""

from __future__ import annotations

import hashlib
import json
import os
import time
import traceback
from pathlib import Path
from typing import Any

from ..atomic import write_json_atomic
from ..errors import PlannerError

#: Scans a worker keeps loaded between its tasks (planner.images.keep_loaded): the rows of a cohort
#: on one CT (several targets each) read it once per worker.
KEEP_SCANS = 1

#: Structure classes a target's region is named by, most specific first.
_REGION_CLASSES = ("lobe", "target", "fluid", "organ", "lung", "bone", "muscle")


def content_hash(path: str | os.PathLike[str]) -> str:
    """SHA-256 of a file, or of a folder's files (relative names and bytes, in name order)."""
    p = Path(path)
    h = hashlib.sha256()
    files = [p] if p.is_file() else sorted(f for f in p.rglob("*") if f.is_file())
    for f in files:
        h.update(str(f.relative_to(p) if f != p else f.name).encode())
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def _local_ct(ct: str, pacs_config: str | None) -> str:
    if not ct.startswith("pacs:"):
        return ct
    from ..pacs.cache import fetch_series
    from ..pacs.config import load_config

    _, node, series = ct.split(":", 2)
    cfg = load_config(pacs_config)
    folder, _ = fetch_series(cfg, cfg.node(node), series)
    return str(folder)


def _segmentation_lock(name: str) -> Any:
    """On a cluster worker, a Dask lock of this name (held by one worker of the cluster at a time);
    in a plain process, nothing to wait for."""
    import contextlib

    try:
        from distributed import Lock, get_worker

        get_worker()
    except (ImportError, ValueError):
        return contextlib.nullcontext()
    return Lock(name)


def ensure_segmented(ct: str, modality: str, source: str = "") -> str:
    """Make sure the segmentation cache (planner.anatomy.cache) holds this CT's automatic
    segmentation, kept by voxel hash for every case on it, on any worker. One worker segments a CT
    while the others that need it wait (the first case on a CT that is not in the cache); the
    scan stays loaded for the case (``KEEP_SCANS``). ``ct``: a local path (``source``: what the
    manifest named, kept with the segmentation). Returns what was done."""
    from ..anatomy.autoseg import segment_ct
    from ..anatomy.cache import has_segmentation, store_segmentation
    from ..images import keep_loaded, load_image

    keep_loaded(KEEP_SCANS)
    image = load_image(ct, None, modality)
    if has_segmentation(image):
        return "already segmented"
    if image.sha256 in _SEGMENTATION_FAILED:  # said again for each case on it, not tried again
        raise PlannerError(_SEGMENTATION_FAILED[image.sha256])
    with _segmentation_lock(f"planner-segment-{image.sha256}"):
        if has_segmentation(image):  # by another worker while this one waited
            return "segmented by another worker"
        try:
            store_segmentation(image, segment_ct(image), source=source or ct)
        except PlannerError as exc:
            _SEGMENTATION_FAILED[image.sha256] = str(exc)
            raise
    return "segmented"


#: Voxel hash -> why its automatic segmentation failed, in this worker process.
_SEGMENTATION_FAILED: dict[str, str] = {}


def _region(session: Any, point: Any, near_mm: float = 15.0) -> str:
    """Where a target lies: the lobe, organ, lung (or fluid, bone, muscle) that holds it or, for a
    lesion segmented out of its lobe, the nearest one within ``near_mm``; "" when none."""
    import numpy as np

    from ..planning.verify import structure_distance

    p = np.asarray(point, float)
    ijk = np.rint(session.image.lps_to_ijk(p)).astype(int)[::-1]
    best: tuple[float, int, str] = (np.inf, len(_REGION_CLASSES), "")
    for s in session.structures:
        cls = getattr(s.cls, "value", str(s.cls))
        if cls not in _REGION_CLASSES or cls == "target":
            continue
        loc = ijk - np.asarray(s.offset)
        inside = bool(np.all(loc >= 0) and np.all(loc < s.mask.shape) and s.mask[tuple(loc)])
        d = 0.0 if inside else structure_distance(session.structures, s.name, p, p, near_mm)
        if d is None:
            continue
        key = (round(float(d), 1), _REGION_CLASSES.index(cls), s.name)
        if key < best:
            best = key
    return best[2]


def summarize(plan: Any, session: Any) -> dict[str, Any]:
    """The figures of a plan a cohort table holds (the best trajectory's, and why others failed)."""
    block = plan.targets[0]
    out: dict[str, Any] = {
        "feasible": bool(block.ok), "status": block.status, "target_label": block.target.label,
        "target_how": block.target.how, "target_diameter_mm": block.target.diameter_mm,
        "region": _region(session, block.target.point), "n_candidates": block.n_candidates,
        "ruled_out": json.dumps({k: round(v / max(block.n_candidates, 1), 4) for k, v in block.rejected.items()}),
        "depth_mm": None, "needle": None, "limiting": None, "limiting_structure": None, "risk_factors": "",
        "n_risk_factors": 0, "lung_mm": None, "fissures": None, "pleura_crossings": None, "emphysema_mm": None,
        "min_clearance_excess_mm": None, "patient_position": None,
    }
    if block.trajectories:
        t = block.trajectories[0].to_json()
        m = t.get("metrics", {})
        limiting = str(t.get("limiting", ""))
        out.update({
            "depth_mm": t["length_mm"], "needle": f"{t['needle']['gauge']} {t['needle']['length_mm']:.0f} mm",
            "limiting": limiting,
            "limiting_structure": limiting.split("closest: ")[1].split(" at ")[0] if "closest: " in limiting else "",
            "risk_factors": "; ".join(t.get("risk_factors", [])), "n_risk_factors": len(t.get("risk_factors", [])),
            "lung_mm": m.get("lung_mm"), "fissures": m.get("fissures"), "pleura_crossings": m.get("pleura_crossings"),
            "emphysema_mm": m.get("emphysema_mm"), "min_clearance_excess_mm": m.get("min_clearance_excess_mm"),
            "patient_position": t.get("patient_position"),
        })
    return out


def plan_case(row: dict[str, Any], out_dir: str, input_key: str, report: bool, pacs_config: str | None = None,
              n_best: int = 1) -> dict[str, Any]:
    """Plan one row with the same code as ``planner plan`` into its plan folder; its record (also
    written to ``records/``) says the figures, or the error."""
    from ..images import keep_loaded
    from ..images.quiet import one_line
    from ..session import PlanRequest, TargetSpec, plan_and_write

    keep_loaded(KEEP_SCANS)
    t = time.perf_counter()
    out = Path(out_dir)
    record: dict[str, Any] = {"case_id": row["case_id"], "line": row["line"], "key": row["key"],
                              "folder": row["folder"], "input_key": input_key, "procedure": row["procedure"],
                              "ct": row["ct"], "feasible": None, "error": ""}
    try:
        ct = _local_ct(row["ct"], pacs_config)
        if row["structures"] is None and row["modality"] == "CT":
            record["segmentation"] = ensure_segmented(ct, row["modality"], row["ct"])
        request = PlanRequest(ct, row["procedure"],
                              [TargetSpec(row["target_kind"], row["target_value"])], structures=row["structures"],
                              modality=row["modality"], approach=row["approach"], side=row["side"], n_best=n_best)
        session, plan, _ = plan_and_write(request, out / row["folder"], report=report)
        record.update(summarize(plan, session))
    except PlannerError as exc:
        record["error"] = one_line(exc)
    except Exception as exc:  # noqa: BLE001 - a bug in one case must not stop the cohort: recorded whole
        record["error"] = f"internal error (a bug): {one_line(exc)}"
        record["traceback"] = traceback.format_exc()
    record["seconds"] = round(time.perf_counter() - t, 2)
    record["worker_pid"] = os.getpid()
    write_json_atomic(record, record_path(out, row["case_id"], row["key"]))
    return record


def record_path(out: Path, case_id: str, key: str) -> Path:
    return out / "records" / f"{case_id}__{key}.json"
