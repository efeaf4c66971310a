"""The VTK scene and the procedure-room views, rendered offscreen.

What a person checks by eye, checked on the pixels: the image is not blank and the right way
round, the target marker sits where the geometry puts it (expected pixels computed here from
the view's own camera parameters, not through VTK's matrices), the needle is drawn between its
entry and the target, and structures carry their class colours.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from conftest import CHEST_CT
from planner.anatomy import StructureSet, load_structures
from planner.anatomy.registry import StructureClass, colour_of
from planner.demo import demo_cases
from planner.images import Image, load_image
from planner.images.reslice import window as apply_window
from planner.scene import Case, RiskMap, Scene, case_from_objects, render_views
from planner.scene import geometry as G
from planner.scene import views as V
from planner.scene.needles import CHOSEN, TARGET, target_actor
from planner.scene.riskmap import categories
from planner.scene.slices import SLICE_WINDOWS
from planner.scene.surfaces import mask_mesh
from planner.scene.vtkutil import polydata_points
import planner

SIZE = (640, 480)


# --- fixtures: one scene per case, built once --------------------------------------------------
def _case(cid: str):
    return next(c for c in demo_cases() if c.id == cid)


@pytest.fixture(scope="module")
def thorax(tmp_path_factory):
    """The demo thorax, planned (lung biopsy) into a plan folder, and its scene."""
    c = _case("thorax")
    out = tmp_path_factory.mktemp("thorax_plan")
    plan = planner.plan(c.ct, procedure=c.info["procedure"], structures=c.folder / c.info["structures"],
                        target_label=c.info["target"]["label"], n=3)
    plan.write(out)
    assert plan.status == "ok"
    s = plan.session
    case = case_from_objects(s.image, s.structures, plan.to_json(), plan.results[0].risk_map, title="demo thorax")
    return out, Scene(case)


@pytest.fixture(scope="module")
def knee():
    """The demo knee: CT and structures, no plan (no knee preset yet)."""
    c = _case("knee")
    ct = load_image(c.ct)
    sset = load_structures(c.folder / c.info["structures"], ct)
    return Scene(Case(ct, sset, target=np.array(c.target_lps), target_label=c.info["target"]["label"],
                      title="demo knee"))


@pytest.fixture(scope="module")
def chest(tmp_path_factory):
    """The real chest CT, lung biopsy of the right-lung lesion (automatic segmentation)."""
    out = tmp_path_factory.mktemp("chest_plan")
    plan = planner.plan(CHEST_CT, procedure="lung-biopsy", seed="-82,82,-8", n=2)
    plan.write(out)
    assert plan.status == "ok"
    s = plan.session
    return out, Scene(case_from_objects(s.image, s.structures, plan.to_json(), plan.results[0].risk_map))


# --- helpers -----------------------------------------------------------------------------------
def colour_mask(rgb: np.ndarray, colour, tol: int = 12) -> np.ndarray:
    return np.all(np.abs(rgb.astype(int) - np.array(colour)) <= tol, axis=2)


def marker_centre(rgb: np.ndarray, colour=TARGET) -> np.ndarray:
    """(col, row) centroid of the largest blob of a marker colour."""
    m = colour_mask(rgb, colour, 40)
    lab, n = ndimage.label(m)
    assert n, "marker colour not found in the image"
    sizes = ndimage.sum(m, lab, range(1, n + 1))
    rows, cols = np.nonzero(lab == 1 + int(np.argmax(sizes)))
    return np.array([cols.mean(), rows.mean()])


def assert_not_blank(rgb: np.ndarray) -> None:
    grey = rgb.mean(axis=2)
    assert grey.std() > 15, "image looks blank"
    assert (grey > 5).mean() > 0.2, "image mostly black"


def pinhole(view: V.View, points: np.ndarray) -> np.ndarray:
    """Our own perspective projection from the camera's position, focal point, up and view angle."""
    cam = view.base.GetActiveCamera()
    pos, foc, up = (np.array(x) for x in (cam.GetPosition(), cam.GetFocalPoint(), cam.GetViewUp()))
    w, h = view.window.GetSize()
    dop = (foc - pos) / np.linalg.norm(foc - pos)
    up = up - (up @ dop) * dop
    up /= np.linalg.norm(up)
    right = np.cross(dop, up)
    d = np.atleast_2d(points) - pos
    f = (h / 2.0) / np.tan(np.radians(cam.GetViewAngle() / 2.0))
    x, y, z = d @ right, d @ up, d @ dop
    return np.c_[(w - 1) / 2.0 + f * x / z, (h - 1) / 2.0 - f * y / z]


def expected_pixel(view: V.View, point) -> np.ndarray:
    p = np.asarray(point, float)[None]
    return (view.canvas.pixel(p) if view.canvas is not None else pinhole(view, p))[0]


def needle_coverage(rgb: np.ndarray, a: np.ndarray, b: np.ndarray, radius: int = 2) -> float:
    """Share of points along the segment a-b (pixels) with the needle colour within ``radius``."""
    m = ndimage.binary_dilation(colour_mask(rgb, CHOSEN, 30), iterations=radius)
    t = np.linspace(0.08, 0.92, 60)
    pts = np.rint(a + t[:, None] * (b - a)).astype(int)
    inside = (pts[:, 0] >= 0) & (pts[:, 0] < rgb.shape[1]) & (pts[:, 1] >= 0) & (pts[:, 1] < rgb.shape[0])
    assert inside.all(), "the needle runs out of the image"
    return float(m[pts[:, 1], pts[:, 0]].mean())


# --- pure geometry -----------------------------------------------------------------------------
def test_frames_are_rotations_and_follow_the_radiological_convention():
    ax = G.standard_frame("axial", (0, 0, 0))
    assert np.allclose(ax.right, [1, 0, 0]) and np.allclose(ax.up, [0, -1, 0])  # patient left on screen right, anterior up
    cor = G.standard_frame("coronal", (0, 0, 0))
    assert np.allclose(cor.right, [1, 0, 0]) and np.allclose(cor.up, [0, 0, 1])
    sag = G.standard_frame("sagittal", (0, 0, 0))
    assert np.allclose(sag.right, [0, 1, 0]) and np.allclose(sag.up, [0, 0, 1])  # anterior on the left
    e, t = np.array([-150.0, -30.0, 60.0]), np.array([-80.0, -10.0, 40.0])
    for f in (G.planning_frame(e, t), G.progression_frame(e, t), G.bullseye_frame(e, t)):
        m = np.c_[f.right, f.up, -f.dop]
        assert np.allclose(m.T @ m, np.eye(3), atol=1e-9) and np.isclose(np.linalg.det(m), 1.0)
    pf = G.planning_frame(e, t)
    d = (t - e) / np.linalg.norm(t - e)
    assert abs(pf.dop @ d) < 1e-9  # the needle lies in the planning plane
    # closest to axial: no other plane holding the needle has a normal nearer the z axis
    for ang in np.linspace(0, np.pi, 37):
        other = np.cos(ang) * pf.dop + np.sin(ang) * np.cross(d, pf.dop)
        assert abs(other[2]) <= abs(pf.dop[2]) + 1e-9
    # an axial needle: the planning plane is the axial plane itself
    assert np.allclose(G.planning_frame(np.array([0, -100.0, 0]), np.zeros(3)).dop, [0, 0, 1])
    pr = G.progression_frame(e, t)
    assert abs(pr.dop @ d) < 1e-9 and abs(pr.dop @ pf.dop) < 1e-9
    assert np.allclose(G.bullseye_frame(e, t).dop, d)


def test_angles_and_depth_marks_by_hand():
    a = G.needle_angles(np.array([0.0, -100.0, 0.0]), np.array([100.0, 0.0, 0.0]))  # 45 deg in axial plane
    assert np.isclose(a.from_vertical_deg, 45.0) and np.isclose(a.craniocaudal_deg, 0.0)
    assert np.isclose(a.depth_mm, np.sqrt(2) * 100) and a.lateral == "left" and a.vertical == "posterior"
    b = G.needle_angles(np.array([0.0, 0.0, 0.0]), np.array([0.0, 100.0, -100.0]))
    assert np.isclose(b.from_vertical_deg, 0.0) and np.isclose(b.craniocaudal_deg, -45.0)
    m = G.depth_marks(np.zeros(3), np.array([0.0, 0.0, 35.0]))
    assert np.allclose(m[:, 2], [10, 20, 30])


def test_angles_agree_with_the_plan(thorax):
    _, scene = thorax
    for p in scene.case.paths:
        a = G.needle_angles(p.entry, p.target)
        assert abs(a.from_vertical_deg - p.info["angle_from_vertical_deg"]) < 0.3
        assert abs(a.craniocaudal_deg - p.info["craniocaudal_deg"]) < 0.3
        assert abs(a.depth_mm - p.info["length_mm"]) < 0.3


def test_surface_lands_on_the_voxels_whatever_the_orientation():
    """A ball on a permuted, flipped, anisotropic grid: its surface sits at its radius in LPS."""
    aff = np.array([[0.0, 0.0, -1.5, 40.0],   # k -> -x
                    [0.8, 0.0, 0.0, -20.0],   # i -> +y
                    [0.0, -1.2, 0.0, 60.0],   # j -> -z
                    [0, 0, 0, 1.0]])
    shape = (40, 60, 70)
    ct = Image(np.zeros(shape, np.int16), aff)
    centre = np.array([10.0, 5.0, 30.0])
    kji = np.indices(shape).reshape(3, -1).T
    lps = ct.ijk_to_lps(kji[:, ::-1].astype(float))
    ball = (np.linalg.norm(lps - centre, axis=1) <= 18.0).reshape(shape)
    sset = StructureSet.for_image(ct)
    sset.add("ball", ball, cls="target")
    pts = polydata_points(mask_mesh(sset["ball"], aff))
    r = np.linalg.norm(pts - centre, axis=1)
    assert abs(np.median(r) - 18.0) < 0.8 and r.max() < 20.0 and r.min() > 16.0
    assert np.allclose(pts.mean(axis=0), centre, atol=0.5)


def test_risk_map_categories():
    rm = RiskMap(np.zeros((4, 3)), np.array([1.0, np.nan, np.nan, 2.0]),
                 np.array(["", "clearance:bone", "insertion_angle", ""]))
    assert categories(rm).tolist() == [0, 1, 2, 0]


# --- rendered views ----------------------------------------------------------------------------
def _check_target_and_needle(view: V.View, rgb: np.ndarray, needle: bool = True, tol_px: float = 3.0) -> None:
    path = view.info.get("path")
    target = path.target if path is not None else view.info["target"]
    want = expected_pixel(view, target)
    got = marker_centre(rgb)
    assert np.linalg.norm(got - want) <= tol_px, f"{view.name}: target drawn at {got}, geometry says {want}"
    # VTK's own projection agrees with ours
    assert np.linalg.norm(view.pixel_of(np.asarray(target)[None])[0] - want) < 0.6
    if needle and path is not None:
        a, b = (expected_pixel(view, p) for p in (path.entry, path.target))
        assert needle_coverage(rgb, a, b) > 0.85, f"{view.name}: needle not drawn between entry and target"


def _render_report_views(scene: Scene) -> dict[str, tuple[V.View, np.ndarray]]:
    out = {}
    for name in V.REPORT_VIEWS:
        view = V.build_view(scene, name, SIZE)
        rgb = view.render()
        view.close()
        assert rgb.shape == (SIZE[1], SIZE[0], 3)
        assert_not_blank(rgb)
        if name == "overview_3d":
            view.info["path"] = scene.case.chosen
        out[name] = (view, rgb)
    return out


def _check_report_views(scene: Scene) -> None:
    views = _render_report_views(scene)
    for name in ("planning_slice", "progression", "overview_3d"):
        view, rgb = views[name]
        _check_target_and_needle(view, rgb)
    view, rgb = views["bullseye"]
    _check_target_and_needle(view, rgb, needle=False)
    # entry over target: both project to the centre, where the needle shows end-on
    path = scene.case.chosen
    e, t = (expected_pixel(view, p) for p in (path.entry, path.target))
    assert np.linalg.norm(e - t) < 0.5
    c = np.rint(t).astype(int)
    assert colour_mask(rgb[c[1] - 2:c[1] + 3, c[0] - 2:c[0] + 3], CHOSEN, 30).any()
    # planning slice: nearest structures labelled, angles as the plan says
    ps = views["planning_slice"][0]
    assert ps.info["labelled"], "no structure labelled in the planning slice"
    assert abs(ps.info["angles"].from_vertical_deg - path.info["angle_from_vertical_deg"]) < 0.3


def test_demo_thorax_views(thorax):
    _check_report_views(thorax[1])


def test_ct_in_the_views_is_the_ct_at_those_positions(thorax):
    """With the overlays removed, each pixel shows the CT value at the LPS point under it."""
    _, scene = thorax
    ct = scene.case.ct
    for view in (V.planning_slice(scene, SIZE), V.orthogonal_view(scene, "axial", SIZE),
                 V.orthogonal_view(scene, "sagittal", SIZE)):
        view.overlay.RemoveAllViewProps()
        grey = view.render().mean(axis=2)
        view.close()
        c = view.canvas
        rows, cols = np.mgrid[20:SIZE[1] - 20:7, 20:SIZE[0] - 20:7]
        pts = np.array([c.world(cc, rr) for cc, rr in zip(cols.ravel(), rows.ravel())])
        ijk = ct.lps_to_ijk(pts)
        inside = np.all((ijk > 0.5) & (ijk < np.array(ct.size_ijk) - 1.5), axis=1)
        hu = ndimage.map_coordinates(ct.voxels.astype(float), ijk[inside][:, ::-1].T, order=1)
        want = apply_window(hu, *SLICE_WINDOWS["lung"]).astype(float)
        got = grey[rows.ravel()[inside], cols.ravel()[inside]]
        assert inside.sum() > 500
        assert np.corrcoef(want, got)[0, 1] > 0.95, f"{view.name}: the CT shown is not the CT at these positions"
        assert np.median(np.abs(want - got)) < 6


def test_structure_outlines_take_their_class_colours(thorax):
    _, scene = thorax
    view = V.orthogonal_view(scene, "axial", SIZE, show_paths=False)
    rgb = view.render()
    view.close()
    sset = scene.case.structures
    f = view.canvas.frame
    for cls in (StructureClass.VESSEL, StructureClass.BONE, StructureClass.AIRWAY, StructureClass.TARGET):
        present = [s for s in sset.by_class(cls)
                   if s.name in scene.meshes and _crosses(sset, s.name, f.focal[2])]
        if not present:
            continue
        assert colour_mask(rgb, colour_of(cls), 3).sum() >= 15, f"no {cls.value} outline in its class colour"


def _crosses(sset: StructureSet, name: str, z: float) -> bool:
    s = sset[name]
    k = (z - sset.affine[2, 3]) / sset.affine[2, 2]
    kk = int(round(k)) - s.offset[0]
    return 0 <= kk < s.mask.shape[0] and bool(s.mask[kk].any())


def test_overview_colours_follow_the_classes(thorax):
    """Lit surfaces keep their class's hue: vessels red, lungs and airways blue."""
    _, scene = thorax
    view = V.overview_3d(scene, SIZE, volume=None, risk_map=False, alternatives=False)
    layer = view.info["layer"]
    for c in layer.present_classes():
        layer.set_class_opacity(c, 1.0)
        layer.set_class_visible(c, c == StructureClass.VESSEL)
    rgb = view.render().astype(float)
    view.close()
    red = colour_of(StructureClass.VESSEL)
    chroma = rgb / np.maximum(rgb.sum(axis=2, keepdims=True), 1)
    want = np.array(red) / sum(red)
    near = np.linalg.norm(chroma - want, axis=2) < 0.03
    assert near.sum() > 500, "vessels are not drawn in the vessel colour"


def test_render_views_from_the_plan_folder(thorax):
    folder, _ = thorax
    out = render_views(folder, folder, size=(320, 240), names=["planning_slice", "overview_3d"])
    from PIL import Image as PILImage

    assert set(out) == {"planning_slice", "overview_3d"}
    for name, p in out.items():
        assert p == folder / "images" / f"{name}.png"
        assert PILImage.open(p).size == (320, 240)


def test_demo_knee_scene_without_a_plan(knee, tmp_path):
    out = render_views(knee, tmp_path, size=SIZE)
    assert set(out) == {"overview_3d", "slice_axial", "slice_coronal", "slice_sagittal"}  # no trajectory: no planning views
    for plane in ("axial", "coronal", "sagittal"):
        view = V.orthogonal_view(knee, plane, SIZE)
        rgb = view.render()
        view.close()
        assert_not_blank(rgb)
        view.info["target"] = knee.case.target
        _check_target_and_needle(view, rgb, needle=False)
    view = V.overview_3d(knee, SIZE)
    rgb = view.render()
    view.close()
    assert_not_blank(rgb)
    view.info["target"] = knee.case.target
    _check_target_and_needle(view, rgb, needle=False)
    # the effusion (fluid) and bone outlines carry their class colours in the sagittal slice
    view = V.orthogonal_view(knee, "sagittal", SIZE)
    rgb = view.render()
    view.close()
    assert colour_mask(rgb, colour_of(StructureClass.FLUID), 3).sum() >= 15
    assert colour_mask(rgb, colour_of(StructureClass.BONE), 3).sum() >= 15


@pytest.mark.shared_data
def test_chest_ct_lung_biopsy_views(chest):
    _check_report_views(chest[1])


@pytest.mark.shared_data
def test_chest_ct_axial_slice_is_radiological(chest):
    """The lesion in the right lung shows on the image's left; the spine at the bottom."""
    _, scene = chest
    view = V.orthogonal_view(scene, "axial", SIZE, show_paths=False)
    view.overlay.RemoveAllViewProps()
    view.overlay.AddActor(target_actor(scene.case.target))
    rgb = view.render()
    view.close()
    col, row = marker_centre(rgb)
    assert col < SIZE[0] / 2  # patient's right on the image's left
    grey = rgb.mean(axis=2)
    h = SIZE[1]
    # bone (brightest in the lung window) of the spine lies in the lower (posterior) half, mid-line
    spine = grey[:, SIZE[0] // 2 - 20:SIZE[0] // 2 + 20]
    bright_rows = np.nonzero(spine.max(axis=1) > 250)[0]
    assert bright_rows.size and np.median(bright_rows) > h / 2
