"""The needle detector's accuracy over the full simulated campaign: 20 (or ``--n``) random check
scans per body region (chest CT with 0.98 x 0.98 x 2 mm voxels, abdomen CT with 3 mm voxels, demo
knee CT with 0.8 x 0.8 x 1.5 mm voxels), each with a random needle of 14-22 G up to 35 degrees out
of the axial plane, a random rigid motion of up to 3 mm and 3 degrees and a slab of 10-20 slices
(:mod:`planner.testing.needle_sim`). Prints per region the tip and axis error distributions
(median, 95th percentile, maximum), the checks off the issue's bounds (tip 1.5 mm, axis 1.5
degrees, every check), the false needles (any needle reported besides the one inserted) and the
time of the search per check scan, then every check off the bounds or with a false needle.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/needle.py [--n 20] [--seed 100] [--regions chest abdomen knee]

Exit status 1 when a check is off the bounds.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
REGIONS = {"chest": DATA / "chest-ct" / "dicom", "abdomen": DATA / "abdomen-ct-totalseg" / "ct.nii.gz",
           "knee": ROOT / "assets" / "demo" / "knee" / "ct"}


def main() -> int:
    from planner.images import load_image
    from planner.testing.needle_sim import campaign, summary

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=20)
    ap.add_argument("--seed", type=int, default=100, help="region i (in the order chest, abdomen, knee) uses seed + i")
    ap.add_argument("--regions", nargs="+", choices=list(REGIONS), default=list(REGIONS))
    args = ap.parse_args()
    off = 0
    for n, (name, path) in enumerate(REGIONS.items()):
        if name not in args.regions:
            continue
        if not path.exists():
            print(f"{name}: {path} not found, skipped", flush=True)
            continue
        ct = load_image(path)
        t = time.perf_counter()
        results = campaign(ct, args.n, seed=args.seed + n)
        print(summary(name, results), f"({time.perf_counter() - t:.0f} s in all)", flush=True)
        for i, r in enumerate(results):
            if not r.within or r.false_found:
                print(f"   check {i}: {r}")
        off += sum(not r.within for r in results)
    return 1 if off else 0


if __name__ == "__main__":
    sys.exit(main())
