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
    ap.add_argument("--jpeg2000", action="store_true",
                    help="also re-encode the series as JPEG 2000 lossless and time that (parallel decode)")
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
    if args.jpeg2000:
        compressed_benchmark(image, args.repeat)
    return 0


def compressed_benchmark(image, repeat: int) -> None:
    """The same voxels as JPEG 2000 lossless: planner with 1 thread, with its default pool, SimpleITK."""
    import tempfile

    import SimpleITK as sitk

    from planner.images import load_dicom
    from planner.testing.dicom_write import write_image_as_dicom

    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        write_image_as_dicom(image, tmp, transfer_syntax="jpeg2000", uid_seed="bench")
        print(f"\nJPEG 2000 lossless copy written in {time.perf_counter() - t:.1f} s")
        folder = Path(tmp)

        def sitk_load():
            reader = sitk.ImageSeriesReader()
            reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
            return reader.Execute()

        rows = [
            ("planner, 1 thread", lambda: load_dicom(folder, workers=1)),
            ("planner, pool", lambda: load_dicom(folder)),
            ("SimpleITK", sitk_load),
        ]
        results = {name: time_it(fn, repeat)[0] for name, fn in rows}
        for name, med in results.items():
            print(f"{name:<20}{med:>8.3f} s")
        print(f"ratio planner (pool) / SimpleITK = {results['planner, pool'] / results['SimpleITK']:.2f}; "
              f"pool speed-up over 1 thread = {results['planner, 1 thread'] / results['planner, pool']:.2f}x")


if __name__ == "__main__":
    sys.exit(main())
