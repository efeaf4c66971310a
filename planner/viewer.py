"""``planner view``: the interactive review window, and its procedure-room mode.

Layout: the 3D scene (volume rendering, structures, every trajectory, risk map) on the left;
axial, coronal and sagittal slices and the planning slice on the right. The procedure-room
mode (``room=True``) shows the chosen plan only: the planning slice, the bull's-eye and the
progression view, in large type on a dark background.

Mouse: left drag rotates the 3D scene, the wheel zooms it or scrolls the slice under the
pointer; shift + left click in a slice moves the target there. Keys: see ``KEYS``.

The viewer holds no planning logic: re-planning calls :func:`planner.planning.plan` with the
plan's own preset and structures. Level of detail: while the scene moves, the volume is ray
cast coarsely (the interactor's desired update rate), and in full quality once it is still.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .errors import PlannerError
from .scene import Case, Scene
from .scene import views as V
from .scene.case import NeedlePath, RiskMap
from .scene.slices import SLICE_WINDOWS, set_window
from .scene.volume import VOLUME_PRESETS, set_interactive, set_volume_preset
from .scene.vtkutil import capture, offscreen_window, save_png, vtk

#: Viewports (xmin, ymin, xmax, ymax) of the review layout and of the procedure-room layout.
LAYOUT = {"3d": (0.0, 0.0, 0.58, 1.0), "axial": (0.58, 0.5, 0.79, 1.0), "coronal": (0.79, 0.5, 1.0, 1.0),
          "sagittal": (0.58, 0.0, 0.79, 0.5), "planning": (0.79, 0.0, 1.0, 0.5)}
ROOM_LAYOUT = {"planning": (0.0, 0.0, 0.6, 1.0), "bullseye": (0.6, 0.5, 1.0, 1.0), "progression": (0.6, 0.0, 1.0, 0.5)}
ORTHOGONAL = ("axial", "coronal", "sagittal")

KEYS = {
    "n": "next trajectory", "p": "previous trajectory", "s": "structures on/off", "b": "bones on/off",
    "r": "risk map on/off", "v": "volume preset (bone, lung, soft tissue, off)", "w": "slice window preset",
    "o": "PET over the slices: opacity 60, 30, 90 %, off (plans made with a PET)",
    "Left/Right, Up/Down, Prior/Next": "move the target 2 mm (x, y, z)", "Return": "re-plan at the target",
    "c": "choose the trajectory shown: record it as the one performed (choice.json in the plan folder)",
    "h": "print this help", "q": "quit",
}
#: The colour of the line the window shows after a choice is recorded (or refused).
BANNER_COLOUR = (255, 220, 0)
STEP_MM = 2.0
_MOVES = {"Left": (-1, 0, 0), "Right": (1, 0, 0), "Up": (0, -1, 0), "Down": (0, 1, 0),
          "Prior": (0, 0, 1), "Next": (0, 0, -1)}


class DisplayUnavailableError(PlannerError):
    """A window was asked for where no display can show one."""


def display_problem() -> str | None:
    """Why no window can be opened here, or None when a display seems available."""
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return "no display to open a window on (DISPLAY is not set)"
    return None


def _no_display_message(why: str) -> str:
    return f"{why}; use --offscreen [--screenshot FILE.png] to render the viewer without a window"


class Viewer:
    """The review scene of a case in one render window.

    Parameters
    ----------
    case : the plan to review (see :func:`planner.scene.load_case`), or a Scene already built.
    size : window size in pixels (width, height).
    room : procedure-room mode (chosen plan only, large type, dark background).
    offscreen : build everything without a window (tests, screenshots).
    plan_dir : the plan folder the case was read from: key ``c`` records the choice there (its
        ``choice.json``), and a choice recorded there before is the trajectory shown first.
    """

    def __init__(self, case: Case | Scene, size: tuple[int, int] = (1500, 900), room: bool = False,
                 offscreen: bool = True, window: "vtk.vtkRenderWindow | None" = None,
                 plan_dir: str | os.PathLike[str] | None = None):
        if not offscreen:
            why = display_problem()
            if why:
                raise DisplayUnavailableError(_no_display_message(why))
        self.scene = case if isinstance(case, Scene) else Scene(case)
        case = self.scene.case
        self.room = room
        self.offscreen = offscreen
        if window is not None:
            self.window = window
        else:
            self.window = offscreen_window(size) if offscreen else self._onscreen_window(size)
        self.window.SetWindowName("planner view" + (" - procedure room" if room else ""))
        self.plan_dir = Path(plan_dir) if plan_dir is not None else None
        self.selected = 1
        self.banner = ""  # the last choice recorded (or refused), shown in the window
        if self.plan_dir is not None:
            from .library.choice import read_choice

            recorded = read_choice(self.plan_dir)
            if recorded is not None and recorded["rank"] in [p.rank for p in case.paths]:
                self.selected = int(recorded["rank"])
                self.banner = f"trajectory #{self.selected} was chosen ({recorded['by']}, {recorded['time']})"
        self.volume_preset: str | None = "bone"
        self.slice_window = self.scene.default_window()
        self.structures_visible = True
        self.bones_visible = True
        self.risk_visible = True
        self.target = None if case.target is None else np.array(case.target, float)
        self.views: dict[str, V.View] = {}
        self.interactor: Any = None
        self._timer: int | None = None
        self._session: Any = None  # the planning session of a re-plan (made at the first)
        self.messages: list[str] = []
        self._build()

    # --- window and layout ----------------------------------------------------------------
    @staticmethod
    def _onscreen_window(size: tuple[int, int]) -> "vtk.vtkRenderWindow":
        """A window on the display, or DisplayUnavailableError (VTK falls back to offscreen EGL
        when no X server answers: that window could never be seen)."""
        logger = vtk.vtkLogger
        before = logger.GetCurrentVerbosityCutoff()
        logger.SetStderrVerbosity(logger.VERBOSITY_ERROR)  # VTK's own warning would say it less clearly
        try:
            win = vtk.vtkRenderWindow()
        finally:
            logger.SetStderrVerbosity(before)
        if win.GetClassName() in ("vtkEGLRenderWindow", "vtkOSOpenGLRenderWindow"):
            where = os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY") or ""
            raise DisplayUnavailableError(_no_display_message(f"cannot open a window: no display answers at {where!r}"))
        win.SetSize(*size)
        return win

    def _clear(self) -> None:
        for view in self.views.values():
            for renderer in view.renderers():
                self.window.RemoveRenderer(renderer)
        self.views.clear()

    def _build(self) -> None:
        self._clear()
        case = self.scene.case
        if self.room:
            if case.chosen is None:
                raise PlannerError("procedure-room mode needs a plan with at least one trajectory")
            builders = {"planning": V.planning_slice, "bullseye": V.bullseye, "progression": V.progression}
            for name, vp in ROOM_LAYOUT.items():
                view = builders[name](self.scene, rank=self.selected, window=self.slice_window,
                                      host=(self.window, vp), font_scale=1.15 if name == "planning" else 1.3)
                view.base.SetBackground(0.0, 0.0, 0.0)
                self.views[name] = view
            self._show_banner()
            return
        self.views["3d"] = V.overview_3d(self.scene, volume=self.volume_preset, host=(self.window, LAYOUT["3d"]),
                                         selected=self.selected, font_scale=1.0, lod=True)
        for plane in ORTHOGONAL:
            self.views[plane] = V.orthogonal_view(self.scene, plane, point=self.target, window=self.slice_window,
                                                  host=(self.window, LAYOUT[plane]), font_scale=0.8)
        self._build_planning()

    def _build_planning(self) -> None:
        if "planning" in self.views:
            old = self.views.pop("planning")
            for renderer in old.renderers():
                self.window.RemoveRenderer(renderer)
        vp = LAYOUT["planning"]
        if self.scene.case.chosen is not None:
            self.views["planning"] = V.planning_slice(self.scene, rank=self.selected, window=self.slice_window,
                                                      host=(self.window, vp), font_scale=0.8)
        else:
            win, base, over = V.layered_window((1, 1), window=self.window, viewport=vp)
            over.AddViewProp(V.text_actor("no trajectory", 0.5, 0.5, 18, align="center", valign="center"))
            self.views["planning"] = V.View("planning", win, base, over)
        self._show_banner()

    def _show_banner(self) -> None:
        """The line about the choice (recorded, or why not) at the foot of the planning slice."""
        view = self.views.get("planning")
        if view is None:
            return
        old = view.info.pop("banner", None)
        if old is not None:
            view.overlay.RemoveViewProp(old)
        if self.banner:
            actor = V.text_actor(self.banner, 0.5, 0.02, 22 if self.room else 14, BANNER_COLOUR, align="center",
                                 valign="bottom", bold=True)
            view.overlay.AddViewProp(actor)
            view.info["banner"] = actor

    def _refresh_plan(self) -> None:
        """Redraw what depends on the trajectories and the target, keeping volume and surfaces."""
        if self.room:
            self._build()
            return
        V.replace_plan_props(self.views["3d"], self.scene.case, self.selected, True, self.risk_visible)
        for plane in ORTHOGONAL:
            view = self.views.pop(plane)
            for renderer in view.renderers():
                self.window.RemoveRenderer(renderer)
            self.views[plane] = V.orthogonal_view(self.scene, plane, point=self.target, window=self.slice_window,
                                                  host=(self.window, LAYOUT[plane]), font_scale=0.8)
        self._build_planning()

    # --- actions --------------------------------------------------------------------------
    @property
    def ranks(self) -> list[int]:
        return [p.rank for p in self.scene.case.paths]

    def cycle(self, step: int = 1) -> int:
        """Select the next (or previous) trajectory; returns its rank."""
        if not self.ranks:
            return 0
        i = self.ranks.index(self.selected) if self.selected in self.ranks else 0
        self.selected = self.ranks[(i + step) % len(self.ranks)]
        self._refresh_plan()
        return self.selected

    def choose(self) -> Path:
        """Record the trajectory shown as the one the operator chose (``choice.json`` in the plan
        folder, through :func:`planner.library.choice.record_choice`); the window says so. Refused
        (PlannerError, said in the window too) without a plan folder, or when the trajectory shown
        is not the plan's own (a re-plan in the viewer is not saved to ``plan.json``)."""
        from .library.choice import record_choice

        try:
            if self.plan_dir is None:
                raise PlannerError("no plan folder to record the choice in (a plan held in memory)")
            shown = next((p for p in self.scene.case.paths if p.rank == self.selected), None)
            if shown is None:
                raise PlannerError("no trajectory is shown: nothing to choose")
            if not self._in_plan_file(shown):
                raise PlannerError(f"trajectory #{shown.rank} shown comes from a re-plan in the viewer, not from "
                                   "plan.json: plan it with planner plan to record a choice")
            path = record_choice(self.plan_dir, shown.rank, "viewer")
        except PlannerError as exc:
            self.banner = f"choice NOT recorded: {exc}"
            self._show_banner()
            raise
        self.banner = f"trajectory #{shown.rank} recorded as the one chosen ({path.name})"
        self.messages.append(self.banner)
        self._show_banner()
        return path

    def _in_plan_file(self, path: NeedlePath) -> bool:
        """Whether ``path`` is the trajectory of its rank in the plan folder's ``plan.json``."""
        import json

        try:
            doc = json.loads((self.plan_dir / "plan.json").read_text(encoding="utf-8"))  # type: ignore[operator]
        except (OSError, ValueError):
            return False
        blocks = doc.get("targets") or [doc]
        for block in blocks if isinstance(blocks, list) else []:
            for t in block.get("trajectories") or []:
                try:
                    if t.get("rank") == path.rank and np.allclose(t["entry"], path.entry, atol=0.01) \
                            and np.allclose(t["target"], path.target, atol=0.01):
                        return True
                except (KeyError, TypeError, ValueError):
                    continue
        return False

    def toggle_structures(self) -> bool:
        self.structures_visible = not self.structures_visible
        self._apply_structure_visibility()
        return self.structures_visible

    def toggle_bones(self) -> bool:
        self.bones_visible = not self.bones_visible
        self._apply_structure_visibility()
        return self.bones_visible

    def _apply_structure_visibility(self) -> None:
        from .anatomy.registry import StructureClass

        for view in self.views.values():
            layer = view.info.get("layer")
            if layer is not None:
                for c in layer.present_classes():
                    hidden = c == StructureClass.BONE and (self.volume_preset == "bone" or not self.bones_visible)
                    layer.set_class_visible(c, self.structures_visible and not hidden)
            for name, actor in view.info.get("contours", {}).items():
                cls = self.scene.case.structures[name].cls if self.scene.case.structures is not None else None
                actor.SetVisibility(self.structures_visible and (self.bones_visible or cls != StructureClass.BONE))

    def toggle_risk_map(self) -> bool:
        self.risk_visible = not self.risk_visible
        if not self.room:
            self._refresh_plan()
        return self.risk_visible

    def cycle_volume(self) -> str | None:
        """bone -> lung -> soft-tissue -> off -> bone."""
        order: list[str | None] = [*VOLUME_PRESETS, None]
        self.volume_preset = order[(order.index(self.volume_preset) + 1) % len(order)]
        vol = self.views["3d"].info.get("volume") if "3d" in self.views else None
        if vol is not None:
            vol.SetVisibility(self.volume_preset is not None)
            if self.volume_preset is not None:
                set_volume_preset(vol, self.volume_preset)
        self._apply_structure_visibility()
        return self.volume_preset

    def cycle_window(self) -> str:
        names = list(SLICE_WINDOWS)
        self.slice_window = names[(names.index(self.slice_window) + 1) % len(names)]
        for view in self.views.values():
            if "ct_slice" in view.info:
                set_window(view.info["ct_slice"], self.slice_window)
        return self.slice_window

    def cycle_pet_opacity(self) -> float | None:
        """The PET layer's opacity over every slice view: 0.6 -> 0.3 -> 0.9 -> off -> 0.6; None
        when the plan has no PET to show."""
        from .scene.slices import PET_OPACITIES

        if self.scene.pet is None:
            self.messages.append("no PET in this plan (or it could not be read): nothing to fade")
            return None
        now = self.scene.pet_opacity
        self.scene.pet_opacity = PET_OPACITIES[(PET_OPACITIES.index(now) + 1) % len(PET_OPACITIES)
                                               if now in PET_OPACITIES else 0]
        for view in self.views.values():
            if view.info.get("pet_slice") is not None:
                view.info["pet_slice"].GetProperty().SetOpacity(self.scene.pet_opacity)
        return self.scene.pet_opacity

    def scroll(self, plane: str, steps: int) -> np.ndarray:
        """Move an orthogonal slice by ``steps`` voxels along its normal; returns its new origin."""
        view = self.views[plane]
        vtk_plane = view.info["plane"]
        normal = np.array(vtk_plane.GetNormal())
        step = float(abs(self.scene.case.ct.spacing @ np.abs(self.scene.case.ct.direction.T @ normal)))
        origin = np.array(vtk_plane.GetOrigin()) + steps * step * normal
        lo, hi = (self.scene.case.ct.corners() @ normal).min(), (self.scene.case.ct.corners() @ normal).max()
        along = float(np.clip(origin @ normal, lo, hi))
        origin = origin + (along - origin @ normal) * normal
        vtk_plane.SetOrigin(*origin)
        c = view.info["coord"]
        view.info["title"].SetInput(f"{plane} at {'xyz'[c]} = {origin[c]:.1f} mm (LPS)")
        return origin

    def scroll_interactive(self, plane: str, steps: int) -> np.ndarray:
        """Scroll a slice as the mouse wheel does: coarse detail, and the 3D view, which does not
        depend on the slices, kept as drawn (not re-rendered) until :meth:`still`."""
        self.set_interactive(True)
        self._freeze_3d(True)
        return self.scroll(plane, steps)

    def still(self) -> None:
        """Back to full quality once nothing moves (the next render draws everything)."""
        self._freeze_3d(False)
        self.set_interactive(False)

    def _freeze_3d(self, frozen: bool) -> None:
        if "3d" in self.views:
            for renderer in self.views["3d"].renderers():
                renderer.SetDraw(not frozen)

    def move_target(self, delta_lps: np.ndarray | tuple[float, float, float]) -> np.ndarray:
        """Move the target (not yet re-planned): the marker and the slices follow."""
        if self.target is None:
            raise PlannerError("this case has no target to move")
        self.target = self.target + np.asarray(delta_lps, float)
        self._show_moved_target()
        return self.target

    def set_target(self, point_lps: np.ndarray) -> np.ndarray:
        self.target = np.asarray(point_lps, float)
        self._show_moved_target()
        return self.target

    def _show_moved_target(self) -> None:
        case = self.scene.case
        case.target = self.target.copy()  # type: ignore[union-attr]
        if not self.room:
            self._refresh_plan()

    def replan(self) -> Any:
        """Plan again to the current target through the planning session of the plan's own
        preset, approach, side and structures; everything the re-plan decides replaces the plan's."""
        case = self.scene.case
        result, self._session = replan_case(case, self.target, self._session)
        self.selected = 1
        self.messages.append(f"re-planned at {np.round(self.target, 1).tolist()}: {len(case.paths)} trajectories"
                             + ("" if case.paths else " - NO SAFE TRAJECTORY: " + "; ".join(result.explanation)))
        if self.room and not case.paths:
            self.room = False  # nothing to show in the room: back to the review layout
        self._build() if self.room else self._refresh_plan()
        return result

    def set_interactive(self, interactive: bool) -> None:
        """Coarse (fast) rendering while something moves, full quality when still: the volume's
        ray sampling follows the window's desired update rate, the surfaces swap to coarse meshes."""
        set_interactive(self.window, interactive)
        for view in self.views.values():
            layer = view.info.get("layer")
            if layer is not None:
                layer.set_coarse(interactive)
            if view.info.get("contours"):
                V.set_contour_detail(self.scene, view.info["contours"], interactive)

    def render(self) -> np.ndarray:
        return capture(self.window)

    def screenshot(self, path: str | os.PathLike[str]) -> Path:
        self.set_interactive(False)
        return save_png(self.render(), path)

    # --- keys and mouse -------------------------------------------------------------------
    def on_key(self, key: str) -> bool:
        """Apply one key (a VTK key symbol); returns whether it did something."""
        actions: dict[str, Callable[[], Any]] = {
            "n": lambda: self.cycle(1), "p": lambda: self.cycle(-1), "s": self.toggle_structures,
            "b": self.toggle_bones, "r": self.toggle_risk_map, "v": self.cycle_volume, "w": self.cycle_window,
            "o": self.cycle_pet_opacity, "c": self.choose,
            "Return": self.replan, "KP_Enter": self.replan, "h": self._help,
        }
        if key in _MOVES and self.target is not None:
            self.move_target(STEP_MM * np.array(_MOVES[key], float))
            return True
        if key in ("q", "Escape") and self.interactor is not None:
            self.interactor.TerminateApp()
            return True
        if key not in actions:
            return False
        try:
            actions[key]()
        except PlannerError as exc:
            self.messages.append(str(exc))
            print(f"planner view: {exc}", file=sys.stderr)
        return True

    def _help(self) -> None:
        print("\n".join(f"  {k:<34}{v}" for k, v in KEYS.items()))

    def view_at(self, x: int, y: int) -> str | None:
        """The name of the viewport under display position (x, y) (origin bottom left)."""
        w, h = self.window.GetSize()
        for name, view in self.views.items():
            x0, y0, x1, y1 = view.base.GetViewport()
            if x0 * w <= x < x1 * w and y0 * h <= y < y1 * h:
                return name
        return None

    def attach_interactor(self) -> Any:
        """An interactor with the viewer's mouse and key bindings (generic, event-driven, when offscreen)."""
        iren = vtk.vtkGenericRenderWindowInteractor() if self.offscreen else vtk.vtkRenderWindowInteractor()
        iren.SetRenderWindow(self.window)
        iren.SetDesiredUpdateRate(15.0)
        iren.SetStillUpdateRate(0.0001)
        style = vtk.vtkInteractorStyleTrackballCamera()
        style.SetDefaultRenderer(self.views["3d"].base if "3d" in self.views else None)
        iren.SetInteractorStyle(style)
        viewer = self

        def wheel(obj: Any, event: str) -> None:
            x, y = iren.GetEventPosition()
            name = viewer.view_at(x, y)
            step = 1 if event == "MouseWheelForwardEvent" else -1
            if name in ORTHOGONAL:
                viewer.scroll_interactive(name, step)  # type: ignore[arg-type]
                iren.Render()
                viewer._still_later(iren)
            elif name == "3d":
                style.SetCurrentRenderer(viewer.views["3d"].base)
                (style.OnMouseWheelForward if step > 0 else style.OnMouseWheelBackward)()

        def press(obj: Any, event: str) -> None:
            x, y = iren.GetEventPosition()
            name = viewer.view_at(x, y)
            if name == "3d":
                style.SetCurrentRenderer(viewer.views["3d"].base)
                style.OnLeftButtonDown()
            elif name in ORTHOGONAL and iren.GetShiftKey() and viewer.target is not None:
                view = viewer.views[name]
                w, h = viewer.window.GetSize()
                x0, y0, x1, y1 = view.base.GetViewport()
                col, row = x - x0 * w, (y1 * h - 1) - y
                p = view.canvas.world(col, row)  # type: ignore[union-attr]
                coord = view.info["coord"]
                p[coord] = np.array(view.info["plane"].GetOrigin())[coord]
                viewer.set_target(p)
                iren.Render()

        def release(obj: Any, event: str) -> None:
            style.OnLeftButtonUp()

        def key(obj: Any, event: str) -> None:
            if viewer.on_key(iren.GetKeySym()):
                iren.Render()

        def timer(obj: Any, event: str) -> None:
            if viewer._timer is not None:
                iren.DestroyTimer(viewer._timer)
                viewer._timer = None
                viewer.still()
                iren.Render()

        style.AddObserver("MouseWheelForwardEvent", wheel)
        style.AddObserver("MouseWheelBackwardEvent", wheel)
        style.AddObserver("LeftButtonPressEvent", press)
        style.AddObserver("LeftButtonReleaseEvent", release)
        style.AddObserver("CharEvent", lambda o, e: None)  # no VTK default keys (wireframe, stereo, quit on 'e')
        style.AddObserver("KeyPressEvent", key)
        style.AddObserver("StartInteractionEvent", lambda o, e: viewer.set_interactive(True))
        style.AddObserver("EndInteractionEvent", lambda o, e: viewer.still())
        iren.AddObserver("TimerEvent", timer)
        self.interactor = iren
        iren.Initialize()
        return iren

    def _still_later(self, iren: Any, ms: int = 300) -> None:
        """Render in full quality once the wheel has been still for ``ms``."""
        if self._timer is not None:
            iren.DestroyTimer(self._timer)
        self._timer = iren.CreateOneShotTimer(ms)

    def start(self) -> None:
        """Open the window and run until it is closed."""
        iren = self.interactor or self.attach_interactor()
        self.set_interactive(False)
        self.window.Render()
        print("planner view: keys " + "; ".join(f"{k} {v}" for k, v in KEYS.items()))
        iren.Start()


def open_viewer(plan_dir: str | os.PathLike[str], *, room: bool = False, offscreen: bool = False,
                screenshot: str | os.PathLike[str] | None = None, size: tuple[int, int] = (1500, 900),
                ct_path: str | None = None, check: int | str | None = "latest") -> Path | None:
    """What ``planner view`` does: check for a display first, load the plan, then open the window
    (or, offscreen, build the same scene with its interactor and write a screenshot). ``check``:
    which check scan's needle to show (a number, "latest", or None for none)."""
    from .scene import load_case

    window = None
    if not offscreen:  # find out before the long load
        why = display_problem()
        if why:
            raise DisplayUnavailableError(_no_display_message(why))
        window = Viewer._onscreen_window(size)
    case = load_case(plan_dir, ct_path, check=check)
    viewer = Viewer(case, size=size, room=room, offscreen=offscreen, window=window, plan_dir=plan_dir)
    if offscreen:
        viewer.attach_interactor()
        out = Path(screenshot) if screenshot else Path(plan_dir) / "images" / ("viewer_room.png" if room else "viewer.png")
        return viewer.screenshot(out)
    viewer.start()
    return None


def replan_case(case: Case, target: Any, session: Any = None) -> tuple[Any, Any]:
    """Plan ``case`` again to ``target`` (LPS mm) with the plan's own preset, approach, side and
    structures, the same planning session as ``planner plan``; the case's trajectories, risk map
    and plan are replaced in memory (no file is written). Returns (the target's result, the
    session: pass it back to re-plan again without rebuilding the distance fields)."""
    from .anatomy.target import target_at_point
    from .session import PlanningSession

    if case.plan is None or case.structures is None or target is None:
        raise PlannerError("re-planning needs the plan's procedure, its structures and a target")
    target = np.asarray(target, float)
    if session is None:
        binding = case.plan.get("preset") or {}
        approach = binding.get("approach") if binding else \
            ((case.plan.get("hard_constraints") or {}).get("approach") or {}).get("id")
        variant = binding.get("variant") if isinstance(binding.get("variant"), dict) else None
        preset_file = str(variant["file"]) if variant and Path(str(variant.get("file"))).is_file() else None
        if variant and preset_file is None:
            case.notes.append(f"the department variant {variant.get('file')} is gone: re-planned with the shipped "
                              "preset's weights (the same hard constraints)")
        session = PlanningSession(case.ct, case.structures, procedure=str(case.plan["procedure"]),
                                  approach=approach, side=binding.get("side"),
                                  structures_source=str(case.plan.get("structures_source", "")),
                                  preset_file=preset_file)
    found = target_at_point(case.ct, target, label=case.target_label or "target")
    plan = session.plan([found], n_best=max(len(case.paths), 3))
    result = plan.results[0]
    case.paths = [NeedlePath.from_dict(t.to_json()) for t in plan.trajectories]
    rm = result.risk_map
    case.risk_map = RiskMap(np.asarray(rm["entries"], float), np.asarray(rm["score"], float),
                            np.asarray(rm["reason"]).astype(str))
    block = plan.targets[0].to_json()
    block["target"] = dict(case.plan.get("target", {}), point=[float(x) for x in target])
    case.plan = dict(case.plan, **block, warnings=plan.warnings)
    case.target = target.copy()
    return result, session
