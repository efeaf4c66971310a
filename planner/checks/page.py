"""The check page (``check.pdf`` and ``check.html``) as report blocks, and the procedure log
page (``checks/index.html``).

:func:`check_facts` turns a ``check.json`` document (and the plan's ``plan.json``, for the
patient and study header) into the same blocks the plan's report is made of
(:mod:`planner.report.facts`), so that the PDF and the HTML print the very same strings. The
correction comes first, in large bold type in a heavy box: it is what the operator acts on.
Every figure is printed at 0.1 mm or 0.1 degree from the value in ``check.json``; the
correction's words are printed as ``check.json`` holds them.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
from html import escape
from pathlib import Path
from typing import Any

from ..report.facts import (Bullets, KeyValues, ReportFacts, Table, clip, deg, mm, patient_rows, point,
                            trajectory_rows)

#: The correction's action, as the first words of the box.
ACTION_WORDS = {"none": "ON TARGET", "advance": "ADVANCE", "withdraw": "WITHDRAW", "redirect": "REDIRECT",
                "new_trajectory": "NEW TRAJECTORY", "no_safe_correction": "NO SAFE CORRECTION",
                "rescan": "SCAN AGAIN"}
WARNINGS_TITLE = "Warnings"
CHECK_SIGNATURE = ("Check reviewed by (name):", "Date and time:")
CHECK_DISCLAIMER = ("A computed comparison of the check scan with the plan: look at the needle on the check scan "
                    "itself before acting on it.")
#: The words under the two images on the page.
CAPTIONS = {
    "needles_plane": "The check scan in the plane of the planned path and the needle (planning CT's coordinates): "
                     "planned path dashed, actual needle between solid lines, its extension dotted; dimmed where "
                     "only the planning CT covers the plane.",
    "bullseye": "Down the planned axis, at the target: the planned line is the centre; the target's outline, the "
                "circle a hit must fall in, the needle's tip now and where it would be at the target's depth.",
}
#: How the redirect's numbers are named on the page.
REDIRECT_WORDS = {
    "craniocaudal_change_deg": ("Change of the craniocaudal angle (+ toward the head)", "deg+"),
    "toward_left_change_deg": ("Change of the in-plane angle (+ toward the patient's left)", "deg+"),
    "turn_deg": ("Turn of the needle", "deg"),
    "advance_after_mm": ("Advance after the turn", "mm"),
    "new_depth_mm": ("Depth to the target along the new line", "mm"),
    "angle_from_vertical_deg": ("New line: angle from vertical (AP axis)", "deg"),
    "craniocaudal_deg": ("New line: craniocaudal angle (+ cranial)", "deg+"),
    "angle_from_room_vertical_deg": ("New line: angle from the room's vertical (decubitus)", "deg"),
}


def images_position(facts: ReportFacts) -> int | None:
    """The block the images go before on the check page: after the figures the operator acts on."""
    return next((n for n, b in enumerate(facts.blocks) if b.title == WARNINGS_TITLE), None)


def check_time(doc: dict[str, Any]) -> str:
    """When the check was made, as the page prints it: ``2026-12-05 00:47:36 UTC``."""
    created = str(doc.get("created", ""))
    try:
        t = _dt.datetime.fromisoformat(created)
    except ValueError:
        return clip(created or "-", 40)
    if t.tzinfo is not None and t.utcoffset() == _dt.timedelta(0):
        return t.strftime("%Y-%m-%d %H:%M:%S UTC")
    return t.isoformat(sep=" ")


def _value(key: str, v: Any) -> str:
    kind = REDIRECT_WORDS.get(key, ("", ""))[1]
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        if kind == "deg+":
            return deg(v, signed=True)
        if kind == "deg" or key.endswith("_deg"):
            return deg(v)
        if kind == "mm" or key.endswith("_mm"):
            return mm(v)
        return f"{float(v):g}"
    if isinstance(v, (list, tuple)) and len(v) == 3 and all(isinstance(x, (int, float)) for x in v):
        return point(v)
    return clip(v, 300)


def correction_blocks(doc: dict[str, Any]) -> list[Any]:
    """The correction: the box of what to do, then its numbers (whatever ``check.json`` holds)."""
    cor = doc.get("correction", {})
    action = str(cor.get("action", ""))
    blocks: list[Any] = [Bullets("What to do now", [f"{ACTION_WORDS.get(action, action.upper())}: {cor.get('text', '')}"],
                                 "action")]
    rows: list[tuple[str, str]] = []
    if cor.get("distance_mm") is not None:
        rows.append((f"{action.capitalize()} along the current axis by", mm(cor["distance_mm"])))
    if cor.get("withdraw_to_mm") is not None:
        rows.append(("Withdraw the tip to (from the skin, along the needle)", mm(cor["withdraw_to_mm"])))
    for key, v in (cor.get("redirect") or {}).items():
        rows.append((REDIRECT_WORDS.get(key, (key.replace("_", " "), ""))[0], _value(key, v)))
    if rows:
        blocks.append(KeyValues("The correction in numbers", rows))
    nt = cor.get("new_trajectory")
    if isinstance(nt, dict) and nt.get("entry") and nt.get("target"):
        t = dict(nt)
        t.setdefault("length_mm", t.get("depth_mm"))
        nrows = trajectory_rows(t)
        if t.get("entry_shift_mm") is not None:
            nrows.append(("New entry from the current skin puncture", mm(t["entry_shift_mm"])))
        clear = t.get("clearance_mm") or {}
        if clear:
            nrows.append(("Clearances", ", ".join(f"{k} {mm(v)}" for k, v in sorted(clear.items(), key=lambda kv: kv[1])
                                                  if isinstance(v, (int, float)))))
        for r in t.get("risk_factors", []) or []:
            nrows.append(("Risk factor", clip(r, 300)))
        if t.get("text"):
            nrows.insert(0, ("In words", clip(t["text"], 600)))
        blocks.append(KeyValues("The new trajectory (room terms)", nrows))
    considered = [str(c) for c in cor.get("considered", []) or []]
    if considered:
        blocks.append(Bullets("Simpler corrections considered, and why they were not taken", considered))
    return blocks


def deviation_table(doc: dict[str, Any]) -> Table:
    dev = doc["deviation"]
    hit = bool(dev["target_hit"])
    rows = [
        ["Angle between the needle and the planned axis", deg(dev["angle_deg"])],
        ["Tip off the planned line (lateral offset)", mm(dev["lateral_offset_mm"])],
    ]
    if dev.get("depth_reached_mm") is not None:
        rows.append(["Depth reached along the plan", mm(dev["depth_reached_mm"])])
    if dev.get("remaining_mm") is not None:
        rows.append(["Remaining to the target's depth (negative: past it)", mm(dev["remaining_mm"])])
    if dev.get("predicted_tip_lps") is not None:
        rows.append(["Tip if advanced to the target's depth (LPS, mm)", point(dev["predicted_tip_lps"])])
    rows.append(["Predicted miss at the target", mm(dev["predicted_miss_mm"])])
    tol = dev.get("hit_tolerance_mm")
    by = str(dev.get("hit_by", "sphere"))
    if tol is None:
        rule = ""
    elif by == "sphere":
        rule = f" (a hit: the predicted tip within {mm(tol)} of the target's centre)"
    else:
        rule = f" (a hit: the predicted tip at least {mm(tol)} inside {clip(by, 80)})"
    rows.append(["Target", ("HIT" if hit else "MISSED") + rule])
    alerts = [] if hit else [(len(rows) - 1, 1), (len(rows) - 2, 1)]
    return Table("Deviation from the plan", ["Figure", "Value"], rows, alerts=alerts)


def clearance_table(doc: dict[str, Any]) -> Table:
    rows, alerts = [], []
    items = sorted(doc.get("clearance_mm", {}).items(), key=lambda kv: min(kv[1].get("now", 1e9),
                                                                             kv[1].get("extended", 1e9)))
    for n, (name, c) in enumerate(items):
        ok = bool(c.get("ok", True))
        rows.append([name, mm(c.get("now")), mm(c.get("extended")), mm(c.get("needed")), "OK" if ok else "BELOW"])
        if not ok:
            need = float(c.get("needed", 0))
            alerts.append((n, 4))
            alerts += [(n, col) for col, key in ((1, "now"), (2, "extended")) if float(c.get(key, 1e9)) < need]
    return Table("Clearance of the actual needle from the structures at risk",
                 ["Structure", "Now", "If advanced", "Needed (margin + needle radius)", "Status"],
                 rows or [["none within 30 mm", "-", "-", "-", "OK"]], alerts=alerts,
                 note="Now: the needle from its skin puncture to its tip. If advanced: its extension along the "
                      "current axis to the target's depth. Distances beyond 30 mm print as 30 mm.")


def check_facts(doc: dict[str, Any], plan_doc: dict[str, Any] | None, number: int | None,
                anonymize: bool = False) -> ReportFacts:
    """Every block of the check page, as formatted strings."""
    plan_doc = plan_doc or {}
    proc = plan_doc.get("procedure_title") or doc.get("plan", {}).get("procedure", "")
    label = f"{number:02d}" if number is not None else "?"
    when = check_time(doc)
    title = f"Needle check {label}: {proc}" if proc else f"Needle check {label}"
    pat = {} if anonymize else plan_doc.get("patient", {})
    who = " · ".join(clip(x, 48) for x in (pat.get("name"), pat.get("id")) if x)
    subtitle = f"check {label} at {when} · " + (who or ("de-identified" if anonymize else "patient not identified"))
    facts = ReportFacts(title, subtitle, "ok", signature_lines=CHECK_SIGNATURE)
    b = facts.blocks
    b += correction_blocks(doc)
    b.append(deviation_table(doc))
    b.append(clearance_table(doc))
    warn = []
    below = [k for k, c in doc.get("clearance_mm", {}).items() if not c.get("ok", True)]
    if below:
        warn.append("The actual needle, or its extension to the target's depth, is closer than the preset allows "
                    f"to: {', '.join(sorted(below))}.")
    if not doc.get("deviation", {}).get("target_hit", True):
        warn.append("Advanced along its current axis, the needle misses the target.")
    warn += [str(x) for x in doc.get("warnings", [])]
    warn.append(CHECK_DISCLAIMER)
    b.append(Bullets(WARNINGS_TITLE, warn, "warning"))  # the images go before it (images_position)
    p = doc.get("plan", {})
    img = doc.get("check_image", {})
    rows = [("Check", f"{label}, at {when}")]
    if anonymize:
        rows.append(("Patient identifiers", "omitted (de-identified page)"))
    else:
        rows += [("Check scan", clip(img.get("source") or "-")),
                 ("Check scan series UID", clip(img.get("series_instance_uid") or "-"))]
    rows.append(("Check scan content hash (sha256)", (img.get("sha256") or "-")[:16] + "..."))
    rows += [(f"Scan identity {n + 1}", clip(x, 300)) for n, x in enumerate(doc.get("identity", []))]
    rows += [("Planned trajectory", f"#{p.get('trajectory_rank', 1)}"),
             ("Planned entry (LPS, mm)", point(p.get("entry"))), ("Target (LPS, mm)", point(p.get("target")))]
    try:
        import numpy as np

        rows.append(("Planned depth skin to target", mm(float(np.linalg.norm(np.subtract(p["target"], p["entry"]))))))
    except (KeyError, TypeError, ValueError):
        pass
    tgt = plan_doc.get("target", {})
    if tgt.get("diameter_mm") is not None:
        rows.append(("Target size (equivalent diameter)", mm(tgt["diameter_mm"])))
    b.append(KeyValues("Check and plan", rows))
    n = doc.get("needle", {})
    found = doc.get("needles_found", [])
    nrows = [("Tip (LPS, mm)", point(n.get("tip_lps"))),
             ("Direction, hub to tip (LPS)", "(" + ", ".join(f"{float(x):.3f}" for x in n.get("direction_lps", [])) + ")")]
    if n.get("entry_lps") is not None:
        nrows.append(("Skin puncture (LPS, mm)", point(n["entry_lps"])))
    if n.get("hub_end_lps") is not None:
        nrows.append(("Far end seen in the scan (LPS, mm)", point(n["hub_end_lps"])))
    if n.get("length_mm") is not None:
        nrows.append(("Length seen in the scan", mm(n["length_mm"])))
    if n.get("diameter_mm") is not None:
        nrows.append(("Diameter measured", mm(n["diameter_mm"])))
    nrows += [(f"Caution {k + 1}", clip(str(x), 600)) for k, x in enumerate(n.get("notes", []))]
    nrows.append(("Needles found in the check scan", f"{len(found)}" + (" (the one nearest the plan is compared)"
                                                                       if len(found) > 1 else "")))
    b.append(KeyValues("The needle found", nrows))
    reg = doc.get("registration", {})
    rrows = [("Quality", clip(reg.get("summary") or "-", 300))]
    rrows += [(f"Note {n + 1}", clip(x, 600)) for n, x in enumerate(reg.get("notes", []))]
    b.append(KeyValues("Registration of the check scan to the planning CT", rrows,
                       note="Every position on this page is in the planning CT's DICOM patient coordinates "
                            "(LPS, mm): the check scan is mapped into them by this registration."))
    if not anonymize and plan_doc:
        b.append(KeyValues("Patient and study", patient_rows(plan_doc)))
    from .. import __version__

    facts.footer = (f"planner {clip(__version__, 20)} · check {label} made {when} · positions in the planning CT's "
                    "DICOM patient coordinates (LPS, mm)")
    return facts


# --- the procedure log ------------------------------------------------------------------------
def _checks_of(plan_dir: Path, pending: tuple[int, dict[str, Any]] | None) -> list[tuple[int, dict[str, Any]]]:
    out: dict[int, dict[str, Any]] = {}
    checks = plan_dir / "checks"
    if checks.is_dir():
        for d in checks.iterdir():
            if d.is_dir() and d.name.isdigit() and (d / "check.json").is_file():
                try:
                    out[int(d.name)] = json.loads((d / "check.json").read_text("utf-8"))
                except (OSError, ValueError):
                    continue  # an unreadable check is left out of the log page, not fatal to it
    if pending is not None:
        out[int(pending[0])] = pending[1]
    return sorted(out.items())


def render_check_index(plan_dir: str | os.PathLike[str],
                       pending: tuple[int, dict[str, Any]] | None = None) -> str:
    """The procedure log as one HTML page: every check of the plan folder, oldest first."""
    from ..report.html import _CSS

    d = Path(plan_dir)
    try:
        plan_doc = json.loads((d / "plan.json").read_text("utf-8"))
    except (OSError, ValueError):
        plan_doc = {}
    proc = plan_doc.get("procedure_title") or plan_doc.get("procedure", "")
    checks = _checks_of(d, pending)
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
           f"<title>Procedure log: {escape(str(proc))}</title>", f"<style>{_CSS}</style></head><body>",
           f"<h1>Procedure log: {escape(str(proc))}</h1>",
           f'<p class="sub">{len(checks)} check scan{"" if len(checks) == 1 else "s"} of this plan; the latest last. '
           'Each line links to its check page. (No patient identifiers on this page: see each check page and the '
           'plan\'s report.)</p>']
    if checks:
        first = checks[-1][1].get("plan", {})
        out.append(f'<p>Planned trajectory #{escape(str(first.get("trajectory_rank", 1)))}: entry '
                   f'{escape(point(first.get("entry")))}, target {escape(point(first.get("target")))} (LPS, mm).</p>')
    out.append("<table><tr><th>#</th><th>Time</th><th>Angle</th><th>Tip off the line</th><th>Predicted miss</th>"
               "<th>Target</th><th>Correction</th><th>Page</th></tr>")
    for number, doc in checks:
        dev = doc.get("deviation", {})
        hit = dev.get("target_hit")
        verdict = "HIT" if hit else "MISSED"
        cor = doc.get("correction", {})
        link = f"{number:02d}/check.html"
        verdict_cell = f"<td>{verdict}</td>" if hit else f'<td class="alert">{verdict}</td>'
        out.append(
            f"<tr><td>{number:02d}</td><td>{escape(check_time(doc))}</td><td>{escape(deg(dev.get('angle_deg')))}</td>"
            f"<td>{escape(mm(dev.get('lateral_offset_mm')))}</td><td>{escape(mm(dev.get('predicted_miss_mm')))}</td>"
            f"{verdict_cell}"
            f"<td><strong>{escape(ACTION_WORDS.get(str(cor.get('action')), str(cor.get('action', '')).upper()))}"
            f"</strong>: {escape(clip(cor.get('text', ''), 2000))}</td>"
            f'<td><a href="{escape(link)}">check {number:02d}</a></td></tr>')
    out.append("</table>")
    out.append("<footer>positions in the planning CT's DICOM patient coordinates (LPS, mm)</footer></body></html>")
    return "\n".join(out) + "\n"
