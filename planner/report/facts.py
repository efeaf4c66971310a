"""What a report says, as text: one function turns ``plan.json`` into ordered blocks of strings.

The PDF and the HTML render the very same blocks, so every number they print is formatted
once, here, from the values in ``plan.json`` (tests compare the two against the file). No
number is invented: risk factors carry the published odds ratios that the planner attached,
never a probability.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence, Union

POSITIONS = {
    "supine": "supine (lying on the back)",
    "prone": "prone (lying on the front)",
    "decubitus_left": "left lateral decubitus (lying on the left side, right side up)",
    "decubitus_right": "right lateral decubitus (lying on the right side, left side up)",
}

SIGNATURE_LINES = ("Plan reviewed and approved by (name):", "Date and time:", "Signature:")
DISCLAIMER = ("A computed proposal, not a prescription: verify every position, angle and clearance on the "
              "procedure-room scan before inserting the needle.")


# --- number formats: the one place they are defined -------------------------------------------
def mm(x: float | None) -> str:
    """A length: ``77.6 mm``."""
    return "-" if x is None else f"{float(x):.1f} mm"


def deg(x: float | None, signed: bool = False) -> str:
    """An angle: ``78.9°`` (``+14.9°`` when signed)."""
    if x is None:
        return "-"
    return f"{float(x):+.1f}°" if signed else f"{float(x):.1f}°"


def point(p: Sequence[float] | None) -> str:
    """An LPS point: ``(-159.2, -28.0, 58.8)``."""
    if p is None:
        return "-"
    return "(" + ", ".join(f"{float(v):.1f}" for v in p) + ")"


def side_lr(x: float) -> str:
    """Signed LPS x offset in words: ``25.0 mm to the patient's right``."""
    return f"{abs(x):.1f} mm to the patient's {'left' if x > 0 else 'right'}" if x else "0.0 mm (on it)"


def side_ap(y: float) -> str:
    return f"{abs(y):.1f} mm {'posterior' if y > 0 else 'anterior'}" if y else "0.0 mm (on it)"


def needle_text(n: dict[str, Any]) -> str:
    """``17G, 100 mm (17G introducer with 18G core needle)``."""
    s = f"{n.get('gauge', '?')}, {float(n.get('length_mm', 0)):.0f} mm"
    return s + (f" ({n['coaxial']})" if n.get("coaxial") else "")


#: Text from the scan's header (names, IDs, descriptions) is cut to this many characters in the
#: report: files in the wild hold values far beyond their DICOM limit, and a table cell taller
#: than a page cannot be laid out.
HEADER_TEXT_MAX = 120
#: Any other text of a cell (notes, explanations) is cut to this many.
CELL_TEXT_MAX = 2000


def clip(text: Any, limit: int = HEADER_TEXT_MAX) -> str:
    """``text`` on one line, cut to ``limit`` characters, saying so when it is."""
    s = " ".join(str(text).split())
    if len(s) <= limit:
        return s
    return f"{s[:limit - 1]}… (cut: {len(s)} characters)"


# --- blocks ----------------------------------------------------------------------------------
@dataclass
class KeyValues:
    title: str
    rows: list[tuple[str, str]]
    note: str = ""


@dataclass
class Table:
    title: str
    header: list[str]
    rows: list[list[str]]
    note: str = ""
    alerts: list[tuple[int, int]] = field(default_factory=list)  # (row, column) cells printed as alerts (red, bold)


@dataclass
class Bullets:
    title: str
    items: list[str]
    kind: str = "plain"  # "plain" | "warning" | "action" (what the operator must do: large, bold, boxed)


Block = Union[KeyValues, Table, Bullets]


@dataclass
class ReportFacts:
    title: str
    subtitle: str
    status: str
    blocks: list[Block] = field(default_factory=list)
    signature_lines: tuple[str, ...] = SIGNATURE_LINES
    footer: str = ""


def _patient_rows(doc: dict[str, Any]) -> list[tuple[str, str]]:
    pat, study, im = doc.get("patient", {}), doc.get("study", {}), doc.get("image", {})
    rows = [
        ("Patient name", clip(pat.get("name") or "-")),
        ("Patient ID", clip(pat.get("id") or "-")),
        ("Birth date / sex", f"{clip(pat.get('birth_date') or '-', 40)} / {clip(pat.get('sex') or '-', 20)}"),
        ("Study date", clip(study.get("date") or "-", 40)),
        ("Accession number", clip(study.get("accession_number") or "-")),
        ("Study description", clip(study.get("description") or "-")),
        ("Study instance UID", clip(im.get("study_instance_uid") or "-")),
        ("Series instance UID", clip(im.get("series_instance_uid") or "-")),
        ("Series description / date", f"{clip(study.get('series_description') or '-')} / "
                                      f"{clip(study.get('acquisition_date') or '-', 40)}"),
        ("Scan content hash (sha256)", (im.get("sha256") or "-")[:16] + "..."),
    ]
    if doc.get("anonymized"):
        rows.insert(0, ("De-identified", "yes: names, IDs, birth date and UIDs removed or replaced"))
    return rows


def patient_rows(doc: dict[str, Any]) -> list[tuple[str, str]]:
    """The patient and study rows of a report, from a ``plan.json`` document."""
    return _patient_rows(doc)


def _procedure_rows(doc: dict[str, Any]) -> list[tuple[str, str]]:
    from ..planning.presets import describe_preset

    hc = doc.get("hard_constraints", {})
    rows = [
        ("Procedure (preset)", f"{doc.get('procedure_title') or doc.get('procedure')} [{doc.get('procedure')}]"),
        ("Preset", describe_preset(doc["preset"]) if isinstance(doc.get("preset"), dict) else "-"),
        ("Structures from", str(doc.get("structures_source", "-"))),
        ("Allowed patient positions", ", ".join(hc.get("positions", [])) or "-"),
        ("Maximum depth", mm(hc.get("max_depth_mm"))),
        ("Maximum angle to the skin normal", deg(hc.get("max_angle_from_skin_normal_deg"))),
        ("Maximum craniocaudal angle", deg(hc.get("max_craniocaudal_deg"))),
    ]
    if hc.get("fixed_position"):
        rows[3] = ("Patient position (fixed by the preset)", POSITIONS.get(hc["fixed_position"], hc["fixed_position"]))
    a = hc.get("approach")
    if a:
        rows.append(("Approach", f"{a.get('title', a.get('id'))} [{a.get('id')}], within "
                                 f"{deg(a.get('max_angle_deg'))} of {'-'.join(a.get('directions', []))}"))
    return rows


def probe_rows(t: dict[str, Any]) -> list[tuple[str, str]]:
    """Where the ultrasound probe goes for an in-plane needle (ultrasound-guided presets)."""
    p = t["ultrasound_probe"]
    return [
        ("Probe centre on the skin (LPS, mm)", point(p["centre"])),
        ("Probe long axis, marker towards the entry", point(p["long_axis_towards_entry"])),
        ("Imaging plane normal", point(p["plane_normal"])),
        ("Target depth under the probe", mm(p["target_depth_mm"])),
        ("Target along the probe from its centre", mm(p["target_offset_mm"])),
        ("Needle entry from the probe centre", mm(p["entry_from_probe_centre_mm"])),
        ("Needle angle to the skin (in plane)", deg(p["needle_angle_to_skin_deg"])),
    ]


def further_targets_table(doc: dict[str, Any]) -> Table:
    """The other targets of a multi-target plan, each with its best trajectory."""
    rows = []
    for block in doc.get("targets", [])[1:]:
        tg = block.get("target", {})
        best = (block.get("trajectories") or [None])[0]
        if best is None:
            rows.append([tg.get("label", "-"), point(tg.get("point")), "NO SAFE TRAJECTORY", "-", "-", "-"])
        else:
            rows.append([tg.get("label", "-"), point(tg.get("point")), point(best["entry"]), mm(best["length_mm"]),
                         deg(best.get("angle_from_vertical_deg")), best.get("limiting") or "-"])
    return Table("Further targets of this plan (best trajectory of each)",
                 ["Target", "Point (LPS, mm)", "Entry (LPS, mm)", "Depth", "From vertical", "Nearest structure"], rows)


def _target_rows(doc: dict[str, Any]) -> list[tuple[str, str]]:
    t = doc.get("target", {})
    rows = [
        ("Target", f"{t.get('label', '-')} ({t.get('how', '-')})"),
        ("Target point (LPS, mm)", point(t.get("point"))),
        ("Target slice (table position z)", mm(t["point"][2]) if t.get("point") else "-"),
    ]
    if t.get("diameter_mm") is not None:
        rows.append(("Size: equivalent diameter / largest extent",
                     f"{mm(t['diameter_mm'])} / {mm(t.get('max_diameter_mm'))}"))
    if t.get("volume_ml") is not None:
        rows.append(("Volume", f"{float(t['volume_ml']):.1f} ml"))
    return rows


def pet_rows(doc: dict[str, Any]) -> list[tuple[str, str]]:
    """A plan made with a PET: the SUV figures of the target's lesion and of the chosen core."""
    pet = doc.get("pet") or {}
    rows = [("SUV", clip(pet.get("suv_factors", "-"), 300))]
    blocks = pet.get("targets") or []
    if not blocks:
        return rows
    b = blocks[0]
    s = b.get("lesion")
    if s:
        rows += [("Lesion SUVmax", f"{float(s['suv_max']):.2f} at LPS {point(s.get('suv_max_point'))} mm"),
                 ("Lesion SUVpeak (1 ml sphere, PERCIST)", f"{float(s['suv_peak']):.2f} at LPS "
                                                           f"{point(s.get('suv_peak_centre'))} mm"),
                 ("Lesion SUVmean / volume", f"{float(s['suv_mean']):.2f} / {float(s['volume_ml']):.1f} ml")]
    if b.get("note"):
        rows.append(("Check", clip(b["note"], 300)))
    if b.get("lesion_error"):
        rows.append(("Lesion SUV", clip(b["lesion_error"], 300)))
    a = b.get("avid_choice") or {}
    if b.get("avid_target") and a:
        rows.append(("Target aimed at the avid part", "the SUVpeak centre" if a.get("is_suv_peak_centre") else
                     f"the hottest 1 ml sphere (SUV {float(a['sphere_suv']):.2f}) at least "
                     f"{float(a['min_depth_mm']):.1f} mm inside the lesion, so the core stays in it"))
    trajs = b.get("trajectories") or []
    if trajs and "suv_mean" in trajs[0].get("core", {}):
        c = trajs[0]["core"]
        share = f" ({100 * float(c['share_of_lesion_suv_max']):.0f} % of SUVmax)" \
            if "share_of_lesion_suv_max" in c else ""
        inside = f"; {100 * float(c['in_lesion']):.0f} % of it in the lesion" if "in_lesion" in c else ""
        rows.append((f"SUV along the biopsy core of #1 ({mm(pet.get('core_length_mm'))}, centred on the target)",
                     f"mean {float(c['suv_mean']):.2f}{share}, min {float(c['suv_min']):.2f}, "
                     f"max {float(c['suv_max']):.2f}{inside}"))
    rows.append(("Trajectories ranked by", clip(pet.get("ranking", "-"), 300)))
    rows.append(("PET series", clip(pet.get("source", "-"), 200)))
    return rows


def trajectory_rows(t: dict[str, Any]) -> list[tuple[str, str]]:
    """The chosen trajectory in the room's terms."""
    room = t.get("room", {})
    pos = str(t.get("patient_position", ""))
    rows = [
        ("Patient position", POSITIONS.get(pos, pos or "-")),
        ("Entry slice: table position z", mm(room.get("entry_table_z_mm", t["entry"][2])) +
         (f" (slice index {room['entry_slice_index']})" if "entry_slice_index" in room else "")),
        ("Target slice: table position z", mm(room.get("target_table_z_mm", t["target"][2])) +
         (f" (slice index {room['target_slice_index']})" if "target_slice_index" in room else "")),
    ]
    if pos.startswith("decubitus") and "entry_from_midaxillary_mm" in room:
        rows.append(("Entry from the mid-axillary line", side_ap(room["entry_from_midaxillary_mm"])))
        rows.append(("Entry from the midline", side_lr(room["entry_from_midline_mm"])))
    elif "entry_from_midline_mm" in room:
        rows.append(("Entry from the midline", side_lr(room["entry_from_midline_mm"])))
        rows.append(("Entry from the mid-axillary line", side_ap(room["entry_from_midaxillary_mm"])))
    rows += [
        ("Entry point (LPS, mm)", point(t["entry"])),
        ("Angle from vertical (AP axis)", deg(t.get("angle_from_vertical_deg"))),
    ]
    if pos.startswith("decubitus") and "angle_from_room_vertical_deg" in room:
        rows.append(("Angle from the room vertical (decubitus)", deg(room["angle_from_room_vertical_deg"])))
    rows += [
        ("Craniocaudal angle (+ cranial)", deg(t.get("craniocaudal_deg"), signed=True)),
        ("Needle tip heads", room.get("needle_toward", "-")),
        ("Depth skin to target", mm(t.get("length_mm"))),
        ("Needle", needle_text(t.get("needle", {}))),
    ]
    if "needle_outside_skin_mm" in room:
        rows.append(("Needle left outside the skin", mm(room["needle_outside_skin_mm"])))
    rows += [
        ("Angle to the skin normal", deg(t.get("angle_from_skin_normal_deg"))),
        ("Limiting structure", t.get("limiting") or "-"),
    ]
    return rows


def _required_clearance(name: str, doc: dict[str, Any]) -> float | None:
    """The hard clearance (margin + needle radius) the plan kept from a structure, if any rule applies."""
    from ..anatomy.registry import class_of

    hard = doc.get("hard_constraints", {}).get("clearance_mm (margin + needle radius)", {})
    if f"clearance:{name}" in hard:
        return float(hard[f"clearance:{name}"])
    key = f"clearance:{class_of(name).value}"
    return float(hard[key]) if key in hard else None


def clearance_table(t: dict[str, Any], doc: dict[str, Any]) -> Table:
    rows = []
    for name, d in sorted(t.get("clearance_mm", {}).items(), key=lambda kv: kv[1]):
        req = _required_clearance(name, doc)
        rows.append([name, mm(d), mm(req) if req is not None else "not avoided"])
    return Table("Clearances of the chosen trajectory (structures within 30 mm)",
                 ["Structure", "Clearance", "Required (margin + needle radius)"],
                 rows or [["none within 30 mm", "-", "-"]],
                 note=doc.get("clearance_definition", ""))


def _lung_metrics(t: dict[str, Any]) -> list[str]:
    m = t.get("metrics", {})
    if "lung_mm" not in m:
        return []
    listed = any(str(r).startswith("aerated lung crossed") for r in t.get("risk_factors", []))
    return [f"aerated lung along the path: {mm(m.get('lung_mm'))}"] * (not listed) + [
        f"pleural surfaces crossed: {int(m.get('pleura_crossings', 0))}",
        _fissure_line(m),
        f"emphysema (below -950 HU) along the path: {mm(m.get('emphysema_mm'))}",
        f"dense tissue in no segmented structure on the lung stretch: {mm(m.get('unidentified_tissue_mm'))}",
        f"needle angle off perpendicular to the pleura: {deg(m.get('pleura_angle_deg'))}",
    ]


def _fissure_line(m: dict[str, Any]) -> str:
    """The fissure count, never a bare 0 where part of the path runs in lung whose fissures are unknown."""
    n = int(m.get("fissures", 0))
    unknown = float(m.get("lung_mm_fissures_unknown", 0) or 0)
    if unknown <= 0:
        return f"fissures crossed: {n}"
    return (f"fissures crossed: NOT KNOWN along {mm(unknown)} of lung whose fissures were not found"
            + (f" ({n} counted elsewhere)" if n else ""))


def alternatives_table(doc: dict[str, Any]) -> Table:
    rows = []
    for t in doc.get("trajectories", []):
        clear = t.get("clearance_mm", {})
        nearest = min(clear.items(), key=lambda kv: kv[1]) if clear else None
        rows.append([
            str(t["rank"]), point(t["entry"]), mm(t["length_mm"]), deg(t.get("angle_from_vertical_deg")),
            deg(t.get("craniocaudal_deg"), signed=True), str(t.get("patient_position", "-")),
            str(t.get("needle", {}).get("gauge", "-")),
            f"{nearest[0]} {mm(nearest[1])}" if nearest else "-",
            f"{float(t.get('score', 0)):.2f}" + (" *" if t.get("pareto_optimal") else ""),
        ])
    return Table("All trajectories, ranked (1 is the chosen one)",
                 ["#", "Entry (LPS, mm)", "Depth", "From vertical", "Craniocaudal", "Position", "Gauge",
                  "Nearest structure", "Score"],
                 rows, note="Score: lower is better (weights of the preset); * Pareto-optimal on depth, lung "
                            "crossed, fissures and clearance.")


def warnings_of(doc: dict[str, Any]) -> list[str]:
    out = []
    if doc.get("status") != "ok":
        out.append("NO SAFE TRAJECTORY: every candidate breaks a hard constraint.")
        out += [str(e) for e in doc.get("explanation", [])]
    out += [f"Check: {w}" for w in doc.get("warnings", [])]
    for note in doc.get("structures_notes", []):
        out.append(f"Structures: {note}")
    for c in doc.get("image", {}).get("corrections", []):
        out.append(f"Scan: {c}")
    if doc.get("structures_source") == "automatic segmentation":
        out.append("Structures come from the automatic segmentation: check the avoided structures on the scan.")
    out += [str(w) for w in doc.get("report_warnings", [])]
    out.append(DISCLAIMER)
    return out


def report_facts(doc: dict[str, Any]) -> ReportFacts:
    """Every block of the report, as formatted strings, from a ``plan.json`` document."""
    trajs = doc.get("trajectories", [])
    status = "ok" if doc.get("status") == "ok" and trajs else "no_safe_path"
    title = f"Needle plan: {doc.get('procedure_title') or doc.get('procedure', '')}"
    pat = doc.get("patient", {})
    subtitle = " · ".join(clip(x, 48) for x in (pat.get("name"), pat.get("id"), doc.get("study", {}).get("date")) if x)
    facts = ReportFacts(title, subtitle or "patient not identified", status)
    b = facts.blocks
    b.append(KeyValues("Patient and study", _patient_rows(doc)))
    b.append(KeyValues("Procedure", _procedure_rows(doc)))
    b.append(KeyValues("Target", _target_rows(doc)))
    if doc.get("pet"):
        b.append(KeyValues("PET: FDG uptake (SUV) of the target and of the planned core", pet_rows(doc)))
    if status == "ok":
        best = trajs[0]
        b.append(KeyValues("Chosen trajectory (#1) in room terms", trajectory_rows(best),
                           note=f"Definitions: {doc['room_definition']}." if doc.get("room_definition") else ""))
        if best.get("ultrasound_probe"):
            b.append(KeyValues("Ultrasound probe (in-plane needle)", probe_rows(best)))
        b.append(clearance_table(best, doc))
        risks = list(best.get("risk_factors", []))
        lung = _lung_metrics(best) if doc.get("procedure") == "lung-biopsy" else []
        if risks or lung:
            b.append(Bullets("Risk factors of the chosen trajectory (published odds ratios; no probability is "
                             "computed)", risks + lung))
        b.append(alternatives_table(doc))
    else:
        b.append(Bullets("Why no trajectory is safe", [str(e) for e in doc.get("explanation", [])], "warning"))
        rej = doc.get("rejected", {})
        b.append(Table("Candidates ruled out by each hard constraint", ["Constraint", "Candidates"],
                       [[k, str(v)] for k, v in rej.items()] or [["-", "0"]]))
    if len(doc.get("targets", [])) > 1:
        b.append(further_targets_table(doc))
    b.append(Bullets("Warnings", warnings_of(doc), "warning"))
    prov = doc.get("provenance", {})
    facts.footer = (f"planner {clip(prov.get('planner_version', '?'), 20)} · plan created "
                    f"{clip(prov.get('created', '?'), 40)} · positions in DICOM patient coordinates (LPS, mm)")
    for block in b:  # nothing taller than a page
        if isinstance(block, KeyValues):
            block.rows = [(clip(k, CELL_TEXT_MAX), clip(v, CELL_TEXT_MAX)) for k, v in block.rows]
        elif isinstance(block, Table):
            block.rows = [[clip(c, CELL_TEXT_MAX) for c in r] for r in block.rows]
        else:
            block.items = [clip(i, CELL_TEXT_MAX) for i in block.items]
    return facts
