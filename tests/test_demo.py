"""`planner demo` on the embedded cases: what `make demo` shows a user."""

from __future__ import annotations

import numpy as np
from PIL import Image as PILImage

from planner.cli.main import main
from planner.demo import demo_cases


def test_demo_writes_three_readable_planes_per_case(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    cases = demo_cases()
    assert {c.id for c in cases} >= {"thorax", "knee"}
    for case in cases:
        assert f"{case.id}: loaded" in out
        for plane in ("axial", "coronal", "sagittal"):
            png = tmp_path / case.id / "images" / f"{plane}.png"
            rgb = np.asarray(PILImage.open(png).convert("RGB")).astype(int)
            assert max(rgb.shape[:2]) >= 400, "readable size"
            grey = rgb.mean(axis=2)
            assert grey.std() > 20, f"{png} looks blank"
            # The target is marked with a yellow cross, away from the image border.
            yellow = (rgb[..., 0] > 200) & (rgb[..., 1] > 150) & (rgb[..., 2] < 80)
            assert yellow.sum() >= 8, f"no target mark in {png}"
            rows, cols = np.nonzero(yellow)
            h, w = yellow.shape
            assert 0.05 * h < rows.mean() < 0.95 * h and 0.05 * w < cols.mean() < 0.95 * w
    # every procedure of every case is planned, safely (the safety tests check the geometry)
    import json

    for case, procedure, folder in (("thorax", "lung-biopsy", "thorax"), ("knee", "knee-injection", "knee"),
                                    ("knee", "knee-synovial-biopsy", "knee-synovial-biopsy")):
        doc = json.loads((tmp_path / folder / "plan.json").read_text())
        assert doc["procedure"] == procedure and doc["status"] == "ok", (folder, doc["explanation"])
        assert f"{case}: planned {procedure}" in out
    knee = json.loads((tmp_path / "knee" / "plan.json").read_text())
    assert knee["hard_constraints"]["approach"]["id"] == "suprapatellar-lateral"
    for t in knee["trajectories"]:
        # a right knee's lateral side is towards the patient's right: smaller x in LPS
        assert t["entry"][0] < t["target"][0]
        assert t["patient_position"] == "supine"
