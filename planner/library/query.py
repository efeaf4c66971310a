"""Search, similarity and the teaching export of the case library."""

from __future__ import annotations

import html
import json
import math
import os
import re
import shutil
from pathlib import Path
from typing import Any

from ..errors import InputError
from . import facts as F
from .store import CaseView, Library, _read_checks, chosen_rank_of, read_plan_folder

OUTCOME_WORDS = ("pneumothorax", "haemorrhage", "none", "chest-tube", "diagnostic", "nondiagnostic", "any", "unknown")


def parse_range(text: str | None, what: str) -> tuple[float, float] | None:
    """``10-20``, ``10-``, ``-20`` or ``15`` (mm) as (low, high); one-line error otherwise."""
    if text is None or text == "":
        return None
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)?\s*(-)?\s*(\d+(?:\.\d+)?)?\s*", text)
    if not m or (m.group(1) is None and m.group(3) is None):
        raise InputError(f"--{what} {text!r}: expected a range in mm such as 10-20, 10- or -20")
    lo = float(m.group(1)) if m.group(1) else 0.0
    hi = float(m.group(3)) if m.group(3) else (math.inf if m.group(2) else lo)
    if lo > hi:
        raise InputError(f"--{what} {text!r}: the low end is above the high end")
    return lo, hi


def _outcome_matches(o: dict[str, Any] | None, word: str) -> bool:
    if word == "unknown":
        return o is None
    if o is None:
        return False
    comp = o["complications"]
    return {"any": True, "none": comp == ["none"], "pneumothorax": "pneumothorax" in comp,
            "haemorrhage": "haemorrhage" in comp, "chest-tube": o["chest_tube"], "diagnostic": o["diagnostic"],
            "nondiagnostic": not o["diagnostic"]}[word]


def search(lib: Library, procedure: str | None = None, region: str | None = None, size: str | None = None,
           depth: str | None = None, outcome: str | None = None, risk: str | None = None) -> list[CaseView]:
    """Cases matching every filter given (region: a lobe abbreviation or a structure name, any case)."""
    size_r, depth_r = parse_range(size, "size"), parse_range(depth, "depth")
    if outcome is not None and outcome not in OUTCOME_WORDS:
        raise InputError(f"--outcome {outcome!r}: one of {', '.join(OUTCOME_WORDS)}")
    out = []
    for c in lib.cases(procedure=procedure):
        f = c.facts
        if region and f["region"].lower() != region.lower():
            continue
        if size_r and (f["size_mm"] is None or not size_r[0] <= f["size_mm"] <= size_r[1]):
            continue
        if depth_r and (f["depth_mm"] is None or not depth_r[0] <= f["depth_mm"] <= depth_r[1]):
            continue
        if outcome and not _outcome_matches(c.outcome, outcome):
            continue
        if risk and not f["risk_factors"].get(risk):
            continue
        out.append(c)
    return out


#: How much each fact counts in the distance between two cases (per unit as written).
SIMILARITY_WEIGHTS = {"frame": 1.0 / 0.1,  # a tenth of the lungs' (or body's) extent
                      "size_mm": 1.0 / 10.0, "depth_mm": 1.0 / 20.0, "lung_mm": 1.0 / 15.0, "risk": 0.5,
                      "region": 1.0}


def distance(a: dict[str, Any], b: dict[str, Any]) -> float:
    """A weighted distance between two cases' facts: the target's position in the normalised
    anatomical frame (LPS axes of the lungs' or body's bounding box, 0-1), size, depth, aerated
    lung crossed, the risk factors that differ, and a different region."""
    w = SIMILARITY_WEIGHTS
    d2 = 0.0
    if a["frame"] == b["frame"] and a["frame"] != "none":
        for k in ("frame_x", "frame_y", "frame_z"):
            d2 += (w["frame"] * ((a[k] or 0.0) - (b[k] or 0.0))) ** 2
    else:
        d2 += (w["frame"] * 0.5) ** 2 * 3
    for k in ("size_mm", "depth_mm", "lung_mm"):
        if a[k] is not None and b[k] is not None:
            d2 += (w[k] * (a[k] - b[k])) ** 2
        elif (a[k] is None) != (b[k] is None):
            d2 += 1.0
    ra, rb = a["risk_factors"], b["risk_factors"]
    d2 += w["risk"] ** 2 * sum(bool(ra.get(k)) != bool(rb.get(k)) for k in set(ra) | set(rb))
    if a["region"] != b["region"]:
        d2 += w["region"] ** 2
    return math.sqrt(d2)


def facts_of_folder(lib: Library, folder: str | Path) -> tuple[list[dict[str, Any]], set[str]]:
    """The facts of each target of a plan folder (not stored) and the keys it has in the library."""
    d = Path(folder)
    doc, raw = read_plan_folder(d)
    checks = [{"trajectory_rank": (c.get("plan") or {}).get("trajectory_rank")} for c in _read_checks(d)]
    chosen, _ = chosen_rank_of(d, doc, checks, raw)
    frames = lib._frames(d, doc)
    base = F.sha256(raw)
    blocks = F.target_blocks(doc)
    return [F.derive(doc, b, frames, chosen) for b in blocks], {f"{base}#{i}" for i in range(len(blocks))}


def similar(lib: Library, folder: str | Path, k: int = 5, target: int = 0) -> list[tuple[float, CaseView]]:
    """The ``k`` library cases of the same procedure most similar to the folder's target ``target``
    (the folder's own cases left out), nearest first."""
    if k < 1:
        raise InputError(f"-k {k}: give at least 1")
    all_facts, own = facts_of_folder(lib, folder)
    if not 0 <= target < len(all_facts):
        raise InputError(f"--target {target + 1}: the plan has {len(all_facts)} target(s)")
    me = all_facts[target]
    scored = [(distance(me, c.facts), c) for c in lib.cases(procedure=me["procedure"]) if c.key not in own]
    scored.sort(key=lambda t: (round(t[0], 9), t[1].id))
    return scored[:k]


def outcome_summary(o: dict[str, Any] | None) -> str:
    """The outcome in a few words: "pneumothorax; chest tube no; diagnostic" (or "not recorded")."""
    if o is None:
        return "not recorded"
    return (", ".join(o["complications"]) + f"; chest tube {'yes' if o['chest_tube'] else 'no'}; "
            f"{'diagnostic' if o['diagnostic'] else 'not diagnostic'}")


def _json_number(v: Any, digits: int = 2) -> float | None:
    return round(float(v), digits) if isinstance(v, (int, float)) and math.isfinite(v) else None


def similar_for_plan(library_root_or_url: Any, plan_dir: str | Path, k: int = 5, *,
                     target: int = 0) -> list[dict[str, Any]]:
    """The ``k`` library cases most similar to the plan in ``plan_dir`` (its target ``target``),
    nearest first, as plain JSON-ready dicts (what the web review lists beside a plan).

    ``library_root_or_url``: a library root folder, an open :class:`Library`, or a database URL
    (``postgresql+psycopg://...``; its files then lie under ``$PLANNER_LIBRARY`` or the default
    root). A root folder that does not exist holds no case: the answer is ``[]`` (nothing is
    created). Each dict: ``case_id``, ``procedure``, ``region``, ``size_mm``, ``depth_mm``,
    ``lung_mm``, ``chosen_rank``, ``risk_factors`` (the names present), ``outcome`` (the recorded
    outcome or None), ``outcome_summary`` (a few words), ``distance`` and ``key_image`` (absolute
    path of its key image in the library, or None when it was planned without the report set).
    Raises :class:`planner.InputError` for a folder that is not a plan."""
    from .store import Library, default_root, open_library

    if isinstance(library_root_or_url, Library):
        return _similar_rows(library_root_or_url, plan_dir, k, target)
    text = str(library_root_or_url)
    if "://" in text:
        root, url = default_root(), text
    else:
        root, url = Path(text), None
        if not (root / "library.sqlite").is_file() and not os.environ.get("PLANNER_LIBRARY_DB"):
            read_plan_folder(Path(plan_dir))  # a bad plan folder is still said
            return []
    with open_library(root, url) as lib:
        return _similar_rows(lib, plan_dir, k, target)


def _similar_rows(lib: Library, plan_dir: str | Path, k: int, target: int) -> list[dict[str, Any]]:
    rows = []
    for d, c in similar(lib, plan_dir, k, target):
        f = c.facts
        key = f.get("key_image_sha256")
        rows.append({"case_id": c.id, "procedure": f["procedure"], "region": f["region"],
                     "size_mm": _json_number(f["size_mm"]), "depth_mm": _json_number(f["depth_mm"]),
                     "lung_mm": _json_number(f["lung_mm"]), "chosen_rank": f["chosen_rank"],
                     "risk_factors": sorted(k_ for k_, v in f["risk_factors"].items() if v),
                     "outcome": c.outcome, "outcome_summary": outcome_summary(c.outcome),
                     "distance": round(d, 4), "key_image": str(lib.object_path(key)) if key else None})
    return rows


def case_line(c: CaseView) -> str:
    f = c.facts
    oc = "outcome not recorded" if c.outcome is None else outcome_summary(c.outcome)
    num = (lambda v: "?" if v is None else f"{v:.0f}")
    return (f"case {c.id}: {f['procedure']} {f['region']}, size {num(f['size_mm'])} mm, depth {num(f['depth_mm'])} mm, "
            f"lung {num(f['lung_mm'])} mm, {f['needle_gauge'] or '?'}, trajectory #{f['chosen_rank'] or '?'}"
            f" of {f['n_trajectories']}; {oc}")


# ---------------------------------------------------------------------------------------------
def export(lib: Library, cases: list[CaseView], out: str | Path) -> Path:
    """A teaching folder: one sub-folder per case (de-identified plan.json, images, checks,
    outcome.json, facts.json) and ``index.html``; written whole (staged, then swapped in)."""
    from ..atomic import replace_folder

    if not cases:
        raise InputError("no case matches: nothing to export")
    with replace_folder(out, marker="index.html", what="teaching folder", keep_if=None) as staging:
        rows = []
        for c in cases:
            sub = staging / f"case-{c.id:04d}"
            for name, digest in sorted(c.files.items()):
                p = sub / name
                p.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(lib.object_path(digest), p)
            facts = {k: v for k, v in c.facts.items() if k not in ("plan_sha256", "key_image_sha256")}
            (sub / "facts.json").write_text(json.dumps(facts, indent=1, sort_keys=True))
            (sub / "outcome.json").write_text(json.dumps(c.outcome, indent=1, sort_keys=True))
            key = next((n for n in F.KEY_IMAGES if n in c.files), None)
            rows.append((c, sub.name, key))
        (staging / "index.html").write_text(_index_html(rows), encoding="utf-8")
    return Path(out)


def _mm(v: Any) -> str:
    return "-" if not isinstance(v, (int, float)) or not math.isfinite(v) else f"{v:.0f} mm"


def _index_html(rows: list[tuple[CaseView, str, str | None]]) -> str:
    from .rates import published

    e = html.escape
    titles: dict[str, dict[str, str]] = {}
    parts = ["<!doctype html><html><head><meta charset='utf-8'><title>Case library: teaching selection</title>",
             "<style>body{font-family:sans-serif;margin:2em}td,th{padding:4px 8px;border-bottom:1px solid #ccc;"
             "vertical-align:top;text-align:left}img{max-width:260px;display:block}.cap{font-size:85%;color:#555}"
             "</style></head><body>",
             f"<h1>Case library: teaching selection ({len(rows)} cases)</h1>",
             "<p>De-identified cases. Positions in DICOM patient coordinates (LPS, mm). The facts and risk factors "
             "are those of the trajectory performed (the one chosen); each key image is the planning slice of the "
             "planner's first trajectory, made when the case was planned.</p>",
             "<table><tr><th>case</th><th>key image</th><th>facts</th><th>risk factors</th><th>outcome</th></tr>"]
    for c, sub, key in rows:
        f, o = c.facts, c.outcome
        chosen = f["chosen_rank"]
        if key:
            cap = "planning slice of trajectory #1" + (f" (the one performed is #{chosen})" if chosen and chosen != 1
                                                       else "")
            img = f"<img src='{e(sub)}/{e(key)}' alt='key image of {e(sub)}'><span class='cap'>{e(cap)}</span>"
        else:
            img = "<span class='cap'>no image (planned without the report set)</span>"
        oc = "not recorded" if o is None else e(", ".join(o["complications"])) + \
            f"<br>chest tube: {'yes' if o['chest_tube'] else 'no'}<br>{'diagnostic' if o['diagnostic'] else 'not diagnostic'}" + \
            (f"<br><i>{e(o['note'])}</i>" if o["note"] else "")
        size = _mm(f["size_mm"])
        facts = (f"{e(f['procedure'])}<br>region {e(f['region'])}<br>size {size}<br>depth {_mm(f['depth_mm'])}"
                 + (f"<br>aerated lung crossed {_mm(f['lung_mm'])}" if f["lung_mm"] is not None else "")
                 + f"<br>needle {e(f['needle_gauge'] or '-')}<br>trajectory #{e(str(chosen or '-'))} of "
                   f"{f['n_trajectories']}" + (f" ({e(f['chosen_source'])})" if f["chosen_source"] != "none" else "")
                 + f"<br>{e(f['limiting'])}")
        if f["procedure"] not in titles:
            titles[f["procedure"]] = {x["id"]: x["title"] for x in (published(f["procedure"]) or {}).get("factors", [])}
        present = [titles[f["procedure"]].get(k, k) for k, v in f["risk_factors"].items() if v]
        risks = "<br>".join(e(t) for t in (f["risk_text"] or present)) or "none"
        parts.append(f"<tr><td><a href='{e(sub)}/plan.json'>{e(sub)}</a></td><td>{img}</td><td>{facts}</td>"
                     f"<td>{risks}</td><td>{oc}</td></tr>")
    parts.append("</table></body></html>")
    return "\n".join(parts)
