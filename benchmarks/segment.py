"""Time the automatic segmentation of the 141-slice chest CT, step by step.

Usage: .venv/bin/python benchmarks/segment.py [DICOM folder] [--repeat N]

Goal (issue: classical automatic segmentation): the whole of ``segment_ct`` plus the lesion
from one seed in under 30 s on 2 cores. Loading the scan is timed apart and not counted.
Each step's time is the time between two progress calls; with ``--repeat`` the median of
the runs is printed.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = ROOT.parent / "shared" / "data" / "chest-ct" / "dicom"
MASS_LPS = (-82.0, 82.0, -8.0)
GOAL_S = 30.0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", nargs="?", default=str(DEFAULT))
    ap.add_argument("--repeat", type=int, default=1)
    args = ap.parse_args()
    folder = Path(args.folder)
    if not folder.is_dir():
        print(f"benchmark data not found: {folder}", file=sys.stderr)
        return 2

    sys.path.insert(0, str(ROOT))
    from planner.anatomy.autoseg import lesion_measurements, segment_ct, segment_lesion
    from planner.images import load_image

    t = time.perf_counter()
    ct = load_image(folder)
    print(f"load: {time.perf_counter() - t:.2f} s  ({ct})")

    times: dict[str, list[float]] = defaultdict(list)
    totals = []
    for _ in range(max(1, args.repeat)):
        marks: list[tuple[float, str]] = []
        t0 = time.perf_counter()
        sset = segment_ct(ct, progress=lambda done, total, what: marks.append((time.perf_counter(), what)))
        for (ta, what), (tb, _) in zip(marks, marks[1:]):
            times[what].append(tb - ta)
        times["(setup)"].append(marks[0][0] - t0)
        t1 = time.perf_counter()
        lesion = segment_lesion(ct, MASS_LPS)
        times["lesion"].append(time.perf_counter() - t1)
        totals.append(time.perf_counter() - t0)

    width = max(len(k) for k in times)
    for what, ts in times.items():
        print(f"{what:<{width}}  {statistics.median(ts):6.2f} s")
    total = statistics.median(totals)
    print(f"{'total':<{width}}  {total:6.2f} s  (goal < {GOAL_S:.0f} s: {'met' if total < GOAL_S else 'NOT met'})")
    m = lesion_measurements(lesion, ct)
    print(f"structures: {', '.join(sset.names())}")
    print(f"mass: {m['diameter_mm']:.1f} mm equivalent diameter, {m['max_diameter_mm']:.1f} mm largest extent, "
          f"{m['volume_ml']:.2f} ml")
    return 0 if total < GOAL_S else 1


if __name__ == "__main__":
    raise SystemExit(main())
