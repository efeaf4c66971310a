"""Registration of simulated check scans to the planning CT: accuracy at the target and time.

Usage: .venv/bin/python benchmarks/register.py [--n 20] [--regions chest,abdomen,knee] [--seed 0]

Goal (issue: check scan): registration error at the target at most 1.5 mm for every case (a
patient moved by up to 5 mm and 4 degrees, a check slab of 10-40 mm with a needle and noise,
the first case of each region a 10 mm slab), and the whole registration under 5 s on 2 cores.
Prints every case, then per region the median, 95th percentile and max of the target error,
the refusals, and the median and max time per registration. Exit 1 when a case misses.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
SCANS = {
    "chest": ROOT.parent / "shared" / "data" / "chest-ct" / "dicom",
    "abdomen": ROOT.parent / "shared" / "data" / "abdomen-ct-totalseg" / "ct.nii.gz",
    "knee": ROOT / "assets" / "demo" / "knee" / "ct",
}


def main() -> int:
    import regsim

    from planner.checks.register import register_check
    from planner.errors import InputError
    from planner.images import load_image

    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=20)
    ap.add_argument("--regions", default="chest,abdomen,knee")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    failed = False
    for r, region in enumerate(args.regions.split(",")):
        path = SCANS[region]
        if not path.exists():
            print(f"{region}: {path} not found, skipped")
            continue
        ct = load_image(path)
        body = regsim.body_slices(ct)
        rng = np.random.default_rng(args.seed * 100 + r)
        errors, times, refused = [], [], []
        for c in range(args.n):
            case = regsim.simulate(ct, body, rng, slab_mm=(10.0, 10.0) if c == 0 else (10.0, 40.0))
            t = time.perf_counter()
            try:
                reg = register_check(ct, case.check, entry_lps=case.entry, target_lps=case.target)
            except InputError as exc:
                times.append(time.perf_counter() - t)
                refused.append(c)
                print(f"{region} #{c}: slab {case.slab_mm:.0f} mm, moved {case.motion_mm:.1f} mm / {case.motion_deg:.1f} deg: REFUSED {exc}")
                continue
            times.append(time.perf_counter() - t)
            err = regsim.target_error(reg.check_to_planning, case)
            errors.append(err)
            q = reg.quality
            print(
                f"{region} #{c}: slab {case.slab_mm:.0f} mm ({case.check.shape[0]} slices), moved {case.motion_mm:.1f} mm /"
                f" {case.motion_deg:.1f} deg: error {err:.2f} mm, correlation {q['correlation']:.3f}, spread"
                f" {q['target_spread_mm']:.2f} mm, {q['iterations']} iterations, {times[-1]:.2f} s",
                flush=True,
            )
        e = np.array(errors) if errors else np.array([np.nan])
        print(
            f"== {region}: {len(errors)}/{args.n} registered, refused {refused}; target error median {np.median(e):.2f} mm,"
            f" p95 {np.percentile(e, 95):.2f} mm, max {np.max(e):.2f} mm; time per registration median"
            f" {np.median(times):.2f} s, max {np.max(times):.2f} s",
            flush=True,
        )
        failed |= bool(refused) or bool(np.max(e) > 1.5)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
