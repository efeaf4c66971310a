"""Render timings of the chest-CT lung-biopsy scene in the review viewer, offscreen, 800x600.

Usage: .venv/bin/python benchmarks/render.py [--plan DIR] [--size 800x600] [--frames 20]

Without --plan, the chest CT in ../shared/data is planned first (lung biopsy of the right-lung
lesion, seed -82,82,-8 LPS) into a temporary folder; that planning is not part of the figures.

Prints the time to the first rendered frame (loading the plan folder, building the surfaces
and the volume, first render) and, side by side, frames per second while rotating the 3D view
and while scrolling the axial slice, with the interactive level of detail (coarse ray casting,
coarse meshes and outlines; while a slice scrolls the unchanged 3D view is not re-rendered, as in
the viewer) and in full quality (everything re-rendered each frame), and the full-quality still
frame time.
Goal (issue 5): 10 frames per second or more while interacting, on 2 cores without a GPU.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHEST = ROOT.parent / "shared" / "data" / "chest-ct" / "dicom"


def fps(render, step, frames: int) -> float:
    render()  # settle (first render after a change of detail)
    t = time.perf_counter()
    for _ in range(frames):
        step()
        render()
    return frames / (time.perf_counter() - t)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--plan", help="a plan folder (default: plan the chest CT into a temporary folder)")
    ap.add_argument("--size", default="800x600")
    ap.add_argument("--frames", type=int, default=20)
    args = ap.parse_args()
    w, h = (int(x) for x in args.size.split("x"))

    from planner.scene import Scene, load_case
    from planner.viewer import Viewer

    tmp = None
    plan_dir = args.plan
    if plan_dir is None:
        if not CHEST.is_dir():
            print(f"chest CT not found at {CHEST}; give --plan DIR", file=sys.stderr)
            return 2
        import planner

        tmp = tempfile.TemporaryDirectory(prefix="render-bench-")
        plan_dir = tmp.name
        t = time.perf_counter()
        planner.plan(CHEST, procedure="lung-biopsy", seed="-82,82,-8", n=3).write(plan_dir)
        print(f"(planning the chest CT, not counted: {time.perf_counter() - t:.1f} s)")

    t0 = time.perf_counter()
    case = load_case(plan_dir)
    t_load = time.perf_counter() - t0
    scene = Scene(case)
    t = time.perf_counter()
    scene.meshes
    t_fine = time.perf_counter() - t
    t = time.perf_counter()
    scene.coarse_meshes
    t_coarse = time.perf_counter() - t
    t = time.perf_counter()
    viewer = Viewer(scene, size=(w, h))
    viewer.set_interactive(False)
    viewer.window.Render()
    t_first_render = time.perf_counter() - t
    t_first = time.perf_counter() - t0

    cam = viewer.views["3d"].base.GetActiveCamera()
    render = viewer.window.Render
    results = {}
    for mode, interactive in (("interactive LOD", True), ("full quality", False)):
        viewer.set_interactive(interactive)
        rot = fps(render, lambda: cam.Azimuth(3.0), args.frames)
        direction = [1]

        def slice_step() -> None:
            # as the mouse wheel does: interactive detail, the 3D view kept as drawn
            o = viewer.scroll_interactive("axial", direction[0]) if interactive else viewer.scroll("axial", direction[0])
            lo = case.ct.corners()[:, 2].min()
            hi = case.ct.corners()[:, 2].max()
            if o[2] >= hi - 2 or o[2] <= lo + 2:
                direction[0] = -direction[0]

        sl = fps(render, slice_step, args.frames)
        results[mode] = (rot, sl)
        viewer.still()
    viewer.set_interactive(False)
    stills = []
    for _ in range(3):
        cam.Azimuth(3.0)
        t = time.perf_counter()
        render()
        stills.append(time.perf_counter() - t)

    print(f"chest CT {case.ct.size_ijk} voxels, {len(scene.meshes)} structure surfaces, "
          f"{len(case.paths)} trajectories; viewer layout (3D + axial, coronal, sagittal, planning slice) at {w}x{h}")
    print(f"time to first frame: {t_first:.1f} s  (load plan folder {t_load:.1f} s, surfaces {t_fine:.1f} s, "
          f"coarse surfaces {t_coarse:.1f} s, scene + first render {t_first_render:.1f} s)")
    print(f"{'':<18}{'rotate 3D (fps)':>17}{'scroll slices (fps)':>21}")
    for mode, (rot, sl) in results.items():
        print(f"{mode:<18}{rot:>17.1f}{sl:>21.1f}")
    print(f"full-quality still frame: {statistics.median(stills):.2f} s (median of 3)")
    ok = min(results["interactive LOD"]) >= 10.0
    print(f"goal >= 10 fps interacting: {'met' if ok else 'NOT met'}")
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
