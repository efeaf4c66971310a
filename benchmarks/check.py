"""A whole check (`planner check`) on the real chest CT: time per step and accuracy against the truth.

Usage: .venv/bin/python benchmarks/check.py [--n 8] [--seed 0]

Plans a lung biopsy of the chest CT's right-lung mass (automatic segmentation, not counted),
then makes ``n`` simulated check scans (planner.testing.needle_sim: the patient moved by up to
3 mm and 3 degrees, a 30 mm slab, a 17 G needle advanced 50-90 % of the way, turned up to 6
degrees off the plan) and runs the check on each through the same code as the command line.
Prints per check the time of each step (load, registration, needles, comparison and writing)
and the errors against the truth (tip, angle from the plan, predicted miss); then medians and
maxima. Goal (issue: check scan): a check under 5 s on 2 cores.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CHEST = ROOT.parent / "shared" / "data" / "chest-ct" / "dicom"


def main() -> int:
    import planner
    import planner.anatomy.slicer_seg as seg_module
    import planner.checks.needle as needle_module
    import planner.checks.outputs as outputs_module
    import planner.checks.register as register_module
    import planner.checks.run as run_module
    from planner.checks.compare import deviation
    from planner.checks.run import run_check
    from planner.testing.dicom_write import write_image_as_dicom
    from planner.testing.needle_sim import GAUGE_OD_MM, simulate_check

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if not CHEST.is_dir():
        print(f"chest CT not found at {CHEST}", file=sys.stderr)
        return 2
    tmp = Path(tempfile.mkdtemp(prefix="check-bench-"))
    try:
        t = time.perf_counter()
        plan = planner.plan(CHEST, procedure="lung-biopsy", seed=(-82, 82, -8), n=1)
        plan.write(tmp / "plan")
        print(f"(planning the chest CT, not counted: {time.perf_counter() - t:.1f} s)")
        ct = plan.session.image
        entry, target = np.asarray(plan.trajectories[0].entry), np.asarray(plan.trajectories[0].target)
        w = (target - entry) / np.linalg.norm(target - entry)
        rng = np.random.default_rng(args.seed)

        timings: dict[str, float] = {}

        def timed(module, name):  # wrap a step to time it, without changing what it does
            real = getattr(module, name)

            def wrapper(*a, **k):
                t0 = time.perf_counter()
                try:
                    return real(*a, **k)
                finally:
                    timings[name] = timings.get(name, 0.0) + time.perf_counter() - t0
            setattr(module, name, wrapper)

        timed(register_module, "register_check")
        timed(needle_module, "find_needles")
        timed(run_module, "load_image")
        timed(seg_module, "load_slicer_seg")
        timed(outputs_module, "write_check_outputs")
        rows = []
        for n in range(args.n):
            axis = np.cross(w, rng.normal(size=3))
            axis /= np.linalg.norm(axis)
            a = np.radians(rng.uniform(0, 6))
            u = w * np.cos(a) + np.cross(axis, w) * np.sin(a)
            depth = np.linalg.norm(target - entry)
            tip = entry + rng.uniform(0.5, 0.9) * depth * u
            check, truth = simulate_check(ct, entry - 40 * u, tip, rng, move_mm=3.0, move_deg=3.0, slab_mm=30.0,
                                          outer_diameter_mm=GAUGE_OD_MM[17])
            meta = check.meta.replace(patient_name=ct.meta.patient_name, patient_id=ct.meta.patient_id)
            scan = tmp / f"scan{n}"
            write_image_as_dicom(check, scan, meta=meta, uid_seed=f"bench-{n}")
            timings.clear()
            t0 = time.perf_counter()
            result = run_check(tmp / "plan", scan)
            total = time.perf_counter() - t0
            d = result.document
            u_true = (truth.tip_planning - truth.hub_planning) / np.linalg.norm(truth.tip_planning - truth.hub_planning)
            want = deviation(entry, target, truth.tip_planning, u_true, plan.target.diameter_mm)
            tip_err = float(np.linalg.norm(np.subtract(d["needle"]["tip_lps"], truth.tip_planning)))
            angle_err = abs(d["deviation"]["angle_deg"] - want.angle_deg)
            miss_err = abs(d["deviation"]["predicted_miss_mm"] - want.predicted_miss_mm)
            reg, det = timings.get("register_check", 0.0), timings.get("find_needles", 0.0)
            load, seg = timings.get("load_image", 0.0), timings.get("load_slicer_seg", 0.0)
            write = timings.get("write_check_outputs", 0.0)
            rows.append((total, reg, det, tip_err, angle_err, miss_err))
            side = max(reg, det, seg)  # registration, needles and structures run side by side
            print(f"check {n + 1}: {total:.2f} s (loading both scans {load:.2f}; side by side: registration "
                  f"{reg:.2f}, needles {det:.2f}, structures {seg:.2f}; images and page {write:.2f}; comparison and "
                  f"the rest {total - load - side - write:.2f}); tip error {tip_err:.2f} mm, angle error "
                  f"{angle_err:.2f} deg, predicted-miss error {miss_err:.2f} mm; correction: {d['correction']['text']}")
        arr = np.array(rows)
        print(f"time per check: median {np.median(arr[:, 0]):.2f} s, max {arr[:, 0].max():.2f} s (goal < 5 s: "
              f"{'met' if arr[:, 0].max() < 5 else 'NOT met'})")
        for i, name, unit in ((3, "tip error", "mm"), (4, "angle error", "deg"), (5, "predicted-miss error", "mm")):
            print(f"{name}: median {np.median(arr[:, i]):.2f} {unit}, max {arr[:, i].max():.2f} {unit}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
