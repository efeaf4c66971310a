"""The plan's surfaces kept in its folder, and the 3D scene as one offline HTML page.

``planner plan`` writes ``scene3d.html`` beside the report (linked from ``report.html``): it
must open from the disk in a browser with no server and no network and show the scene. The
surfaces meshed for the report are kept in ``surfaces/`` so the viewer and the web review
reopen without remeshing; a cache that no longer matches the structures is never used.
"""

from __future__ import annotations

import io
import json
import re

import numpy as np
import pytest

from conftest import require_tool
from planner.cli.main import main
from planner.demo import demo_cases
from planner.scene import Scene, load_case
from planner.scene import mesh_cache
from planner.scene.surfaces import build_meshes


@pytest.fixture(scope="module")
def knee_plan(tmp_path_factory):
    case = next(c for c in demo_cases() if c.id == "knee")
    out = tmp_path_factory.mktemp("export") / "plan"
    assert main(["plan", "--ct", str(case.ct), "--structures", str(case.folder / case.info["structures"]),
                 "--target-label", case.info["target"]["label"], "--procedure", "knee-injection", "--n", "3",
                 "--out", str(out)]) == 0
    return out


def test_the_report_links_an_offline_scene_that_a_browser_draws(knee_plan, tmp_path):
    page = knee_plan / "scene3d.html"
    assert page.is_file()
    assert 'href="scene3d.html"' in (knee_plan / "report.html").read_text()
    text = page.read_text()
    assert "knee_effusion_right" in text and "#1 (chosen, yellow)" in text
    assert not re.search(r"""(src|href)=["']https?://""", text)  # nothing fetched from a network
    require_tool("chromium", "chromium")
    driver_path = require_tool("chromedriver", "chromium-driver")
    from PIL import Image as PILImage
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.support.ui import WebDriverWait

    o = Options()
    o.binary_location = require_tool("chromium", "chromium")
    for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1000,700",
              "--enable-unsafe-swiftshader", "--use-angle=swiftshader"):
        o.add_argument(a)
    d = webdriver.Chrome(service=Service(driver_path), options=o)
    try:
        d.get(page.as_uri())

        def drawn(drv):
            shot = np.asarray(PILImage.open(io.BytesIO(drv.get_screenshot_as_png())).convert("RGB")).astype(int)
            right = shot[:, shot.shape[1] // 2:]  # the scene's half (the text sits top left)
            return [shot] if right.std() > 15.0 else False

        shot = WebDriverWait(d, 60, poll_frequency=0.5).until(drawn, message="the offline scene was never drawn")[0]
        # the chosen needle (yellow) is in the picture
        yellow = (shot[..., 0] > 200) & (shot[..., 1] > 170) & (shot[..., 2] < 80)
        assert yellow.sum() > 20
        d.save_screenshot(str(tmp_path / "scene3d.png"))
    finally:
        d.quit()


def test_the_surfaces_are_kept_in_the_plan_folder_and_a_stale_cache_is_rebuilt(knee_plan):
    index = json.loads((knee_plan / "surfaces" / "index.json").read_text())
    from planner.atomic import file_sha256

    assert index["structures_sha256"] == file_sha256(knee_plan / "structures.seg.nrrd")
    case = load_case(knee_plan)
    cached = Scene(case).meshes
    built = build_meshes(case.structures)
    assert list(cached) == list(built)
    for name in built:  # the same surfaces as meshing again gives
        a = np.asarray([cached[name].GetPoint(i) for i in range(0, cached[name].GetNumberOfPoints(), 97)])
        b = np.asarray([built[name].GetPoint(i) for i in range(0, built[name].GetNumberOfPoints(), 97)])
        assert cached[name].GetNumberOfPolys() == built[name].GetNumberOfPolys()
        np.testing.assert_allclose(a, b, atol=1e-3)
    # a damaged file: the cache is not used, the surfaces are built again and stored again
    first = knee_plan / "surfaces" / "fine" / "000.vtp"
    first.write_bytes(first.read_bytes()[:200])
    assert mesh_cache.load(knee_plan, "fine") is None
    again = Scene(load_case(knee_plan)).meshes
    assert again[next(iter(built))].GetNumberOfPolys() == built[next(iter(built))].GetNumberOfPolys()
    assert mesh_cache.load(knee_plan, "fine") is not None
    # other structures (the file changed): the old surfaces are never shown
    seg = knee_plan / "structures.seg.nrrd"
    seg.write_bytes(seg.read_bytes() + b"\n")
    assert mesh_cache.load(knee_plan, "fine") is None
