"""One plan's review page: a trame application around the plan's own VTK scene.

Run by ``planner serve`` as one process per open plan (trame keeps one server, and one state,
per process): every screen that opens the same plan shows the same review, so choosing a
trajectory on the tablet shows it on the wall monitor too. The process listens on loopback
only; ``planner serve`` is the one door to it.

The 3D view is the scene of ``planner view`` (:func:`planner.scene.views.overview_3d`: the
structure surfaces, every trajectory, the risk map, the check scans' needles) rendered here
with VTK and streamed as images (trame-vtk's remote view; coarse meshes and a smaller image
while it moves). The planning slice, the bull's-eye and the progression view are the
report's views of the selected trajectory. The text beside them is the report's own
(:mod:`planner.report.facts`). The 3D view is built from the plan folder (its structures and
surfaces) before the CT is read: the CT (about 1 s for a chest series) is read and checked
against the plan's voxel hash after the first frame, for the slice images; a CT that cannot be
read, or is not the plan's, hides the plan and says why in red. Checks written into
``checks/NN`` while the page is open appear without a reload.

Startup protocol (for ``planner serve``): the process prints ``WAITING`` once its libraries are
loaded when started with ``--wait``, reads the plan folder from its standard input, and prints
``READY <port>`` when the page can be opened, or ``FAILED <reason>`` and exits 2.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import sys
import time
from pathlib import Path
from typing import Any

# Everything slow to import is imported before a plan is known (see --wait).
import numpy as np

from ..errors import PlannerError
from ..report.facts import trajectory_rows, warnings_of
from ..scene import load_case, load_checks, read_case_ct, Scene
from ..scene import views as V
from ..scene.surfaces import StructureLayer
from ..scene.volume import set_interactive
from ..scene.vtkutil import offscreen_window, vtk

#: How often the plan folder is looked at for new check scans (seconds).
POLL_S = 1.0
#: The slice images are drawn once the first 3D frame is out: after a render of the view at a
#: screen's size followed by QUIET_S without another (a page settling its layout asks for a few
#: in a row), or LATER_S after the page's server is up at the latest. Drawing them takes about
#: 0.5 s, during which the view waits; the images follow without a reload.
QUIET_S = 0.35
LATER_S = 6.0
#: Pixel size of the planning slice, bull's-eye and progression images.
SLICE_SIZE = (720, 540)
SLICE_VIEWS = {"planning": V.planning_slice, "bullseye": V.bullseye, "progression": V.progression}
SLICE_TITLES = {"planning": "Planning slice", "bullseye": "Bull's-eye", "progression": "Progression"}


def _png_data_url(rgb: np.ndarray) -> str:
    from io import BytesIO

    from PIL import Image as PILImage

    buf = BytesIO()
    PILImage.fromarray(rgb).save(buf, format="PNG", compress_level=1)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _checks_signature(plan_dir: Path) -> tuple[tuple[str, int, int], ...]:
    folder = plan_dir / "checks"
    out = []
    try:
        for d in folder.iterdir():
            f = d / "check.json"
            if d.is_dir() and d.name.isdigit() and f.is_file():
                st = f.stat()
                out.append((d.name, st.st_mtime_ns, st.st_size))
    except OSError:
        pass
    return tuple(sorted(out))


def trajectory_text(t: dict[str, Any], n: int) -> dict[str, Any]:
    """A trajectory as the page shows it: a headline and the report's rows, room terms first."""
    rank = int(t.get("rank", 0))
    head = f"#{rank} of {n}: depth {float(t.get('length_mm', 0)):.0f} mm"
    rows = [{"k": k, "v": v} for k, v in trajectory_rows(t)]
    rows += [{"k": "Risk factor", "v": str(r)} for r in t.get("risk_factors") or []]
    return {"rank": rank, "headline": head, "rows": rows}


def check_text(c: Any, plan_dir: Path) -> dict[str, Any]:
    d = c.deviation
    action = str(c.correction.get("action", "-"))
    return {
        "number": c.number, "created": c.created, "action": action.replace("_", " ").upper(),
        "hit": bool(d.get("target_hit")),
        "lines": c.caption().split("\n"),
        "page": f"files/checks/{c.number:02d}/check.pdf" if (plan_dir / "checks" / f"{c.number:02d}" /
                                                              "check.pdf").is_file() else "",
    }


class ReviewSession:
    """The plan's scene and what the page shows of it; no web code here (see :func:`build_app`)."""

    def __init__(self, plan_dir: str | os.PathLike[str], allow_replan: bool = False, size: tuple[int, int] = (900, 700),
                 library: str | None = None, record_choices: bool = False):
        self.plan_dir = Path(plan_dir)
        # The 3D view comes first, from the folder's structures and surfaces; the CT (about 1 s
        # for a chest series) is read and checked against the plan after the first frame (read_ct).
        self.case = load_case(self.plan_dir, voxels=False)
        self.ct_problem = ""
        self.scene = Scene(self.case)
        self.allow_replan = allow_replan
        self.library = library
        self.record_choices = record_choices
        self.selected = self.case.paths[0].rank if self.case.paths else 0
        self.window = offscreen_window(size)
        self.view = V.overview_3d(self.scene, size=size, volume=None, host=(self.window, (0.0, 0.0, 1.0, 1.0)),
                                  selected=self.selected or 1, lod=True)
        self.interactor = vtk.vtkRenderWindowInteractor()
        self.interactor.SetRenderWindow(self.window)
        self.interactor.SetInteractorStyle(vtk.vtkInteractorStyleTrackballCamera())
        self.interactor.EnableRenderOff()
        style = self.interactor.GetInteractorStyle()
        style.AddObserver("StartInteractionEvent", lambda *_: self.set_moving(True))
        style.AddObserver("EndInteractionEvent", lambda *_: self.set_moving(False))
        self._checks_sig = _checks_signature(self.plan_dir)
        self.replanned = False
        self.messages: list[str] = list(self.case.notes)
        self.target = None if self.case.target is None else np.asarray(self.case.target, float)

    # --- level of detail ------------------------------------------------------------------
    def set_moving(self, moving: bool) -> None:
        set_interactive(self.window, moving)
        layer: StructureLayer | None = self.view.info.get("layer")
        if layer is not None:
            layer.set_coarse(moving)

    # --- what the page shows ----------------------------------------------------------------
    @property
    def trajectories(self) -> list[dict[str, Any]]:
        plan = self.case.plan or {}
        ts = sorted(plan.get("trajectories") or [], key=lambda t: int(t.get("rank", 0)))
        return [trajectory_text(t, len(ts)) for t in ts]

    def read_ct(self) -> bool:
        """Read the plan's CT (checked against the plan's voxel hash) if not yet read; False, with
        the reason in ``ct_problem``, when it cannot be: the review then shows no slice and says why."""
        if self.ct_problem:
            return False
        try:
            read_case_ct(self.case, self.plan_dir)
        except (PlannerError, OSError, ValueError) as exc:
            self.ct_problem = f"The plan's CT cannot be shown: {' '.join(str(exc).split())}"
            return False
        return True

    def slice_images(self) -> dict[str, str]:
        """The selected trajectory's planning slice, bull's-eye and progression, as data URLs."""
        if not self.case.paths or not self.read_ct():
            return {}
        out = {}
        for name, build in SLICE_VIEWS.items():
            view = build(self.scene, size=SLICE_SIZE, rank=self.selected)
            try:
                out[name] = _png_data_url(view.render())
            finally:
                view.close()
        return out

    def checks(self) -> list[dict[str, Any]]:
        return [check_text(c, self.plan_dir) for c in reversed(self.case.checks)]

    def similar(self, k: int = 5) -> list[dict[str, Any]]:
        """The library's cases most like this plan (nearest first), each with a small key image;
        [] without a library, or a note in ``messages`` when it cannot be read."""
        if not self.library:
            return []
        from ..library import similar_for_plan

        try:
            rows = similar_for_plan(self.library, self.plan_dir, k)
        except Exception as exc:  # the library is an aid: the review goes on without it
            self.messages.append(f"case library {self.library}: not read ({' '.join(str(exc).split())[:200]})")
            return []
        out = []
        for r in rows:
            thumb = ""
            if r.get("key_image"):
                try:
                    from PIL import Image as PILImage

                    with PILImage.open(r["key_image"]) as im:
                        im.thumbnail((260, 200))
                        thumb = _png_data_url(np.asarray(im.convert("RGB")))
                except OSError:
                    thumb = ""
            out.append({"case_id": r.get("case_id"), "region": r.get("region") or "-",
                        "size": "-" if r.get("size_mm") is None else f"{float(r['size_mm']):.0f} mm",
                        "depth": "-" if r.get("depth_mm") is None else f"{float(r['depth_mm']):.0f} mm",
                        "outcome": r.get("outcome_summary") or "no outcome recorded",
                        "distance": f"{float(r.get('distance') or 0):.2f}", "thumb": thumb})
        return out

    def recorded_choice(self) -> str:
        from ..library import read_choice

        c = read_choice(self.plan_dir)
        return "" if c is None else f"trajectory #{c['rank']} recorded as performed ({c['by']}, {c['time']})"

    def record_choice(self) -> str:
        if not self.record_choices:
            raise PlannerError("this review does not record choices (planner serve --record-choices allows it)")
        if self.replanned:
            raise PlannerError("the trajectories shown are a re-plan that is not saved: a choice is recorded "
                               "only for the plan on file")
        from ..errors import InputError
        from ..library import record_choice

        try:
            path = record_choice(self.plan_dir, self.selected, "web")
        except InputError as exc:
            raise PlannerError(str(exc)) from None
        return f"trajectory #{self.selected} recorded as the one performed ({path.name})"

    def header(self) -> dict[str, Any]:
        plan = self.case.plan or {}
        pat = plan.get("patient") or {}
        tgt = plan.get("target") or {}
        p = tgt.get("point")
        return {
            "procedure": str(plan.get("procedure_title") or plan.get("procedure") or ""),
            "patient": str(pat.get("name") or "anonymous"),
            "study_date": str((plan.get("study") or {}).get("date") or ""),
            "target": (f"{tgt.get('label', 'target')} at LPS ({', '.join(f'{x:.1f}' for x in p)}) mm"
                       if p else "no target"),
            "status": "CT NOT SHOWN" if self.ct_problem else
                      "feasible" if plan.get("status") == "ok" and self.case.paths else "NO SAFE TRAJECTORY",
            "warnings": warnings_of(plan),
        }

    def camera(self) -> dict[str, Any]:
        """The 3D camera and the target, for whoever checks where the target must appear."""
        cam = self.view.base.GetActiveCamera()
        w, h = self.window.GetSize()
        return {"position": list(cam.GetPosition()), "focal_point": list(cam.GetFocalPoint()),
                "view_up": list(cam.GetViewUp()), "view_angle": cam.GetViewAngle(), "size": [w, h],
                "target": None if self.case.target is None else [float(x) for x in self.case.target]}

    # --- actions ------------------------------------------------------------------------------
    def select(self, rank: int) -> int:
        ranks = [p.rank for p in self.case.paths]
        if rank not in ranks:
            raise PlannerError(f"no trajectory #{rank} (the plan has {', '.join(f'#{r}' for r in ranks) or 'none'})")
        self.selected = rank
        V.replace_plan_props(self.view, self.case, self.selected)
        return rank

    def step(self, delta: int) -> int:
        ranks = [p.rank for p in self.case.paths]
        if not ranks:
            return 0
        i = ranks.index(self.selected) if self.selected in ranks else 0
        return self.select(ranks[(i + delta) % len(ranks)])

    def poll_checks(self) -> bool:
        """Reread the check scans when ``checks/`` changed; True when it did."""
        sig = _checks_signature(self.plan_dir)
        if sig == self._checks_sig:
            return False
        self._checks_sig = sig
        self.case.checks, notes = load_checks(self.plan_dir)
        self.case.actual = self.case.checks[-1] if self.case.checks else None
        self.messages = list(dict.fromkeys(self.messages + notes))
        V.replace_plan_props(self.view, self.case, self.selected or 1)
        return True

    def move_target(self, delta_lps: tuple[float, float, float]) -> list[float]:
        if not self.allow_replan:
            raise PlannerError("this review is read-only (planner serve --allow-replan allows re-planning)")
        if self.target is None:
            raise PlannerError("this plan has no target to move")
        self.target = self.target + np.asarray(delta_lps, float)
        self.case.target = self.target.copy()
        V.replace_plan_props(self.view, self.case, self.selected or 1)
        return [float(x) for x in self.target]

    def replan(self) -> str:
        """Plan again to the (moved) target with the plan's own preset and structures; the plan
        folder is not changed."""
        if not self.allow_replan:
            raise PlannerError("this review is read-only (planner serve --allow-replan allows re-planning)")
        from ..viewer import replan_case

        if not self.read_ct():
            raise PlannerError(self.ct_problem)
        result, self._session = replan_case(self.case, self.target, getattr(self, "_session", None))
        self.replanned = True
        self.selected = self.case.paths[0].rank if self.case.paths else 0
        V.replace_plan_props(self.view, self.case, self.selected or 1)
        if not self.case.paths:
            return "NO SAFE TRAJECTORY at the moved target: " + "; ".join(result.explanation)
        return (f"re-planned at LPS ({', '.join(f'{x:.1f}' for x in self.target)}) mm: {len(self.case.paths)} "
                "trajectories. NOT SAVED: the plan on file is unchanged")


# --- the trame application ---------------------------------------------------------------------
CSS = """
html, body, .v-application { background: #0b0d12 !important; color: #f2f2f2; }
.room { font-size: 22px; line-height: 1.35; }
.room .big { font-size: 30px; font-weight: 700; }
.room .rowk { color: #9fb3c8; padding-right: 12px; vertical-align: top; }
.room .warn { color: #ffcf4d; }
.room .bad { color: #ff6b6b; font-weight: 700; }
.room .ok { color: #7be07b; font-weight: 700; }
.room button.step { min-height: 64px !important; min-width: 140px !important; font-size: 24px !important; }
.room button.rankbtn { min-height: 56px !important; min-width: 72px !important; font-size: 22px !important; margin: 4px; }
.room img.slice { width: 100%; height: auto; background: black; }
.room .check { border-left: 6px solid #ffcf4d; padding-left: 10px; margin: 8px 0; }
"""


def build_app(session: ReviewSession, server: Any) -> Any:
    """The page of ``session`` on the trame ``server`` (vue3 + vuetify3); returns the 3D view widget."""
    from trame.ui.vuetify3 import SinglePageLayout
    from trame.widgets import client, html, vuetify3 as v3
    from trame.widgets import vtk as vtkw

    state, ctrl = server.state, server.controller
    state.trame__title = "planner review"
    state.header = session.header()
    state.trajectories = session.trajectories
    state.selected = session.selected
    state.images = {}  # drawn once the first 3D frame is out (see later_images): the 3D view comes first
    state.image_tab = "planning"
    state.checks = session.checks()
    state.messages = session.messages
    state.message = ""
    state.allow_replan = session.allow_replan
    state.record_choices = session.record_choices
    state.choice = session.recorded_choice()
    state.similar = session.similar()
    state.target_xyz = None if session.target is None else [round(float(x), 1) for x in session.target]
    state.camera = session.camera()
    state.frame = 0  # counts the 3D frames pushed after a change (the tests wait on it)
    state.ct_problem = ""  # the CT cannot be read or is not the plan's: said in red, the plan hidden

    def push() -> None:
        state.camera = session.camera()
        state.frame += 1
        ctrl.view_update()

    def show_ct_problem() -> None:
        if session.ct_problem and not state.ct_problem:
            state.ct_problem = session.ct_problem
            state.header = session.header()

    def show_selection() -> None:
        state.selected = session.selected
        state.images = session.slice_images()
        show_ct_problem()
        push()

    @ctrl.set("select")
    def select(rank: int) -> None:
        try:
            session.select(int(rank))
        except PlannerError as exc:
            state.message = str(exc)
            return
        show_selection()

    @ctrl.set("step")
    def step(delta: int) -> None:
        session.step(int(delta))
        show_selection()

    @ctrl.set("move_target")
    def move_target(dx: float, dy: float, dz: float) -> None:
        try:
            state.target_xyz = [round(x, 1) for x in session.move_target((dx, dy, dz))]
            state.message = "target moved (not yet re-planned)"
        except PlannerError as exc:
            state.message = str(exc)
        push()

    @ctrl.set("replan")
    def replan() -> None:
        try:
            state.message = session.replan()
        except PlannerError as exc:
            state.message = str(exc)
            return
        state.trajectories = session.trajectories
        state.header = dict(session.header(), replanned=True)
        show_selection()

    @ctrl.set("record_choice")
    def record() -> None:
        try:
            state.message = session.record_choice()
        except PlannerError as exc:
            state.message = str(exc)
        state.choice = session.recorded_choice()

    @ctrl.set("camera_changed")
    def camera_changed(*_: Any) -> None:
        state.camera = session.camera()

    async def watch_checks() -> None:
        while True:
            await asyncio.sleep(POLL_S)
            try:
                changed = session.poll_checks()
            except Exception as exc:  # a half-written or broken check never stops the page
                state.message = f"checks: {exc}"
                changed = False
            if changed:
                with state:
                    state.checks = session.checks()
                    state.messages = session.messages
                    push()

    renders = {"n": 0, "last": 0.0}

    def rendered(*_: Any) -> None:
        renders["last"] = time.monotonic()
        renders["n"] += min(session.window.GetSize()) >= 200  # not the page's layout still settling

    session.window.AddObserver("EndEvent", rendered)

    async def later_images() -> None:
        start = time.monotonic()
        n0 = renders["n"]  # a render before the server is up is not a screen's
        while time.monotonic() - start < LATER_S:
            await asyncio.sleep(0.05)
            if renders["n"] > n0 and time.monotonic() - renders["last"] >= QUIET_S:
                break
        if not state.images:
            with state:
                state.images = session.slice_images()
                show_ct_problem()

    ctrl.on_server_ready.add(lambda **_: asyncio.ensure_future(watch_checks()))
    ctrl.on_server_ready.add(lambda **_: asyncio.ensure_future(later_images()))

    with SinglePageLayout(server, theme="dark") as layout:
        layout.title.set_text("")
        layout.icon.hide()
        layout.footer.hide()
        with layout.toolbar:
            html.A("\u2190 worklist", href="../../", id="back", style="color:#9fb3c8;margin:0 16px;font-size:20px")
            html.Span("{{ header.procedure }}", classes="text-h5", id="procedure")
            html.Span(" \u2014 {{ header.patient }} {{ header.study_date }}", style="margin-left:8px;font-size:18px")
            v3.VSpacer()
            html.Span("{{ header.status }}", id="status",
                      classes=("header.status === 'feasible' ? 'text-green' : 'text-red'",), style="font-size:22px;margin-right:16px")
        with layout.content:
            client.Style(CSS)  # a <style> in a Vue 3 template is dropped: injected this way
            with v3.VContainer(fluid=True, classes="room pa-2"):
                html.Div("{{ ct_problem }}", v_if="ct_problem", id="ct-problem", classes="bad big pa-4")
                with v3.VRow(dense=True, v_show="!ct_problem"):
                    with v3.VCol(cols=12, md=7):
                        with html.Div(style="height:62vh;min-height:360px;position:relative", id="view3d-box"):
                            view = vtkw.VtkRemoteView(session.window, ref="view3d", interactive_ratio=0.6,
                                                      interactive_quality=55, still_quality=92,
                                                      EndAnimation=(camera_changed,))
                            ctrl.view_update = view.update
                        html.Div("{{ header.target }}", id="target-text", classes="mt-1")
                        html.Div("{{ JSON.stringify(camera) }}", id="camera-json", style="display:none")
                        html.Div("{{ frame }}", id="frame", style="display:none")
                        with html.Div(v_if="allow_replan", classes="mt-2", id="replan-box"):
                            html.Span("Move the target 2 mm: ")
                            for label, d in (("L", (2, 0, 0)), ("R", (-2, 0, 0)), ("P", (0, 2, 0)), ("A", (0, -2, 0)),
                                             ("S", (0, 0, 2)), ("I", (0, 0, -2))):
                                v3.VBtn(label, classes="rankbtn", click=(ctrl.move_target, str(list(d))),
                                        id=f"move-{label}")
                            v3.VBtn("Re-plan", classes="step", color="orange", click=ctrl.replan, id="replan")
                            html.Div("target LPS {{ target_xyz }}", id="target-xyz")
                        html.Div("{{ message }}", id="message", classes="warn mt-1")
                    with v3.VCol(cols=12, md=5):
                        with html.Div(v_if="trajectories.length"):
                            with html.Div(classes="d-flex align-center flex-wrap"):
                                v3.VBtn("\u25c0 previous", classes="step", click=(ctrl.step, "[-1]"), id="prev")
                                with html.Div(classes="d-flex flex-wrap mx-2"):
                                    v3.VBtn("#{{ t.rank }}", v_for="t in trajectories", key="t.rank",
                                            classes="rankbtn",
                                            color=("t.rank === selected ? 'yellow' : 'grey-darken-2'",),
                                            click=(ctrl.select, "[t.rank]"), id=("'traj-' + t.rank",))
                                v3.VBtn("next \u25b6", classes="step", click=(ctrl.step, "[1]"), id="next")
                            with html.Div(v_for="t in trajectories", key="t.rank", v_show="t.rank === selected",
                                          id=("'traj-text-' + t.rank",), classes="traj-text",
                                          v_touch="{left: () => trigger('step', [1]), right: () => trigger('step', [-1])}"):
                                html.Div("{{ t.headline }}", classes="big", id=("'headline-' + t.rank",))
                                with html.Table():
                                    with html.Tr(v_for="r in t.rows"):
                                        html.Td("{{ r.k }}", classes="rowk")
                                        html.Td("{{ r.v }}")
                        html.Div("NO SAFE TRAJECTORY", v_if="!trajectories.length", classes="bad big", id="no-path")
                        html.Div("{{ choice }}", v_if="choice", id="choice", classes="ok mt-2")
                        v3.VBtn("Record #{{ selected }} as the trajectory performed", v_if="record_choices && trajectories.length",
                                classes="step mt-2", color="teal", click=ctrl.record_choice, id="record-choice")
                with v3.VRow(dense=True):
                    with v3.VCol(cols=12, md=7):
                        with html.Div(v_if="Object.keys(images).length"):
                            with v3.VBtnToggle(v_model=("image_tab",), mandatory=True, classes="mb-1"):
                                for name, title in SLICE_TITLES.items():
                                    v3.VBtn(title, value=name, id=f"tab-{name}", classes="rankbtn")
                            html.Img(src=("images[image_tab]",), classes="slice", id="slice-image")
                    with v3.VCol(cols=12, md=5):
                        html.Div("Checks of the procedure", classes="big")
                        html.Div("none yet", v_if="!checks.length", id="no-checks")
                        with html.Div(v_for="c in checks", key="c.number", classes="check",
                                      id=("'check-' + c.number",)):
                            html.Div("Check {{ String(c.number).padStart(2, '0') }}: {{ c.action }}",
                                     classes=("c.hit ? 'ok' : 'bad'",))
                            html.Div("{{ line }}", v_for="line in c.lines")
                            html.A("check page (PDF)", v_if="c.page", href=("c.page",), target="_blank")
                        with html.Div(v_if="similar.length", id="similar"):
                            html.Div("Similar cases in the library", classes="big mt-3")
                            with html.Div(v_for="c in similar", key="c.case_id", classes="d-flex mt-2 similar-case"):
                                html.Img(src=("c.thumb",), v_if="c.thumb", style="width:160px;margin-right:10px")
                                with html.Div():
                                    html.Div("case {{ c.case_id }}: {{ c.region }}, size {{ c.size }}, depth {{ c.depth }}")
                                    html.Div("{{ c.outcome }}", classes="warn")
                                    html.Div("distance {{ c.distance }}", style="color:#9fb3c8;font-size:16px")
                        html.Div("Warnings", classes="big mt-3")
                        html.Div("{{ w }}", v_for="w in header.warnings.concat(messages)", classes="warn")
    return view


def _exit_with_parent() -> None:
    """Started by ``planner serve`` (its pipe on our standard input): stop when that pipe closes,
    so a server that is killed leaves no review running."""
    import threading

    def watch() -> None:
        while sys.stdin.readline():
            pass
        os._exit(0)

    threading.Thread(target=watch, daemon=True).start()


def _serve(session: ReviewSession, port: int, with_parent: bool = False) -> None:
    from trame.app import get_server

    server = get_server("planner-review", client_type="vue3")
    build_app(session, server)
    if with_parent:
        _exit_with_parent()
    server.controller.on_server_ready.add(lambda **_: print(f"READY {server.port}", flush=True))
    sys.argv = sys.argv[:1]  # trame reads its own options from the command line
    server.start(port=port, host="127.0.0.1", open_browser=False, show_connection_info=False,
                 disable_logging=True, timeout=int(os.environ.get("PLANNER_REVIEW_IDLE_S", "600")))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m planner.web.review")
    p.add_argument("--plan", help="the plan folder (else read from standard input after WAITING)")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--allow-replan", action="store_true")
    p.add_argument("--record-choices", action="store_true")
    p.add_argument("--library", help="case library root or database URL: its similar cases are listed")
    p.add_argument("--wait", action="store_true", help="load the libraries, print WAITING, read the plan folder")
    args = p.parse_args(argv)
    # The trame client and VTK are loaded before the plan is known: a waiting process opens a plan at once.
    import trame.ui.vuetify3  # noqa: F401
    import trame.widgets.vtk  # noqa: F401
    from trame.app import get_server  # noqa: F401

    plan = args.plan
    if args.wait:
        print("WAITING", flush=True)
        plan = sys.stdin.readline().strip()
    if not plan:
        print("FAILED no plan folder given", flush=True)
        return 2
    try:
        session = ReviewSession(plan, allow_replan=args.allow_replan, library=args.library,
                                record_choices=args.record_choices)
    except (PlannerError, OSError, ValueError, KeyError) as exc:
        print(f"FAILED {' '.join(str(exc).split())}", flush=True)
        return 2
    _serve(session, args.port, with_parent=args.wait)
    return 0


if __name__ == "__main__":
    sys.exit(main())
