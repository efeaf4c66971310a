"""Load the 141-slice chest CT with planner and with SimpleITK in one run; print both and the ratio.

Usage: .venv/bin/python benchmarks/load.py [DICOM folder] [--repeat N]

Goal (issue: image layer): planner no slower than SimpleITK (ratio <= 1.0) on 2 cores.
Each tool loads the whole series from the folder: file discovery, header parsing, sorting,
pixel decoding and rescale. The first (cold) load of each is discarded; the median of the
repeats is reported.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = ROOT.parent / "shared" / "data" / "chest-ct" / "dicom"


def time_it(fn, repeat: int) -> tuple[float, list[float]]:
    fn()  # warm-up: imports, file cache
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), times


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", nargs="?", default=str(DEFAULT))
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    folder = Path(args.folder)
    if not folder.is_dir():
        print(f"benchmark data not found: {folder}", file=sys.stderr)
        return 2

    import SimpleITK as sitk

    from planner.images import load_image

    def planner_load():
        return load_image(folder)

    def sitk_load():
        reader = sitk.ImageSeriesReader()
        reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
        return sitk.GetArrayViewFromImage(reader.Execute())

    image = planner_load()
    print(f"series: {folder} -> {image!r}")
    print(f"cores: {os.cpu_count()}, SimpleITK threads: {sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()}")
    t_planner, all_p = time_it(planner_load, args.repeat)
    t_sitk, all_s = time_it(sitk_load, args.repeat)
    print(f"{'reader':<12}{'median s':>10}   runs")
    print(f"{'planner':<12}{t_planner:>10.3f}   " + " ".join(f"{t:.3f}" for t in all_p))
    print(f"{'SimpleITK':<12}{t_sitk:>10.3f}   " + " ".join(f"{t:.3f}" for t in all_s))
    ratio = t_planner / t_sitk
    print(f"ratio planner / SimpleITK = {ratio:.2f} (goal <= 1.0: {'met' if ratio <= 1.0 else 'NOT met'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
