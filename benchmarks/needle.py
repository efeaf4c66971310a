"""The needle detector's accuracy over the full simulated campaign: 20 (or ``--n``) random check
scans per body region (chest CT, abdomen CT with 3 mm voxels, demo knee CT), each with a random
needle of 14-22 G, a random rigid motion of up to 3 mm and 3 degrees and a slab of 10-20
slices. Prints the tip and axis error distributions (median, 95th percentile, maximum) and
every case off the 1.5 mm / 1.5 degree bounds.

    .venv/bin/python benchmarks/needle.py [--n 20] [--seed 100]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"


def main() -> None:
    from planner.images import load_image
    from planner.testing.needle_sim import campaign, summary

    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=20)
    ap.add_argument("--seed", type=int, default=100)
    args = ap.parse_args()
    regions = {"chest": DATA / "chest-ct" / "dicom", "abdomen": DATA / "abdomen-ct-totalseg" / "ct.nii.gz",
               "knee": ROOT / "assets" / "demo" / "knee" / "ct"}
    for n, (name, path) in enumerate(regions.items()):
        ct = load_image(path)
        t = time.perf_counter()
        results = campaign(ct, args.n, seed=args.seed + n)
        print(summary(name, results), f"({time.perf_counter() - t:.0f} s)", flush=True)
        for r in results:
            if not (r.tip_error_mm <= 1.5 and r.axis_error_deg <= 1.5):
                print("   off:", r)


if __name__ == "__main__":
    main()
