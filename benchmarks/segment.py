"""Time the automatic segmentation of the 141-slice chest CT, step by step.

Usage: .venv/bin/python benchmarks/segment.py [DICOM folder] [--repeat N]
       .venv/bin/python benchmarks/segment.py --mr [knee MR DICOM folder] [--repeat N]

Goal (issue: classical automatic segmentation): the whole of ``segment_ct`` plus the lesion
from one seed in under 30 s on 2 cores. Loading the scan is timed apart and not counted.
MR case (``--mr``, the shared 3 T multi-echo knee by default): the knee MR segmentation from
all its echoes in under 15 s on 2 cores; loading the echoes is timed apart and not counted.
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
KNEE_MR = ROOT.parent / "shared" / "data" / "knee-mr" / "dicom"
MR_GOAL_S = 15.0


def mr_case(folder: Path, repeat: int) -> int:
    """Time the knee MR segmentation (every echo of the series), step by step."""
    sys.path.insert(0, str(ROOT))
    from planner.anatomy.autoseg.knee_mr import load_echoes, segment_knee_mr

    t = time.perf_counter()
    echoes = load_echoes(folder)
    if echoes is None:
        print(f"{folder}: not a multi-echo MR series", file=sys.stderr)
        return 2
    image = echoes.images[0]
    print(f"load: {time.perf_counter() - t:.2f} s  ({image}, {len(echoes.images)} echoes)")
    times: dict[str, list[float]] = defaultdict(list)
    totals = []
    for _ in range(max(1, repeat)):
        marks: list[tuple[float, str]] = []
        t0 = time.perf_counter()
        result = segment_knee_mr(image, echoes, progress=lambda done, total, what: marks.append((time.perf_counter(), what)))
        for (ta, what), (tb, _) in zip(marks, marks[1:]):
            times[what].append(tb - ta)
        totals.append(time.perf_counter() - t0)
    width = max(len(k) for k in times)
    for what, ts in times.items():
        print(f"{what:<{width}}  {statistics.median(ts):6.2f} s")
    total = statistics.median(totals)
    print(f"{'total':<{width}}  {total:6.2f} s  (goal < {MR_GOAL_S:.0f} s: {'met' if total < MR_GOAL_S else 'NOT met'})")
    sset = result.structures
    print("structures: " + ", ".join(f"{s.name} {s.voxel_count * sset.voxel_volume_ml():.1f} ml" for s in sset))
    return 0 if total < MR_GOAL_S else 1


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", nargs="?", default=str(DEFAULT))
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--mr", action="store_true", help="the knee MR case (default folder: the shared knee MR)")
    args = ap.parse_args()
    if args.mr:
        folder = Path(args.folder) if args.folder != str(DEFAULT) else KNEE_MR
        if not folder.is_dir():
            print(f"benchmark data not found: {folder}", file=sys.stderr)
            return 2
        return mr_case(folder, args.repeat)
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
