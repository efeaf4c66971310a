"""Issue 6: the report set of a plan (PDF, HTML, markups, meshes, DICOM), anonymization and review.

One plan of the demo thorax is made once (through ``planner plan --dicom``) and every test reads
its files. The numbers printed in the PDF and the HTML are compared with those in plan.json.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from conftest import require_tool
from PIL import Image as PILImage

from planner.anatomy import load_slicer_seg
from planner.cli.main import main
from planner.demo import demo_cases
from planner.images import load_image, save_image
from planner.report import facts as F
from planner.report import write_report_set

pypdf = pytest.importorskip("pypdf")


def _norm(text: str) -> str:
    return re.sub(r"\s+", " ", text)


@pytest.fixture(scope="session")
def thorax_case():
    return next(c for c in demo_cases() if c.id == "thorax")


@pytest.fixture(scope="session")
def plan_dir(thorax_case, tmp_path_factory):
    out = tmp_path_factory.mktemp("thorax-report")
    code = main(["plan", "--ct", str(thorax_case.ct), "--structures",
                 str(thorax_case.folder / thorax_case.info["structures"]), "--target-label", "lung_nodule",
                 "--procedure", "lung-biopsy", "--out", str(out), "--dicom"])
    assert code == 0
    return out


@pytest.fixture(scope="session")
def doc(plan_dir):
    return json.loads((plan_dir / "plan.json").read_text())


@pytest.fixture(scope="session")
def ct(thorax_case):
    return load_image(thorax_case.ct)


@pytest.fixture(scope="session")
def pdf_text(plan_dir):
    reader = pypdf.PdfReader(str(plan_dir / "report.pdf"))
    return _norm(" ".join(page.extract_text() for page in reader.pages))


@pytest.fixture(scope="session")
def anon_dir(plan_dir, ct, tmp_path_factory):
    out = tmp_path_factory.mktemp("thorax-anon") / "plan"
    shutil.copytree(plan_dir, out)
    shutil.rmtree(out / "dicom")
    sset = load_slicer_seg(out / "structures.seg.nrrd", ct)
    write_report_set(out, ct, sset, dicom=True, anonymize=True, meshes=False)
    return out


# --- the report -------------------------------------------------------------------------------
def test_plan_writes_the_whole_report_set(plan_dir):
    for name in ("plan.json", "report.pdf", "report.html", "plan.mrk.json", "structures.seg.nrrd",
                 "meshes/plan.glb", "meshes/needle_1.stl", "dicom/report.dcm", "images/planning_slice.png",
                 "images/bullseye.png", "images/progression.png", "images/overview_3d.png"):
        assert (plan_dir / name).is_file(), name
    assert not list(plan_dir.rglob(".*.tmp*")), "a temporary file was left behind"


def test_pdf_numbers_equal_plan_json(doc, pdf_text):
    best = doc["trajectories"][0]
    # Independent of the report's formatting functions: the plan.json values at 0.1 resolution.
    assert f"Depth skin to target {best['length_mm']:.1f} mm" in pdf_text
    assert f"Angle from vertical (AP axis) {best['angle_from_vertical_deg']:.1f}°" in pdf_text
    assert f"Craniocaudal angle (+ cranial) {best['craniocaudal_deg']:+.1f}°" in pdf_text
    assert f"{best['needle']['gauge']}, {best['needle']['length_mm']:.0f} mm" in pdf_text
    for name, d in best["clearance_mm"].items():
        assert f"{name} {d:.1f} mm" in pdf_text, name
    assert f"Target point (LPS, mm) ({', '.join(f'{x:.1f}' for x in doc['target']['point'])})" in pdf_text
    assert f"Patient ID {doc['patient']['id']}" in pdf_text
    assert doc["image"]["series_instance_uid"] in pdf_text
    # The room terms stored in plan.json are the ones printed.
    room = best["room"]
    assert f"{room['entry_table_z_mm']:.1f} mm (slice index {room['entry_slice_index']})" in pdf_text
    assert room["entry_table_z_mm"] == pytest.approx(best["entry"][2], abs=0.05)
    for t in doc["trajectories"]:  # the alternatives table
        assert f"{F.point(t['entry'])} {t['length_mm']:.1f} mm" in pdf_text
    for rf in best["risk_factors"]:
        assert _norm(rf) in pdf_text
    assert "Signature:" in pdf_text


def test_html_prints_the_same_facts_as_the_pdf(plan_dir, doc, pdf_text):
    import html as H

    page = (plan_dir / "report.html").read_text()
    text = _norm(H.unescape(re.sub(r"<[^>]+>", " ", page)))
    facts = F.report_facts(doc)
    for block in facts.blocks:
        if isinstance(block, F.KeyValues):
            for k, v in block.rows:
                assert _norm(v) in text and _norm(v) in pdf_text, (k, v)
        elif isinstance(block, F.Table):
            for row in block.rows:
                for cell in row:
                    assert _norm(cell) in text, cell
    # Self-contained: every image inline, nothing fetched from elsewhere.
    assert page.count('src="data:image/png;base64,') == 4  # the scene's four procedure-room views
    assert not re.search(r'src="(?!data:)', page)
    # the one link: the offline 3D scene beside it (opened on a click, not fetched by the page)
    assert re.findall(r'href="([^"]*)"', page) == ["scene3d.html"]
    assert (plan_dir / "scene3d.html").is_file()


def test_pdf_pages_render_as_a4_png(plan_dir, tmp_path):
    pdfium = pytest.importorskip("pypdfium2")
    pdf = pdfium.PdfDocument(str(plan_dir / "report.pdf"))
    assert 2 <= len(pdf) <= 5
    for n in range(len(pdf)):
        w, h = pdf[n].get_size()
        assert (round(w), round(h)) == (595, 842)  # A4 in points
        im = pdf[n].render(scale=1.0).to_pil().convert("L")
        im.save(tmp_path / f"page{n + 1}.png")
        a = np.asarray(im)
        assert a.min() < 50 and a.max() > 200  # text on paper
    assert (tmp_path / "page1.png").stat().st_size > 10_000


def test_pdf_pages_through_pdftoppm(plan_dir, tmp_path):
    """The PDF read by poppler's pdftoppm (an independent reader) gives one colour A4 page per
    page, with the scene images in colour on page 2."""
    exe = require_tool("pdftoppm", "poppler-utils")
    subprocess.run([exe, "-png", "-r", "50", str(plan_dir / "report.pdf"), str(tmp_path / "p")], check=True,
                   capture_output=True, timeout=120)
    pages = sorted(tmp_path.glob("p-*.png"))
    assert 2 <= len(pages) <= 5
    for page in pages:
        im = PILImage.open(page)
        assert abs(im.width / im.height - 595 / 842) < 0.01  # A4 portrait
    rgb = np.asarray(PILImage.open(pages[1]).convert("RGB")).astype(int)
    chroma = np.ptp(rgb, axis=2)
    assert np.count_nonzero(chroma > 60) > 500, "the scene images on page 2 are in colour"


def test_no_safe_path_report_says_why(doc, tmp_path):
    bad = dict(doc, status="no_safe_path", trajectories=[],
               explanation=["100 skin entry points within reach; 0 (0.0 %) keep every hard constraint"],
               rejected={"clearance:bone": 100})
    facts = F.report_facts(bad)
    from planner.report.html import render_html
    from planner.report.pdf import write_pdf

    write_pdf(facts, {}, tmp_path / "r.pdf")
    text = _norm(" ".join(p.extract_text() for p in pypdf.PdfReader(str(tmp_path / "r.pdf")).pages))
    assert "NO SAFE TRAJECTORY" in text and "clearance:bone 100" in text
    assert "NO SAFE TRAJECTORY" in render_html(facts, {})


def test_scene_images_are_preferred_when_present(plan_dir, tmp_path):
    from planner.report.images import report_images

    d = tmp_path / "p"
    (d / "images").mkdir(parents=True)
    for name in ("overview_3d", "planning_slice", "extra", "path_axial", "probe_plane"):
        shutil.copy(plan_dir / "images" / "planning_slice.png", d / "images" / f"{name}.png")
    # the scene's views in their order, the planner's own (the ultrasound probe plane) after them;
    # the planes through the target only when no scene view exists
    assert list(report_images(d)) == ["planning_slice", "overview_3d", "probe_plane"]
    for name in ("overview_3d", "planning_slice"):
        (d / "images" / f"{name}.png").unlink()
    assert list(report_images(d)) == ["path_axial", "probe_plane"]


# --- markups --------------------------------------------------------------------------------
def test_markups_validate_against_the_slicer_schema(plan_dir, doc):
    jsonschema = pytest.importorskip("jsonschema")
    from planner.report.markups import markups_schema

    schema = markups_schema()
    m = json.loads((plan_dir / "plan.mrk.json").read_text())
    jsonschema.validate(m, schema)
    assert len(m["markups"]) == len(doc["trajectories"])
    for mk, t in zip(m["markups"], doc["trajectories"]):
        assert mk["type"] == "Line" and mk["coordinateSystem"] == "LPS"
        assert [p["position"] for p in mk["controlPoints"]] == [t["entry"], t["target"]]
    for t in doc["trajectories"]:
        one = json.loads((plan_dir / "markups" / f"trajectory_{t['rank']}.mrk.json").read_text())
        jsonschema.validate(one, schema)
    # The schema has teeth: RAS-less nonsense and a 2D point are refused.
    bad = json.loads(json.dumps(m))
    bad["markups"][0]["coordinateSystem"] = "XYZ"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema)
    bad = json.loads(json.dumps(m))
    bad["markups"][0]["controlPoints"][0]["position"] = [1.0, 2.0]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema)


# --- DICOM ----------------------------------------------------------------------------------
def test_dicom_objects_are_in_the_cts_study_and_valid(plan_dir, ct):
    import pydicom

    from planner.report.dicom_export import ENCAPSULATED_PDF, SECONDARY_CAPTURE, validate_iod

    all_files = sorted((plan_dir / "dicom").glob("*.dcm"))
    # the report, the four procedure-room views, the structures (SEG) and the trajectories (SR)
    assert sorted(f.name for f in all_files if f.name in ("structures.dcm", "trajectories.dcm")) == \
        ["structures.dcm", "trajectories.dcm"]
    for f in all_files:  # every one in the CT's study, a series of its own
        ds = pydicom.dcmread(f, stop_before_pixels=True)
        assert ds.StudyInstanceUID == ct.meta.study_instance_uid and ds.PatientID == ct.meta.patient_id
        assert ds.FrameOfReferenceUID == ct.meta.frame_of_reference_uid if "FrameOfReferenceUID" in ds else True
    files = [f for f in all_files if f.name not in ("structures.dcm", "trajectories.dcm")]  # SEG, SR: test_pacs
    assert len(files) == 5
    series = set()
    for f in files:
        ds = pydicom.dcmread(f)
        assert validate_iod(ds) == [], f.name
        assert ds.StudyInstanceUID == ct.meta.study_instance_uid
        assert ds.SeriesInstanceUID != ct.meta.series_instance_uid
        assert ds.PatientID == ct.meta.patient_id and str(ds.PatientName) == ct.meta.patient_name
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        series.add(ds.SeriesInstanceUID)
        if ds.SOPClassUID == ENCAPSULATED_PDF:
            doc_bytes = bytes(ds.EncapsulatedDocument)[: int(ds.EncapsulatedDocumentLength)]
            assert doc_bytes == (plan_dir / "report.pdf").read_bytes()
            assert ds.Modality == "DOC" and ds.MIMETypeOfEncapsulatedDocument == "application/pdf"
        else:
            assert ds.SOPClassUID == SECONDARY_CAPTURE
            from PIL import Image as PILImage

            png = PILImage.open(plan_dir / "images" / f"{f.stem[3:]}.png")  # sc_<view>.dcm from images/<view>.png
            assert ds.pixel_array.shape == (png.height, png.width, 3) and ds.PhotometricInterpretation == "RGB"
    assert len(series) == 2  # one new series for the report, one for the images
    # The validator has teeth.
    ds = pydicom.dcmread(plan_dir / "dicom" / "report.dcm")
    del ds.ConversionType
    ds.MIMETypeOfEncapsulatedDocument = "text/plain"
    problems = " ".join(validate_iod(ds))
    assert "ConversionType" in problems and "application/pdf" in problems


def test_dicom_checks_stand_without_highdicoms_private_tables(plan_dir, monkeypatch):
    """The IOD check uses highdicom's private tables of the standard when they import; when a
    highdicom release moves them, the project's own type 1 and value checks still catch a broken
    object (the fallback is exercised, not assumed)."""
    import sys

    import pydicom

    from planner.report.dicom_export import validate_iod

    monkeypatch.setitem(sys.modules, "highdicom._standard_utils", None)  # any import of it now fails
    ds = pydicom.dcmread(plan_dir / "dicom" / "report.dcm")
    assert validate_iod(ds) == []
    del ds.ConversionType
    ds.MIMETypeOfEncapsulatedDocument = "text/plain"
    problems = " ".join(validate_iod(ds))
    assert "type 1 attribute ConversionType is missing" in problems and "application/pdf" in problems


# --- meshes ---------------------------------------------------------------------------------
def test_meshes_sit_where_the_masks_are(plan_dir, ct, doc):
    trimesh = pytest.importorskip("trimesh")
    sset = load_slicer_seg(plan_dir / "structures.seg.nrrd", ct)
    voxel = float(ct.spacing.max())
    for name in ("lung_nodule", "rib_right_4", "vertebrae_T6", "aorta"):
        s = sset[name]
        mesh = trimesh.load(plan_dir / "meshes" / f"{name}.stl")
        assert mesh.is_watertight and mesh.volume > 0, name
        kji = np.argwhere(s.mask) + np.array(s.offset)
        centroid = ct.ijk_to_lps(kji[:, ::-1].astype(float)).mean(axis=0)
        assert np.linalg.norm(mesh.center_mass - centroid) < voxel, name
        vol = s.voxel_count * float(np.prod(ct.spacing))
        assert mesh.volume == pytest.approx(vol, rel=0.25), name
    needle = trimesh.load(plan_dir / "meshes" / "needle_1.stl")
    best = doc["trajectories"][0]
    assert np.allclose(needle.center_mass, np.mean([best["entry"], best["target"]], axis=0), atol=0.5)
    scene = trimesh.load(plan_dir / "meshes" / "plan.glb")
    assert "lung_nodule" in scene.geometry and "needle_1" in scene.geometry


# --- review ---------------------------------------------------------------------------------
def test_review_accepts_the_plans_own_scan(plan_dir, thorax_case, capsys):
    assert main(["review", str(plan_dir), "--ct", str(thorax_case.ct), "--no-window"]) == 0
    out = capsys.readouterr().out
    assert "scan matches the plan" in out and "verdict: all trajectories verified" in out


def test_review_refuses_another_series(plan_dir, capsys):
    knee = next(c for c in demo_cases() if c.id == "knee")
    assert main(["review", str(plan_dir), "--ct", str(knee.ct), "--no-window"]) == 2
    err = capsys.readouterr().err
    assert "is not the plan's series" in err and "Traceback" not in err


def test_review_refuses_one_changed_voxel(plan_dir, ct, tmp_path, capsys):
    from planner.report.review import ScanMismatchError, review_plan

    v = ct.voxels.copy()
    v[10, 20, 30] += 1
    changed = ct.with_voxels(v)
    with pytest.raises(ScanMismatchError, match="voxel hash"):
        review_plan(plan_dir, changed)
    save_image(changed, tmp_path / "changed.nrrd")  # the same through the command line
    assert main(["review", str(plan_dir), "--ct", str(tmp_path / "changed.nrrd"), "--no-window"]) == 2
    assert "voxel hash" in capsys.readouterr().err


def test_review_refuses_structures_that_are_not_the_plans(plan_dir, ct, doc, tmp_path, capsys):
    """A structures file changed after planning (here a vessel drawn on the path) is not the
    plan's: review refuses it by its hash instead of verifying against it."""
    from planner.anatomy import save_slicer_seg

    d = tmp_path / "plan"
    d.mkdir()
    shutil.copy(plan_dir / "plan.json", d / "plan.json")
    sset = load_slicer_seg(plan_dir / "structures.seg.nrrd", ct)
    best = doc["trajectories"][0]
    mid = ct.lps_to_ijk(np.mean([best["entry"], best["target"]], axis=0))
    mask = np.zeros(ct.shape, bool)
    k, j, i = np.rint(mid[::-1]).astype(int)
    mask[k - 1:k + 2, j - 2:j + 3, i - 2:i + 3] = True
    sset.add("subclavian_artery_right", mask)  # a vessel on the needle path
    save_slicer_seg(sset, d / "structures.seg.nrrd")
    code = main(["review", str(d), "--ct", str(next(c for c in demo_cases() if c.id == "thorax").ct),
                 "--no-window"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and "is not the structures file the plan was made against" in err[0]


# --- anonymization ----------------------------------------------------------------------------
def test_anonymized_outputs_carry_no_identifier(anon_dir, ct):
    import pydicom

    from planner.report.anonymize import identifiers_of
    from planner.report.dicom_export import validate_iod

    secrets = identifiers_of(ct.meta)
    assert ct.meta.patient_id in secrets and ct.meta.study_instance_uid in secrets
    texts = {
        "plan.json": (anon_dir / "plan.json").read_text(),
        "report.html": (anon_dir / "report.html").read_text(),
        "plan.mrk.json": (anon_dir / "plan.mrk.json").read_text(),
        "report.pdf": " ".join(p.extract_text() for p in pypdf.PdfReader(str(anon_dir / "report.pdf")).pages),
    }
    for f in sorted((anon_dir / "dicom").glob("*.dcm")):
        ds = pydicom.dcmread(f)
        assert ds.PatientIdentityRemoved == "YES" and str(ds.PatientName) == "" and ds.PatientID == ""
        assert ds.StudyInstanceUID != ct.meta.study_instance_uid
        assert validate_iod(ds) == [], f.name
        texts[f.name] = f.read_bytes().decode("latin-1")
    for name, text in texts.items():
        for s in secrets:
            assert s not in text, (name, s)
    doc = json.loads(texts["plan.json"])
    assert doc["anonymized"] is True and doc["image"]["sha256"] == ct.sha256


def test_anonymized_plan_is_reviewed_by_its_voxel_hash(anon_dir, thorax_case, capsys):
    assert main(["review", str(anon_dir), "--ct", str(thorax_case.ct), "--no-window"]) == 0
    assert "identified by its voxel hash" in capsys.readouterr().out


def test_dicom_export_needs_a_dicom_ct(tmp_path, capsys):
    code = main(["plan", "--ct", str(tmp_path / "ct.nii.gz"), "--target", "0,0,0", "--procedure", "lung-biopsy",
                 "--out", str(tmp_path / "out"), "--dicom"])
    assert code == 2
    assert "must be given as DICOM" in capsys.readouterr().err


def test_dicom_objects_pass_dciodvfy(plan_dir, anon_dir):
    """dicom3tools' IOD verifier finds no error in any DICOM object of the report set, the
    de-identified ones included (the SEG and SR need dummies where the profile empties a type 1)."""
    exe = require_tool("dciodvfy", "dicom3tools")
    files = sorted((plan_dir / "dicom").glob("*.dcm")) + sorted((anon_dir / "dicom").glob("*.dcm"))
    assert len([f for f in files if f.name in ("structures.dcm", "trajectories.dcm")]) == 4
    for f in files:
        out = subprocess.run([exe, str(f)], capture_output=True, text=True, check=False)
        errors = [line for line in (out.stdout + out.stderr).splitlines() if line.startswith("Error")]
        assert not errors, (f.name, errors)
