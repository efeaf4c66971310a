"""Build the embedded demo cases in assets/demo/ from the synthetic phantoms (deterministic).

For each case it writes, into ``assets/demo/<case>/``:

- ``ct/``: the CT as a DICOM series (one file per slice, lossless compression),
- ``structures.nii.gz``: one multilabel map on the CT grid, and ``structures.json``: its labels,
- ``case.json``: what the case is (procedure, target, display window, landmarks, hashes).

Running it twice gives byte-identical files: DICOM UIDs come from a fixed seed per case, the
dates are fixed, and the NIfTI is gzipped with no time stamp and no file name. Every file is
read back and compared with the phantom before the script reports success.

Usage: ``python demos/build_assets.py [--out assets/demo] [--case thorax|knee]``
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from planner.images import Image, ImageMeta, load_image, save_image  # noqa: E402
from planner.testing.dicom_write import write_image_as_dicom  # noqa: E402
from planner.testing.phantoms import Phantom, make_knee, make_thorax  # noqa: E402

GENERATOR = "demos/build_assets.py"
SEED = 0

CASES = {
    "thorax": {
        "make": make_thorax,
        "title": "Synthetic thorax with a right-lung nodule",
        "procedure": "lung-biopsy",
        "target_landmark": "nodule_center",
        "target_label": "lung_nodule",
        "window": "lung",
        "transfer_syntax": "jpeg-ls",
        "uid_seed": "planner-demo-thorax-v1",
        "meta": ImageMeta(
            modality="CT",
            patient_name="Demo^Thorax",
            patient_id="DEMO-THORAX",
            patient_birth_date="19600101",
            patient_sex="O",
            study_date="20260101",
            acquisition_date="20260101",
            study_description="Synthetic chest CT (phantom)",
            series_description="Thorax 2.5 mm synthetic phantom",
            accession_number="DEMO0001",
            manufacturer="planner synthetic phantom",
            patient_position="HFS",
        ),
    },
    "knee": {
        "make": make_knee,
        "title": "Synthetic right knee with a joint effusion",
        "procedure": "knee-injection",
        "also_procedures": ["knee-synovial-biopsy"],
        "target_landmark": "effusion_center",
        "target_label": "knee_effusion_right",
        "window": "soft-tissue",
        "transfer_syntax": "rle",
        "uid_seed": "planner-demo-knee-v1",
        "meta": ImageMeta(
            modality="CT",
            patient_name="Demo^Knee",
            patient_id="DEMO-KNEE",
            patient_birth_date="19700101",
            patient_sex="O",
            study_date="20260101",
            acquisition_date="20260101",
            study_description="Synthetic right knee CT (phantom)",
            series_description="Right knee 1.5 mm synthetic phantom",
            accession_number="DEMO0002",
            manufacturer="planner synthetic phantom",
            patient_position="HFS",
        ),
    },
}


def write_nifti_gz(image: Image, path: Path) -> None:
    """Write ``.nii.gz`` reproducibly: the plain NIfTI bytes, gzipped with mtime 0 and no name."""
    with tempfile.TemporaryDirectory() as tmp:
        plain = Path(tmp) / "structures.nii"
        save_image(image, plain)
        raw = plain.read_bytes()
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, mtime=0, compresslevel=9) as gz:
        gz.write(raw)
    tmp_path = path.with_name(f".{path.name}.tmp")
    tmp_path.write_bytes(buf.getvalue())
    tmp_path.replace(path)


def folder_digest(folder: Path) -> str:
    """sha256 over the names and bytes of every file in a folder (sorted)."""
    h = hashlib.sha256()
    for f in sorted(p for p in folder.rglob("*") if p.is_file()):
        h.update(f.relative_to(folder).as_posix().encode() + b"\0")
        h.update(hashlib.sha256(f.read_bytes()).digest())
    return h.hexdigest()


def build_case(case_id: str, out_root: Path) -> dict:
    spec = CASES[case_id]
    t0 = time.perf_counter()
    phantom: Phantom = spec["make"](SEED)
    t_make = time.perf_counter() - t0
    folder = out_root / case_id
    folder.mkdir(parents=True, exist_ok=True)

    # CT as DICOM (clear the old series first so no stale slice survives)
    ct_dir = folder / "ct"
    if ct_dir.exists():
        shutil.rmtree(ct_dir)
    write_image_as_dicom(
        phantom.ct, ct_dir, transfer_syntax=spec["transfer_syntax"], uid_seed=spec["uid_seed"], meta=spec["meta"]
    )
    back = load_image(ct_dir)
    if back.shape != phantom.ct.shape or not np.array_equal(back.voxels, phantom.ct.voxels):
        raise SystemExit(f"{case_id}: the DICOM series does not read back to the same voxels")
    if not np.allclose(back.affine, phantom.ct.affine, atol=1e-6, rtol=0):
        raise SystemExit(f"{case_id}: the DICOM series does not read back to the same affine:\n{back.affine}")
    if back.sha256 != phantom.ct.sha256:
        raise SystemExit(f"{case_id}: the DICOM series reads back with another content hash")

    # structures: one label map and its table
    labelmap, table = phantom.labelmap()
    write_nifti_gz(Image(labelmap, phantom.ct.affine), folder / "structures.nii.gz")
    lab_back = load_image(folder / "structures.nii.gz", modality=None)
    if not np.array_equal(lab_back.voxels, labelmap) or not np.allclose(lab_back.affine, phantom.ct.affine, atol=1e-5):
        raise SystemExit(f"{case_id}: structures.nii.gz does not read back to the label map")
    labels_json = {"labels": {str(v): name for v, name in table.items()}}
    (folder / "structures.json").write_text(json.dumps(labels_json, indent=2) + "\n")

    target = [round(float(v), 1) for v in phantom.landmarks[spec["target_landmark"]]]
    case = {
        "id": case_id,
        "title": spec["title"],
        "procedure": spec["procedure"],
        "also_procedures": spec.get("also_procedures", []),
        "ct": "ct",
        "structures": "structures.nii.gz",
        "labels": "structures.json",
        "target": {"point": target, "label": spec["target_label"]},
        "window": spec["window"],
        "landmarks": {k: [round(float(v), 2) for v in p] for k, p in phantom.landmarks.items()},
        "generator": GENERATOR,
        "seed": SEED,
        "synthetic": True,
        "ct_sha256": phantom.ct.sha256,
        "ct_size_ijk": list(phantom.ct.size_ijk),
        "ct_spacing_mm": [round(float(s), 6) for s in phantom.ct.spacing],
        "transfer_syntax": spec["transfer_syntax"],
        "info": phantom.info,
    }
    (folder / "case.json").write_text(json.dumps(case, indent=2) + "\n")
    size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    return {"case": case_id, "seconds": round(t_make, 2), "bytes": size, "ct_digest": folder_digest(ct_dir),
            "target": target}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "assets" / "demo", help="output folder (default assets/demo)")
    ap.add_argument("--case", choices=sorted(CASES), action="append", help="only this case (repeatable)")
    args = ap.parse_args(argv)
    for case_id in args.case or list(CASES):
        r = build_case(case_id, args.out)
        print(f"{r['case']}: phantom in {r['seconds']} s, {r['bytes'] / 1e6:.2f} MB, target {r['target']}, "
              f"series digest {r['ct_digest'][:16]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
