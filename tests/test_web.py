"""`planner serve` in a real browser: headless Chromium driven by Selenium, against the server
started as its own process on a loopback port, with real plans of the chest CT (lung biopsy)
and of the demo knee (injection).

What a user needs of it: the worklist shows the cases; a review's 3D view is drawn and the
target appears where the camera puts it (computed here from the camera, not read from the
page's image); choosing trajectory #2 changes the text and the view; a check scan written
while the page is open appears; two browsers at once each get their own plan; the token is
asked for beyond loopback; nothing outside the plans is served. Screenshots of the pages go
to out/test-artifacts/web/ (1280x800 and a tablet's 820x1180).
"""

from __future__ import annotations

import http.client
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import planner
from planner.demo import demo_cases
from conftest import require_tool

pytestmark = [pytest.mark.shared_data, pytest.mark.slow]

ARTEFACTS = Path(__file__).resolve().parents[1] / "out" / "test-artifacts" / "web"
WAIT_S = 90  # the longest any page may take to show what is asked of it (a fresh review process)
SERVE = "from planner.cli.main import main; import sys; sys.exit(main(sys.argv[1:]))"


def _start_server(root: Path, *extra: str) -> tuple[subprocess.Popen, str]:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-c", SERVE, "serve", str(root), "--port", "0", *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    first = proc.stdout.readline()
    m = re.search(r"at (http://\S+)", first)
    if not m:
        proc.kill()
        raise AssertionError(f"planner serve did not announce its address: {first!r} {proc.stderr.read()[-2000:]}")
    return proc, m.group(1)


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture(scope="module")
def root(tmp_path_factory, chest_segmented):
    root = tmp_path_factory.mktemp("serve")
    ct, sset = chest_segmented
    chest = planner.plan(ct, procedure="lung-biopsy", target=[-82.0, 82.0, -8.0], structures=sset, n=3)
    assert chest.trajectories, "the chest CT's lung biopsy must have a trajectory for these tests"
    chest.write(root / "ward-a" / "chest")
    knee = next(c for c in demo_cases() if c.id == "knee")
    kplan = planner.plan(knee.ct, procedure="knee-injection", target_label=knee.info["target"]["label"],
                         structures=knee.folder / knee.info["structures"], n=3)
    kplan.write(root / "knee")
    broken = root / "broken"
    broken.mkdir()
    (broken / "plan.json").write_text("{ not json")
    return {"root": root, "chest": root / "ward-a" / "chest", "knee": root / "knee", "chest_plan": chest,
            "ct": ct}


@pytest.fixture(scope="module")
def server(root):
    proc, url = _start_server(root["root"])
    yield url
    _stop(proc)


def _browser(size=(1280, 800)):
    require_tool("chromium", "chromium")
    driver_path = require_tool("chromedriver", "chromium-driver")
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    o = Options()
    o.binary_location = require_tool("chromium", "chromium")
    for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", f"--window-size={size[0]},{size[1]}",
              "--hide-scrollbars"):
        o.add_argument(a)
    return webdriver.Chrome(service=Service(driver_path), options=o)


@pytest.fixture(scope="module")
def browser():
    d = _browser()
    yield d
    d.quit()


def _wait(driver, condition, what: str):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, WAIT_S, poll_frequency=0.2).until(lambda d: condition(d), message=what)


def _keys(server_url: str) -> dict[str, str]:
    import urllib.request

    with urllib.request.urlopen(server_url + "api/worklist") as r:
        rows = json.load(r)
    return {row["procedure"]: row["key"] for row in rows if row["status"] != "unreadable"}


def _view_png(driver) -> np.ndarray:
    from PIL import Image as PILImage

    box = driver.find_element("id", "view3d-box")
    return np.asarray(PILImage.open(io.BytesIO(box.screenshot_as_png)).convert("RGB")).astype(int)


def _click(driver, element_id: str) -> None:
    """Click a button as a finger would: scrolled to the middle of the screen first (the page's
    header stays on top and would take a click at the very top)."""
    e = driver.find_element("id", element_id)
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", e)
    e.click()


def _frame(driver) -> int:
    return int(driver.find_element("id", "frame").get_attribute("textContent") or 0)


def _open_review(driver, url: str) -> None:
    driver.get(url)
    # drawn: the streamed image is in the page and is not one flat colour
    _wait(driver, lambda d: d.find_elements("css selector", "#view3d-box img")
          and _view_png(d).std() > 12.0, "the 3D view was never drawn")


def _project(cam: dict, point, size) -> tuple[float, float]:
    """Pixel (column, row from the top) of ``point`` through a pinhole camera (VTK's vertical view angle)."""
    pos, focal, up = (np.asarray(cam[k], float) for k in ("position", "focal_point", "view_up"))
    d = (focal - pos) / np.linalg.norm(focal - pos)
    right = np.cross(d, up)
    right /= np.linalg.norm(right)
    upv = np.cross(right, d)
    v = np.asarray(point, float) - pos
    z = v @ d
    w, h = size
    f = (h / 2.0) / np.tan(np.radians(cam["view_angle"]) / 2.0)
    return w / 2.0 + f * (v @ right) / z, h / 2.0 - f * (v @ upv) / z


def test_worklist_lists_the_cases_newest_first_and_names_no_folder(server, browser, root):
    browser.get(server)
    _wait(browser, lambda d: len(d.find_elements("css selector", "tr.case")) == 3, "three rows")
    text = browser.find_element("tag name", "body").text
    assert "CT-guided percutaneous lung biopsy" in text and "knee" in text.lower()
    assert "unreadable plan" in text  # the broken plan.json is listed as such, not hidden, not fatal
    links = [a.get_attribute("href") for a in browser.find_elements("css selector", "a.open")]
    assert len(links) == 2
    for link in links:  # opaque keys only: no folder name in any address
        assert re.fullmatch(r".*/case/[0-9a-f]{20}/", link), link
        assert "chest" not in link and "knee" not in link and "ward" not in link
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(ARTEFACTS / "worklist-1280x800.png"))


def test_the_review_draws_the_scene_with_the_target_where_the_camera_puts_it(server, browser, root):
    key = _keys(server)["CT-guided percutaneous lung biopsy (coaxial core needle)"]
    _open_review(browser, f"{server}case/{key}/")
    cam = json.loads(browser.find_element("id", "camera-json").get_attribute("textContent"))
    np.testing.assert_allclose(cam["target"], [-82.0, 82.0, -8.0], atol=0.01)
    img = browser.find_element("css selector", "#view3d-box img")
    natural = browser.execute_script("return [arguments[0].naturalWidth, arguments[0].naturalHeight]", img)
    shown = img.size["width"], img.size["height"]
    col, row = _project(cam, cam["target"], natural)
    col, row = col * shown[0] / natural[0], row * shown[1] / natural[1]
    rgb = _view_png(browser)
    r = 7
    patch = rgb[int(row) - r:int(row) + r + 1, int(col) - r:int(col) + r + 1]
    magenta = (patch[..., 0] > 170) & (patch[..., 1] < 110) & (patch[..., 2] > 170)
    assert magenta.sum() >= 3, f"no target marker (magenta) within {r} px of the projected target at ({col:.0f}, {row:.0f})"
    # and not everywhere: the marker is small
    whole = (rgb[..., 0] > 170) & (rgb[..., 1] < 110) & (rgb[..., 2] > 170)
    assert whole.mean() < 0.02
    text = browser.find_element("id", "traj-text-1").text
    assert "#1 of 3" in text and "Entry slice: table position z" in text and "Needle" in text
    # room mode, readable from 2 m: the headline in large type, light on dark, big touch targets
    px = browser.execute_script("var e = document.getElementById('headline-1'), b = document.getElementById('next');"
                                "return [parseFloat(getComputedStyle(e).fontSize), getComputedStyle(e).color,"
                                " b.getBoundingClientRect().height]")
    assert px[0] >= 28 and px[2] >= 60, px
    assert min(int(c) for c in re.findall(r"\d+", px[1])[:3]) >= 200, px  # light text
    browser.save_screenshot(str(ARTEFACTS / "review-chest-1280x800.png"))


def test_choosing_trajectory_2_changes_the_text_and_the_view(server, browser, root):
    key = _keys(server)["CT-guided percutaneous lung biopsy (coaxial core needle)"]
    if f"case/{key}/" not in browser.current_url:
        _open_review(browser, f"{server}case/{key}/")
    _wait(browser, lambda d: d.find_elements("id", "slice-image")
          and (d.find_element("id", "slice-image").get_attribute("src") or "").startswith("data:image/png"),
          "the planning slice")
    before = _view_png(browser)
    slice_before = browser.find_element("id", "slice-image").get_attribute("src")
    frame = _frame(browser)
    _click(browser, "traj-2")
    _wait(browser, lambda d: d.find_element("id", "traj-text-2").is_displayed(), "trajectory #2's text")
    _wait(browser, lambda d: _frame(d) > frame, "a new 3D frame after the choice")
    _wait(browser, lambda d: np.abs(_view_png(d) - before).mean() > 0.05, "the 3D view changing")
    t2 = root["chest_plan"].trajectories[1]
    text = browser.find_element("id", "traj-text-2").text
    assert "#2 of 3" in text
    assert f"({t2.entry[0]:.1f}, {t2.entry[1]:.1f}, {t2.entry[2]:.1f})" in text  # its own entry point
    assert not browser.find_element("id", "traj-text-1").is_displayed()
    assert browser.find_element("id", "slice-image").get_attribute("src") != slice_before


def test_a_check_written_while_the_page_is_open_appears(server, browser, root, tmp_path):
    from planner.cli.main import main
    from planner.testing.dicom_write import write_image_as_dicom
    from planner.testing.needle_sim import simulate_check

    key = _keys(server)["CT-guided percutaneous lung biopsy (coaxial core needle)"]
    if f"case/{key}/" not in browser.current_url:
        _open_review(browser, f"{server}case/{key}/")
    assert browser.find_element("id", "no-checks").is_displayed()
    t = root["chest_plan"].trajectories[0]
    entry, target = np.asarray(t.entry), np.asarray(t.target)
    u = (target - entry) / np.linalg.norm(target - entry)
    ct = root["ct"]
    check, _ = simulate_check(ct, entry - 40.0 * u, entry + 0.7 * (target - entry), np.random.default_rng(5),
                              move_mm=2.0, move_deg=1.0, slab_mm=40.0)
    m = ct.meta
    write_image_as_dicom(check, tmp_path / "scan", meta=check.meta.replace(
        patient_name=m.patient_name, patient_id=m.patient_id, study_instance_uid=m.study_instance_uid),
        uid_seed="web-check")
    assert main(["check", str(root["chest"]), "--ct", str(tmp_path / "scan"), "--force"]) in (0, 3)
    doc = json.loads((root["chest"] / "checks" / "01" / "check.json").read_text())
    _wait(browser, lambda d: d.find_elements("id", "check-1"), "the new check on the open page")
    shown = browser.find_element("id", "check-1").text
    assert "Check 01" in shown
    assert str(doc["correction"]["action"]).replace("_", " ").upper() in shown
    assert f"{float(doc['deviation']['angle_deg']):.1f}" in shown
    browser.save_screenshot(str(ARTEFACTS / "review-chest-check-1280x800.png"))


def test_two_browsers_at_once_each_review_their_own_plan(server, browser, root):
    keys = _keys(server)
    chest = keys["CT-guided percutaneous lung biopsy (coaxial core needle)"]
    knee = next(v for k, v in keys.items() if "knee" in k.lower())
    _open_review(browser, f"{server}case/{chest}/")
    other = _browser((820, 1180))  # a tablet, upright
    try:
        _open_review(other, f"{server}case/{knee}/")
        assert "knee" in other.find_element("id", "procedure").text.lower()
        selected_chest = browser.find_element("css selector", "div.traj-text:not([style*='none'])").get_attribute("id")
        _click(other, "next")
        _wait(other, lambda d: d.find_element("id", "traj-text-2").is_displayed(), "the knee's #2")
        # the chest page did not move
        assert browser.find_element("css selector", "div.traj-text:not([style*='none'])").get_attribute("id") \
            == selected_chest
        assert "lung biopsy" in browser.find_element("id", "procedure").text.lower()
        other.save_screenshot(str(ARTEFACTS / "review-knee-tablet-820x1180.png"))
    finally:
        other.quit()


def _raw_get(url: str, path: str, headers: dict | None = None) -> tuple[int, bytes, dict]:
    from urllib.parse import urlsplit

    u = urlsplit(url)
    c = http.client.HTTPConnection(u.hostname, u.port, timeout=WAIT_S)
    c.putrequest("GET", path, skip_accept_encoding=True)  # the path exactly as given: no normalising
    for k, v in (headers or {}).items():
        c.putheader(k, v)
    c.endheaders()
    r = c.getresponse()
    return r.status, r.read(), dict(r.getheaders())


def test_nothing_outside_the_plans_is_served(server, root):
    key = _keys(server)["CT-guided percutaneous lung biopsy (coaxial core needle)"]
    status, body, _ = _raw_get(server, f"/case/{key}/files/images/bullseye.png")
    assert status == 200 and body[:8] == b"\x89PNG\r\n\x1a\n"
    for path in (f"/case/{key}/files/../../../../etc/passwd", f"/case/{key}/files/images/../plan.json",
                 f"/case/{key}/files/..%2f..%2f..%2fetc%2fpasswd", f"/case/{key}/files/plan.json",
                 f"/case/{key}/files/structures.seg.nrrd", f"/case/{key}/../../etc/passwd",
                 f"/case/{key}/..%2f..%2f..%2f..%2fetc%2fpasswd", "/../../etc/passwd", "/%2e%2e/%2e%2e/etc/passwd",
                 "/case/0000000000000000000a/", "/case/ward-a/chest/", "/etc/passwd",
                 f"/case/{key}/assets/../../../../etc/passwd", f"/case/{key}/assets/..%2f..%2fplan.json",
                 f"/case/{key}/__trame_vtk_0/../../../../etc/passwd", f"/case/{key}/vue.global.js/../plan.json"):
        status, body, _ = _raw_get(server, path)
        assert status in (400, 403, 404), (path, status)
        assert b"root:" not in body and b"series_instance_uid" not in body, path


def test_beyond_loopback_a_request_without_the_token_is_refused(root):
    proc, url = _start_server(root["root"], "--host", "0.0.0.0")
    try:
        m = re.search(r"\?token=([A-Za-z0-9_-]+)", url)
        assert m, f"no token in the announced address {url}"
        token = m.group(1)
        local = re.sub(r"//[^/:]+:", "//127.0.0.1:", url.split("?")[0])
        for path, headers in (("/", None), ("/api/worklist", None), ("/?token=wrong", None),
                              ("/", {"Cookie": "planner_token=wrong"})):
            status, body, _ = _raw_get(local, path, headers)
            assert status == 403, (path, status)
            assert b"CT-guided" not in body
        status, _, hdrs = _raw_get(local, f"/?token={token}")
        assert status == 302 and "token" not in hdrs.get("Location", "")  # the token leaves the address bar
        cookie = hdrs["Set-Cookie"]
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
        status, body, _ = _raw_get(local, "/", {"Cookie": cookie.split(";")[0]})
        assert status == 200 and b"CT-guided percutaneous lung biopsy" in body
    finally:
        _stop(proc)


def test_read_only_by_default(server, browser, root):
    key = _keys(server)["CT-guided percutaneous lung biopsy (coaxial core needle)"]
    if f"case/{key}/" not in browser.current_url:
        _open_review(browser, f"{server}case/{key}/")
    assert not browser.find_elements("id", "replan-box") and not browser.find_elements("id", "record-choice")


@pytest.fixture(scope="module")
def server_rw(root, tmp_path_factory):
    from planner.cli.main import main

    base = tmp_path_factory.mktemp("library")
    lib = base / "lib"
    knee = next(c for c in demo_cases() if c.id == "knee")  # an earlier knee injection, a little higher
    earlier = planner.plan(knee.ct, procedure="knee-injection", target=list(np.add(knee.target_lps, [0.0, 0.0, 4.0])),
                           structures=knee.folder / knee.info["structures"], side="right", n=2)
    earlier.write(base / "earlier-knee")
    assert main(["library", "add", str(base / "earlier-knee"), str(root["knee"]), str(root["chest"]),
                 "--library", str(lib)]) == 0
    proc, url = _start_server(root["root"], "--allow-replan", "--record-choices", "--library", str(lib))
    yield url
    _stop(proc)


def test_with_allow_replan_the_target_moves_and_is_planned_again_without_touching_the_plan(server_rw, browser, root):
    from planner.atomic import file_sha256

    before = file_sha256(root["knee"] / "plan.json")
    key = next(v for k, v in _keys(server_rw).items() if "knee" in k.lower())
    _open_review(browser, f"{server_rw}case/{key}/")
    # the case library's similar cases are listed beside the plan
    _wait(browser, lambda d: d.find_elements("css selector", "#similar .similar-case"), "the similar cases")
    assert "case " in browser.find_element("id", "similar").text
    # the choice of trajectory is recorded for the plan on file
    _click(browser, "traj-2")
    _wait(browser, lambda d: "#2" in d.find_element("id", "record-choice").text, "the record button for #2")
    _click(browser, "record-choice")
    _wait(browser, lambda d: d.find_elements("id", "choice") and "#2" in d.find_element("id", "choice").text,
          "the recorded choice")
    doc = json.loads((root["knee"] / "choice.json").read_text())
    assert doc["rank"] == 2 and doc["by"] == "web"
    # move the target 2 mm to the patient's left, then plan again
    start = json.loads(browser.find_element("id", "camera-json").get_attribute("textContent"))["target"]
    _click(browser, "move-L")
    _wait(browser, lambda d: "moved" in d.find_element("id", "message").text, "the target moved")
    _click(browser, "replan")
    _wait(browser, lambda d: "NOT SAVED" in d.find_element("id", "message").text
          or "NO SAFE" in d.find_element("id", "message").text, "the re-plan")
    assert "NOT SAVED" in browser.find_element("id", "message").text
    moved = json.loads(browser.find_element("id", "camera-json").get_attribute("textContent"))["target"]
    np.testing.assert_allclose(np.subtract(moved, start), [2.0, 0.0, 0.0], atol=1e-6)
    assert file_sha256(root["knee"] / "plan.json") == before  # the plan on file is unchanged
    # a choice is never recorded for trajectories that are not on file
    _click(browser, "record-choice")
    _wait(browser, lambda d: "not saved" in d.find_element("id", "message").text, "the refusal")
    assert json.loads((root["knee"] / "choice.json").read_text())["rank"] == 2


def test_bad_roots_and_a_taken_port_are_one_line_errors(root, tmp_path, capsys):
    import socket

    from planner.cli.main import main

    assert main(["serve", str(tmp_path / "missing")]) == 2
    (tmp_path / "a-file").write_text("x")
    assert main(["serve", str(tmp_path / "a-file")]) == 2
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["serve", str(root["root"]), "--port", str(port)]) == 2
    err = capsys.readouterr().err
    assert "not a folder" in err and f"cannot listen on 127.0.0.1:{port}" in err


def _copy_plan(src: Path, dst: Path, **image: str) -> Path:
    import shutil

    shutil.copytree(src, dst)
    doc = json.loads((dst / "plan.json").read_text())
    doc["image"].update(image)
    (dst / "plan.json").write_text(json.dumps(doc))
    return dst


def test_the_3d_view_comes_before_the_ct_and_a_ct_that_is_not_the_plans_is_said(root, tmp_path):
    """The review draws its 3D scene from the plan folder (structures, surfaces) and reads the CT
    after the first frame: then the CT is the one planned on (voxel hash) and the structures the
    same as a full load; a CT that is not the plan's shows no slice and says why."""
    from planner.errors import GeometryError
    from planner.images.image import ImageGrid
    from planner.scene import load_case
    from planner.web.review import ReviewSession

    s = ReviewSession(root["knee"])
    try:
        assert isinstance(s.case.ct, ImageGrid) and s.view.info["layer"].present_classes()
        with pytest.raises(GeometryError):
            s.case.ct.voxels  # noqa: B018 - a grid never passes for a scan (no blank slice)
        full = load_case(root["knee"])
        assert s.case.ct.shape == full.ct.shape and np.allclose(s.case.ct.affine, full.ct.affine)
        assert set(s.case.structures.names()) == set(full.structures.names())
        assert s.slice_images() and not s.ct_problem
        assert not isinstance(s.case.ct, ImageGrid) and s.case.ct.sha256 == full.ct.sha256
        for name in full.structures.names():
            assert int(s.case.structures.mask(name).sum()) == int(full.structures.mask(name).sum()), name
    finally:
        s.window.Finalize()
    other = _copy_plan(root["knee"], tmp_path / "other", sha256="0" * 64)
    s = ReviewSession(other)
    try:
        assert s.slice_images() == {}
        assert "not the one" in s.ct_problem and "planned on" in s.ct_problem
    finally:
        s.window.Finalize()


def test_the_page_loads_while_its_review_starts_and_a_review_that_cannot_start_says_why(root, tmp_path):
    """The index and the page's scripts come at once (the review starts meanwhile); the page asks
    the server whether its review is up: 204, or the 503 page with the reason."""
    import shutil

    plans = tmp_path / "plans"
    shutil.copytree(root["knee"], plans / "knee")
    gone = _copy_plan(root["knee"], plans / "gone", source=str(tmp_path / "no-such-ct"))
    (gone / "structures.seg.nrrd").unlink()  # nothing to draw without the CT: the review cannot start
    proc, url = _start_server(plans)
    try:
        import urllib.request

        rows = json.load(urllib.request.urlopen(url + "api/worklist", timeout=WAIT_S))
        assert len(rows) == 2
        for r in rows:
            status, body, _ = _raw_get(url, f"/case/{r['key']}/")
            assert status == 200 and b'rel="preload"' in body and b"__planner_status" in body
            status, js, _ = _raw_get(url, f"/case/{r['key']}/vue.global.js")
            assert status == 200 and len(js) > 10000
        status_of = {}
        for r in rows:
            status, body, _ = _raw_get(url, f"/case/{r['key']}/__planner_status")
            status_of[status] = body.decode("utf-8", "replace")
        assert set(status_of) == {204, 503}, status_of
        assert "could not start" in status_of[503] and "no-such-ct" in status_of[503]
    finally:
        _stop(proc)
