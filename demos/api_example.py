"""The Python API in a script: load a CT, plan a lung biopsy, look at the plan, write it, read it back.

    .venv/bin/python demos/api_example.py [OUT_FOLDER]

Runs on the embedded demo thorax (assets/demo/thorax); every position is LPS millimetres.
"""

from __future__ import annotations

import sys
from pathlib import Path

import planner

ROOT = Path(__file__).resolve().parents[1]


def main(out: Path) -> int:
    case = ROOT / "assets" / "demo" / "thorax"
    ct = planner.load_image(case / "ct")  # a DICOM folder; NIfTI and NRRD load the same way
    print(f"loaded {ct!r}")
    structures = planner.load_structures(case / "structures.nii.gz", ct)  # or planner.segment(ct)
    plan = planner.plan(ct, procedure="lung-biopsy", target_label="lung_nodule", structures=structures, n=3)
    if not plan.ok:
        print("no safe trajectory:", "; ".join(plan.targets[0].explanation))
        return 3
    for t in plan.trajectories:
        entry = ", ".join(f"{x:.1f}" for x in t.entry)
        print(f"#{t.rank}: entry LPS ({entry}) mm, depth {t.length_mm} mm, {t.needle['gauge']}, "
              f"{t.craniocaudal_deg:+.0f} deg craniocaudal, patient {t.patient_position}; {t.limiting}")
    for warning in plan.warnings:
        print("check:", warning)
    written = plan.write(out)  # plan.json, the PDF and HTML report, markups, meshes: one folder, whole
    print(f"wrote {written.pdf}")
    again = planner.read_plan(out)
    assert again.to_json() == plan.to_json(), "the plan read back differs from the plan written"
    print(f"read back: {again.procedure}, {len(again.trajectories)} trajectories, status {again.status}")
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1] if len(sys.argv) > 1 else "out/api-example")))
