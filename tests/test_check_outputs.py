"""What `planner check` writes beside check.json, and what the viewer shows of it.

One plan of the demo thorax; three check scans through the command: 01 plain, 02 with --dicom,
03 with --dicom --anonymize. The scans come from the needle simulator (a steel needle with its
partial volume, streaks and noise, the patient moved, the scan cut to a slab), as in
tests/test_check_command.py. Every assertion is about what the operator reads or sees: the
figures and the correction on the page are the ones of check.json, the needle is drawn where the
metal is, the bull's-eye shows the miss at its scale, the DICOM objects file into the planning
CT's study, a de-identified check carries no identifier, and the viewer draws the actual needle.
"""

from __future__ import annotations

import html as H
import json
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
from conftest import require_tool
from PIL import Image as PILImage

import planner
from planner.checks import figures as F
from planner.cli.main import main
from planner.demo import demo_cases
from planner.testing.dicom_write import write_image_as_dicom
from planner.testing.needle_sim import simulate_check


def _norm(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def _scan(folder: Path, ct, entry, target, deviate_deg: float, depth_share: float, seed: int):
    """A check scan with a needle entered at the planned entry, turned ``deviate_deg`` toward the
    head, its tip at ``depth_share`` of the planned depth (as tests/test_check_command.py)."""
    rng = np.random.default_rng(seed)
    w = (target - entry) / np.linalg.norm(target - entry)
    axis = np.cross(w, [0.0, 0.0, 1.0])
    axis /= np.linalg.norm(axis)
    a = np.radians(deviate_deg)
    u = w * np.cos(a) + np.cross(axis, w) * np.sin(a)
    tip = entry + depth_share * np.linalg.norm(target - entry) * u
    check, truth = simulate_check(ct, entry - 40.0 * u, tip, rng, move_mm=3.0, move_deg=2.0, slab_mm=30.0)
    m = ct.meta
    meta = check.meta.replace(patient_name=m.patient_name, patient_id=m.patient_id,
                              study_instance_uid=m.study_instance_uid)
    write_image_as_dicom(check, folder, meta=meta, uid_seed=f"check-out-{seed}")
    return truth


@pytest.fixture(scope="module")
def checked(tmp_path_factory):
    """The plan folder after three checks: 01 plain, 02 --dicom, 03 --dicom --anonymize."""
    case = next(c for c in demo_cases() if c.id == "thorax")
    plan = planner.plan(case.ct, procedure="lung-biopsy", target_label="lung_nodule", n=1,
                        structures=case.folder / case.info["structures"])
    root = tmp_path_factory.mktemp("check-outputs")
    out = root / "plan"
    plan.write(out)
    ct = plan.session.image
    t = plan.trajectories[0]
    entry, target = np.asarray(t.entry), np.asarray(t.target)
    truth = _scan(root / "scan_a", ct, entry, target, deviate_deg=6.0, depth_share=0.6, seed=3)
    _scan(root / "scan_b", ct, entry, target, deviate_deg=2.0, depth_share=0.8, seed=5)
    assert main(["check", str(out), "--ct", str(root / "scan_a")]) == 0
    assert main(["check", str(out), "--ct", str(root / "scan_b"), "--dicom"]) == 0
    assert main(["check", str(out), "--ct", str(root / "scan_a"), "--dicom", "--anonymize"]) == 0
    return out, ct, truth


def _doc(out: Path, n: int) -> dict:
    return json.loads((out / "checks" / f"{n:02d}" / "check.json").read_text())


def _pdf_text(pdf: Path) -> str:
    exe = require_tool("pdftotext", "poppler-utils")
    run = subprocess.run([exe, "-enc", "UTF-8", str(pdf), "-"], capture_output=True, check=True, timeout=60)
    return _norm(run.stdout.decode("utf-8"))


def _html_text(page: Path) -> str:
    return _norm(H.unescape(re.sub(r"<[^>]+>", " ", page.read_text("utf-8"))))


def _expected_strings(doc: dict) -> list[str]:
    """What the page must print, formatted here from check.json (at 0.1 mm / 0.1 degree)."""
    dev, cor = doc["deviation"], doc["correction"]
    out = [f"{dev['angle_deg']:.1f}°", f"{dev['lateral_offset_mm']:.1f} mm", f"{dev['predicted_miss_mm']:.1f} mm",
           f"{dev['remaining_mm']:.1f} mm", "HIT" if dev["target_hit"] else "MISSED",
           "(" + ", ".join(f"{x:.1f}" for x in doc["needle"]["tip_lps"]) + ")",
           _norm(cor["text"]), doc["registration"]["summary"]]
    for name, c in doc["clearance_mm"].items():
        out.append(f"{name} {c['now']:.1f} mm {c['extended']:.1f} mm {c['needed']:.1f} mm "
                   + ("OK" if c["ok"] else "BELOW"))
    return out


# --- the files and the page ---------------------------------------------------------------------
def test_a_check_writes_its_images_and_its_page(checked):
    out, ct, _ = checked
    folder = out / "checks" / "01"
    for name in ("check.json", "needles_plane.png", "bullseye.png", "check.pdf", "check.html"):
        assert (folder / name).is_file(), name
    assert not (folder / "dicom").exists(), "DICOM objects only with --dicom"
    assert not list((out / "checks").rglob(".*.tmp*")), "a temporary file was left behind"
    for name in ("needles_plane.png", "bullseye.png"):
        im = PILImage.open(folder / name)
        assert im.width == F.SIZE and im.height > F.SIZE  # the CT square and its caption strip
        a = np.asarray(im.convert("L"))[: F.SIZE]
        assert a.std() > 20, f"{name} is blank"


def test_the_page_prints_check_json(checked):
    """Every deviation figure, every clearance and the correction's words, as check.json says
    them, in the PDF (read by poppler) and in the HTML; the patient's name and ID head it."""
    out, ct, _ = checked
    doc = _doc(out, 1)
    pdf = _pdf_text(out / "checks" / "01" / "check.pdf")
    page = _html_text(out / "checks" / "01" / "check.html")
    for s in _expected_strings(doc):
        assert s in pdf, s
        assert s in page, s
    assert f"Needles found in the check scan {len(doc['needles_found'])}" in pdf
    assert "Needle check 01" in pdf and ct.meta.patient_id in pdf
    assert "Demo Thorax" in pdf and "Patient and study" in pdf
    # the correction is what the operator acts on: first, in the box above everything else
    assert pdf.index(_norm(doc["correction"]["text"])) < pdf.index("Deviation from the plan")
    html = (out / "checks" / "01" / "check.html").read_text()
    assert html.count('src="data:image/png;base64,') == 2 and '<div class="action">' in html


def test_pdf_pages_render(checked, tmp_path):
    exe = require_tool("pdftoppm", "poppler-utils")
    subprocess.run([exe, "-png", "-r", "40", str(out_pdf(checked, 1)), str(tmp_path / "p")], check=True,
                   capture_output=True, timeout=120)
    pages = sorted(tmp_path.glob("p-*.png"))
    assert 1 <= len(pages) <= 4
    for p in pages:
        im = PILImage.open(p)
        assert abs(im.width / im.height - 595 / 842) < 0.01  # A4 portrait


def out_pdf(checked, n: int) -> Path:
    return checked[0] / "checks" / f"{n:02d}" / "check.pdf"


# --- the images ------------------------------------------------------------------------------------
def test_the_plane_image_shows_the_needle_where_it_is_drawn(checked):
    """Between the two drawn rails of the actual needle the check scan's metal shows: along the
    last 25 mm before the tip the image is saturated (steel, in the lung window) where the tissue
    6 mm beside it is not, and where the needle lies in aerated lung it stands out of the dark
    lung; the rails are drawn there."""
    out, _, truth = checked
    doc = _doc(out, 1)
    png = out / "checks" / "01" / "needles_plane.png"
    plane = F.plane_from_png(png)
    rgb = np.asarray(PILImage.open(png).convert("RGB")).astype(int)
    tip = np.array(doc["needle"]["tip_lps"])
    u = np.array(doc["needle"]["direction_lps"])
    # what this test stands on: the detector found the simulated needle (tests/test_needle.py)
    assert np.linalg.norm(tip - truth.tip_planning) <= 2.0, "check 01 did not find the simulated needle"
    # the plane holds the needle near its tip (within half a millimetre)
    for d in (0.0, 25.0):
        assert abs(float((tip - d * u - plane.origin) @ plane.normal)) < 0.5
    axis = np.array([plane.pixel(tip - d * u) for d in np.arange(2.0, 25.0, 0.5)])
    step = np.array(plane.pixel(tip)) - np.array(plane.pixel(tip - u))
    across = np.array([-step[1], step[0]]) / np.linalg.norm(step)

    def grey(points):
        c, r = np.rint(points).astype(int).T
        return rgb[r, c].mean(axis=1)

    on = grey(axis)
    beside = np.minimum(grey(axis + across * 6.0 / plane.px), grey(axis - across * 6.0 / plane.px))
    assert np.all(on >= 250), "the needle's metal is not bright where its line is drawn"
    assert np.mean(beside <= 245) >= 0.9, "the tissue beside the needle is as bright as the needle"
    assert np.sum(on - beside > 100) >= 3, "the needle does not stand out of the lung around its tip"
    rail = F.ACTUAL
    near = [np.rint(axis + s * across * k) for s in (1, -1) for k in np.arange(2, 16)]
    pts = np.concatenate(near).astype(int)
    hit = np.all(np.abs(rgb[pts[:, 1], pts[:, 0]] - rail) < 30, axis=1)
    assert hit.sum() >= len(axis), "the actual needle's rails are not drawn along it"


def test_the_bullseye_shows_the_miss_at_scale(checked):
    """Down the planned axis the planned line is the centre cross and the predicted tip lies at
    the predicted miss from it (the predicted tip is in the target's plane, across the plan)."""
    out, _, _ = checked
    doc = _doc(out, 1)
    png = out / "checks" / "01" / "bullseye.png"
    plane = F.plane_from_png(png)
    target = np.array(doc["plan"]["target"])
    w = target - np.array(doc["plan"]["entry"])
    w /= np.linalg.norm(w)
    assert abs(abs(float(plane.normal @ w)) - 1.0) < 1e-6, "the view is not down the planned axis"
    rgb = np.asarray(PILImage.open(png).convert("RGB"))[: plane.size].astype(int)

    def centre_of(colour, near):
        m = np.all(np.abs(rgb - colour) < 8, axis=2)
        rr, cc = np.nonzero(m)
        keep = np.hypot(cc - near[0], rr - near[1]) < 20
        assert keep.sum() > 10, f"no mark of colour {colour} near {near}"
        return np.array([cc[keep].mean(), rr[keep].mean()])

    c = centre_of(F.PLANNED, plane.pixel(target))
    q = centre_of(F.ADVANCED, plane.pixel(doc["deviation"]["predicted_tip_lps"]))
    assert np.linalg.norm(c - np.array(plane.pixel(target))) < 2  # the plan is the centre
    assert np.linalg.norm(q - c) * plane.px == pytest.approx(doc["deviation"]["predicted_miss_mm"], abs=1.0)


def test_the_plane_holds_the_needle_whatever_its_deviation():
    """A needle off the planned entry and parallel to the plan, or turned about the entry: the
    plane of the image passes through its tip."""
    e, t = np.array([0.0, 0.0, 0.0]), np.array([80.0, 10.0, -5.0])
    w = (t - e) / np.linalg.norm(t - e)
    base = {"plan": {"entry": list(e), "target": list(t)},
            "deviation": {"predicted_tip_lps": list(t), "hit_tolerance_mm": 2.0}}
    off = np.array([0.0, 3.0, 4.0])
    for tip, u in ((e + 40 * w + off, w),  # parallel, shifted by 5 mm
                   (e + 50 * np.array([0.96, 0.2, 0.2]) / np.linalg.norm([0.96, 0.2, 0.2]),
                    np.array([0.96, 0.2, 0.2]))):
        doc = dict(base, needle={"tip_lps": list(tip), "direction_lps": list(u / np.linalg.norm(u))})
        g = F.CheckGeometry.of(doc, 10.0)
        f, tip_off = F.needles_frame(g)
        assert tip_off < 0.05
        assert abs(float((e - f.focal) @ f.dop)) < 1e-6 and abs(float((t - f.focal) @ f.dop)) < 1e-6


# --- DICOM -----------------------------------------------------------------------------------------
def test_dicom_objects_file_into_the_planning_study(checked):
    import pydicom

    from planner.report.dicom_export import ENCAPSULATED_PDF, SECONDARY_CAPTURE, validate_iod

    out, ct, _ = checked
    folder = out / "checks" / "02"
    files = sorted((folder / "dicom").glob("*.dcm"))
    assert [f.name for f in files] == ["check.dcm", "sc_bullseye.dcm", "sc_needles_plane.dcm"]
    series = set()
    for f in files:
        ds = pydicom.dcmread(f)
        assert validate_iod(ds) == [], f.name
        assert ds.StudyInstanceUID == ct.meta.study_instance_uid
        assert ds.SeriesInstanceUID != ct.meta.series_instance_uid
        assert ds.PatientID == ct.meta.patient_id
        series.add(ds.SeriesInstanceUID)
        if ds.SOPClassUID == ENCAPSULATED_PDF:
            assert bytes(ds.EncapsulatedDocument)[: int(ds.EncapsulatedDocumentLength)] == (folder / "check.pdf").read_bytes()
            assert "02" in ds.SeriesDescription
        else:
            assert ds.SOPClassUID == SECONDARY_CAPTURE
            png = PILImage.open(folder / f"{f.stem[3:]}.png")
            assert ds.pixel_array.shape == (png.height, png.width, 3)
    assert len(series) == 2  # the page's series and the images' series, both new for this check
    exe = require_tool("dciodvfy", "dicom3tools")
    for f in files:
        run = subprocess.run([exe, str(f)], capture_output=True, text=True, check=False)
        errors = [line for line in (run.stdout + run.stderr).splitlines() if line.startswith("Error")]
        assert not errors, (f.name, errors)


def test_an_anonymized_check_carries_no_identifier(checked):
    """No byte of any file of checks/03 holds the patient's name, ID or birth date (the PDF's
    text read out too: its streams are compressed), its DICOM objects are de-identified, and its
    page leaves out the patient and study header."""
    import pydicom

    from planner.report.dicom_export import validate_iod

    out, ct, _ = checked
    m = ct.meta
    secrets = [m.patient_name, m.patient_name.replace("^", " "), m.patient_id, m.patient_birth_date,
               m.accession_number]
    secrets = [s for s in secrets if s]
    assert "DEMO-THORAX" in secrets
    folder = out / "checks" / "03"
    files = [f for f in folder.rglob("*") if f.is_file()]
    assert len(files) >= 8
    texts = {f.name: f.read_bytes() for f in files}
    texts["check.pdf (text)"] = _pdf_text(folder / "check.pdf").encode()
    for name, data in texts.items():
        for s in secrets:
            assert s.encode() not in data, (name, s)
            assert s.encode("utf-16-le") not in data, (name, s)
    pdf = texts["check.pdf (text)"].decode()
    assert "Patient and study" not in pdf and "de-identified" in pdf
    for f in sorted((folder / "dicom").glob("*.dcm")):
        ds = pydicom.dcmread(f)
        assert ds.PatientIdentityRemoved == "YES" and ds.StudyInstanceUID != m.study_instance_uid
        assert validate_iod(ds) == [], f.name
    # check.json and the procedure log say nothing that can lead to the scan (a path can hold a
    # name; the series UID finds the patient in the PACS)
    doc3 = _doc(out, 3)
    assert doc3["check_image"]["source"] == "" and doc3["check_image"]["series_instance_uid"] == ""
    series = _doc(out, 1)["check_image"]["series_instance_uid"]
    assert series and all(series.encode() not in data for data in texts.values())
    log = json.loads((out / "checks" / "log.json").read_text())
    assert [c["check_scan"] for c in log["checks"] if c["number"] == 3] == [""]
    # the same figures as an identified check of the same scan
    assert _doc(out, 3)["deviation"]["predicted_miss_mm"] == pytest.approx(_doc(out, 1)["deviation"]["predicted_miss_mm"],
                                                                           abs=0.5)


# --- the procedure log -------------------------------------------------------------------------------
def test_the_procedure_log_lists_every_check(checked):
    out, _, _ = checked
    page = (out / "checks" / "index.html").read_text()
    text = _norm(H.unescape(re.sub(r"<[^>]+>", " ", page)))
    log = json.loads((out / "checks" / "log.json").read_text())
    assert [c["number"] for c in log["checks"]] == [1, 2, 3]
    for n in (1, 2, 3):
        doc = _doc(out, n)
        assert f'href="{n:02d}/check.html"' in page and (out / "checks" / f"{n:02d}" / "check.html").is_file()
        assert f"{doc['deviation']['predicted_miss_mm']:.1f} mm" in text
        assert _norm(doc["correction"]["text"]) in text
    assert text.index("check 01") < text.index("check 02") < text.index("check 03")
    assert "DEMO-THORAX" not in page


# --- the scene and the viewer -------------------------------------------------------------------------
def _violet(rgb: np.ndarray, tol: int = 30) -> np.ndarray:
    from planner.scene.needles import ACTUAL

    return np.all(np.abs(rgb.astype(int) - np.array(ACTUAL)) <= tol, axis=2)


def test_the_scene_draws_the_actual_needle_beside_the_planned_one(checked, tmp_path):
    """load_case picks up the latest check; the progression view draws its needle (violet) from
    the skin to its tip, with the deviation in words; without a check no violet is drawn."""
    from planner.scene import Scene, load_case
    from planner.scene import views as V
    from planner.scene.needles import ACTUAL, CHOSEN

    out, _, _ = checked
    assert F.ACTUAL == ACTUAL  # the page's images and the scene speak in one colour
    case = load_case(out)
    assert [c.number for c in case.checks] == [1, 2, 3] and case.actual.number == 3
    scene = Scene(case)
    view = V.progression(scene, (640, 480))
    try:
        rgb = view.render()
        view.save(tmp_path / "progression_with_check.png")
        violet = _violet(rgb)
        assert violet.sum() > 150, "the actual needle is not drawn"
        tip = view.pixel_of(case.actual.tip[None])[0]
        rr, cc = np.nonzero(violet)
        assert np.min(np.hypot(cc - tip[0], rr - tip[1])) < 4, "nothing violet at the needle's tip"
        caption = view.info["actual_caption"].GetInput()
        dev = case.actual.deviation
        assert f"{dev['angle_deg']:.1f}" in caption and f"miss {dev['predicted_miss_mm']:.1f} mm" in caption
        assert np.all(np.abs(rgb.astype(int) - CHOSEN) <= 12, axis=2).sum() > 50  # the plan is still drawn
    finally:
        view.close()
    bare = Scene(load_case(out, check=None))
    bare.__dict__["meshes"] = scene.meshes  # the same structures: not built twice
    view = V.progression(bare, (640, 480))
    try:
        assert _violet(view.render()).sum() == 0
    finally:
        view.close()


def test_planner_view_shows_the_actual_needle(checked, tmp_path):
    out, _, _ = checked
    shot = tmp_path / "view_room.png"
    assert main(["view", str(out), "--room", "--offscreen", "--screenshot", str(shot), "--size", "900x540"]) == 0
    rgb = np.asarray(PILImage.open(shot).convert("RGB"))
    assert _violet(rgb).sum() > 150
    # --check none: the plan alone; a check that is not there, or not a number, is said
    none = tmp_path / "view_none.png"
    assert main(["view", str(out), "--room", "--offscreen", "--screenshot", str(none), "--size", "900x540",
                 "--check", "none"]) == 0
    assert _violet(np.asarray(PILImage.open(none).convert("RGB"))).sum() < 20
    assert main(["view", str(out), "--offscreen", "--screenshot", str(none), "--check", "9"]) == 2
    assert main(["view", str(out), "--offscreen", "--screenshot", str(none), "--check", "two"]) == 2
