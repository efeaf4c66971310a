"""Pull of the 141-slice chest CT from a local Orthanc: this product's C-GET (and C-MOVE, and
WADO-RS) against dcmtk's ``getscu`` for the same series, side by side in one run.

    .venv/bin/python benchmarks/pacs.py [--repeat 3]

Orthanc (Debian ``orthanc``, ``orthanc-dicomweb``) is started on loopback ports with a temporary
storage; the series is stored through its REST API once. Each tool pulls the series ``--repeat``
times, alternating; the medians are printed with the ratio to getscu. Goal (PACS issue): a C-GET
pull at most 1.5 times getscu's time.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHEST = ROOT.parent / "shared" / "data" / "chest-ct" / "dicom"


def main() -> int:
    import pydicom

    from planner.pacs.config import load_config
    from planner.pacs.dimse import pull
    from planner.pacs.web import pull as web_pull
    from planner.testing.orthanc import free_port, start_orthanc, temporary_config

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    getscu = shutil.which("getscu")
    if not CHEST.is_dir() or getscu is None:
        print("needs the chest CT in ../shared/data and dcmtk's getscu", file=sys.stderr)
        return 2
    files = sorted(CHEST.iterdir())
    first = pydicom.dcmread(files[0], stop_before_pixels=True)
    study, series = str(first.StudyInstanceUID), str(first.SeriesInstanceUID)
    size_mb = sum(f.stat().st_size for f in files) / 1e6
    listen = free_port()
    server = start_orthanc(modalities={"planner": ("PLANNER", "127.0.0.1", listen)})
    tmp = Path(tempfile.mkdtemp(prefix="pacs-bench-"))
    try:
        server.store_files(files)
        cfg = load_config(temporary_config(tmp, server, listen_port=listen))
        node = cfg.node("pacs")
        times: dict[str, list[float]] = {"getscu": [], "planner C-GET": [], "planner C-MOVE": [],
                                         "planner WADO-RS": []}
        for n in range(args.repeat):
            out = tmp / f"getscu{n}"
            out.mkdir()
            t = time.perf_counter()
            subprocess.run([getscu, "-aet", "PLANNER", "-aec", server.ae_title, "-S", "-k", "QueryRetrieveLevel=SERIES",
                            "-k", f"StudyInstanceUID={study}", "-k", f"SeriesInstanceUID={series}", "-od", str(out),
                            "127.0.0.1", str(server.dicom_port)], check=True, capture_output=True)
            times["getscu"].append(time.perf_counter() - t)
            assert len(list(out.iterdir())) == len(files), "getscu did not get the whole series"
            for name, via in (("planner C-GET", "get"), ("planner C-MOVE", "move")):
                t = time.perf_counter()
                got = pull(cfg, node, series, tmp / f"{via}{n}", via=via)
                times[name].append(time.perf_counter() - t)
                assert len(got) == len(files)
            t = time.perf_counter()
            got = web_pull(node, series, tmp / f"web{n}")
            times["planner WADO-RS"].append(time.perf_counter() - t)
            assert len(got) == len(files)
        base = statistics.median(times["getscu"])
        print(f"chest CT: {len(files)} instances, {size_mb:.0f} MB, from Orthanc on loopback, {args.repeat} runs each")
        for name, ts in times.items():
            m = statistics.median(ts)
            print(f"  {name:16s} median {m:5.2f} s  ({size_mb / m:5.0f} MB/s)  ratio to getscu {m / base:4.2f}")
        ratio = statistics.median(times["planner C-GET"]) / base
        print(f"goal: C-GET at most 1.5 x getscu: {'met' if ratio <= 1.5 else 'NOT met'} ({ratio:.2f})")
        print("  (this product's pull also lists the series' instances by C-FIND first, to verify it complete)")
    finally:
        server.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
