"""The web review (`planner serve`) of the chest CT's lung biopsy, in headless Chromium.

Usage: .venv/bin/python benchmarks/web.py [--opens 3] [--rotate-s 4]

Plans the chest CT's lung biopsy (automatic segmentation, not counted; the plan folder keeps its
surfaces as `planner plan` leaves it), starts `planner serve` on a loopback port as its own
process and lets its spare review process load its libraries, as on a server that runs all day.
Then prints:

1. time from opening a review URL to the first complete 3D frame in the browser (the view's
   image drawn, not blank), for plans opened for the first time (a new review process each:
   copies of the plan) and for a plan already open; goal under 3 s on 2 cores;
2. frames per second the browser receives while the 3D view is dragged round (remote rendering
   with level of detail: coarse surfaces and a smaller image while it moves); goal 15 or more;
3. side by side in this process, the server's own render time of one frame of the same scene
   while moving (level of detail) and still (full quality).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CHEST = ROOT.parent / "shared" / "data" / "chest-ct" / "dicom"
SERVE = "from planner.cli.main import main; import sys; sys.exit(main(sys.argv[1:]))"


def browser(size=(1280, 800)):
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    o = Options()
    o.binary_location = shutil.which("chromium") or "chromium"
    for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", f"--window-size={size[0]},{size[1]}"):
        o.add_argument(a)
    return webdriver.Chrome(service=Service(shutil.which("chromedriver") or "chromedriver"), options=o)


def view_std(d) -> float:
    from PIL import Image as PILImage

    box = d.find_element("id", "view3d-box")
    return float(np.asarray(PILImage.open(io.BytesIO(box.screenshot_as_png)).convert("L")).std())


def first_frame_s(d, url: str) -> float:
    from selenium.webdriver.support.ui import WebDriverWait

    t = time.perf_counter()
    d.get(url)
    WebDriverWait(d, 120, poll_frequency=0.05).until(
        lambda x: x.find_elements("css selector", "#view3d-box img") and view_std(x) > 12.0)
    return time.perf_counter() - t


def rotate_fps(d, seconds: float) -> tuple[float, int]:
    from selenium.webdriver.common.action_chains import ActionChains

    img = d.find_element("css selector", "#view3d-box img")
    d.execute_script("window.__frames = 0; new MutationObserver(() => window.__frames++)"
                     ".observe(arguments[0], {attributes: true, attributeFilter: ['src']});", img)
    steps = max(10, int(seconds / 0.02))
    chain = ActionChains(d, duration=0).move_to_element(img).click_and_hold()
    for i in range(steps):
        chain.move_by_offset(3 if (i // 60) % 2 == 0 else -3, 0).pause(0.02)
    t = time.perf_counter()
    chain.release().perform()
    dt = time.perf_counter() - t
    frames = int(d.execute_script("return window.__frames"))
    return frames / dt, frames


def server_render_times(plan_dir: Path, n: int = 20) -> tuple[float, float]:
    from planner.web.review import ReviewSession

    s = ReviewSession(plan_dir)
    cam = s.view.base.GetActiveCamera()
    out = []
    for moving in (True, False):
        s.set_moving(moving)
        s.window.Render()
        ts = []
        for _ in range(n):
            cam.Azimuth(2.0)
            t = time.perf_counter()
            s.window.Render()
            ts.append(time.perf_counter() - t)
        out.append(statistics.median(ts))
    return out[0], out[1]


def main() -> int:
    import planner

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--opens", type=int, default=3, help="plans opened for the first time (default 3)")
    ap.add_argument("--rotate-s", type=float, default=4.0, help="seconds of dragging the 3D view (default 4)")
    args = ap.parse_args()
    if not CHEST.is_dir():
        print(f"chest CT not found at {CHEST}", file=sys.stderr)
        return 2
    if not (shutil.which("chromium") and shutil.which("chromedriver")):
        print("chromium and chromedriver are needed (Debian: chromium chromium-driver)", file=sys.stderr)
        return 2
    tmp = Path(tempfile.mkdtemp(prefix="web-bench-"))
    proc = None
    d = None
    try:
        t = time.perf_counter()
        plan = planner.plan(CHEST, procedure="lung-biopsy", target=(-82, 82, -8), n=3)
        plan.write(tmp / "root" / "chest-0")
        for i in range(1, args.opens):
            shutil.copytree(tmp / "root" / "chest-0", tmp / "root" / f"chest-{i}")
        print(f"(planning the chest CT and copying it {args.opens} times, not counted: {time.perf_counter() - t:.1f} s)")
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        proc = subprocess.Popen([sys.executable, "-c", SERVE, "serve", str(tmp / "root"), "--port", "0"],
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
        url = re.search(r"at (http://\S+)", proc.stdout.readline()).group(1)  # type: ignore[union-attr]
        keys = [r["key"] for r in json.load(urllib.request.urlopen(url + "api/worklist"))]
        d = browser()
        times = []
        for key in keys[:args.opens]:
            time.sleep(8.0)  # the spare review process loads its libraries (as on a server running all day)
            times.append(first_frame_s(d, f"{url}case/{key}/"))
        again = [first_frame_s(d, f"{url}case/{keys[0]}/") for _ in range(2)]
        print("1. opening a review URL to the first complete 3D frame (chest CT, 1280x800 window):")
        print(f"   first open of a plan (new review process): {', '.join(f'{x:.2f}' for x in times)} s; "
              f"median {statistics.median(times):.2f} s")
        print(f"   the same plan again (its review running):  {', '.join(f'{x:.2f}' for x in again)} s")
        print(f"   goal < 3 s: {'met' if statistics.median(times) < 3.0 else 'NOT met'}")
        fps, frames = rotate_fps(d, args.rotate_s)
        print(f"2. dragging the 3D view for about {args.rotate_s:g} s: {frames} frames received, {fps:.1f} frames/s "
              f"(goal >= 15: {'met' if fps >= 15 else 'NOT met'})")
        d.quit()
        d = None
        moving, still = server_render_times(tmp / "root" / "chest-0")
        print("3. the server's render of one frame of this scene (median of 20, 900x700):")
        print(f"   moving (level of detail): {1000 * moving:.0f} ms ({1 / moving:.1f} frames/s); "
              f"still (full quality): {1000 * still:.0f} ms ({1 / still:.1f} frames/s)")
    finally:
        if d is not None:
            d.quit()
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=30)
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
