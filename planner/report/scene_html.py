"""The plan's 3D scene as one self-contained HTML file (``scene3d.html``), for a screen with no server.

The scene is the 3D overview of the report (structure surfaces, every trajectory, the target,
the risk map on the skin) serialised with trame-vtk's scene serialisers into vtk.js's offline
viewer (the export PyVista and trame use): it opens from the disk in any browser with WebGL,
rotates and zooms, needs no network. The surfaces are meshed lighter than the viewer's (about a
fifth of the triangles) so the file stays a few megabytes. Text is not part of a vtk.js scene:
the title, the colours and the trajectory list are written in the page around it. Positions
are the plan's, in LPS millimetres.
"""

from __future__ import annotations

import html
import io
import json
import os
import zipfile
from pathlib import Path
from typing import Any

FILE = "scene3d.html"
#: The surfaces of the export: about 170 000 triangles for the chest CT's structures (the
#: viewer's fine ones are about 800 000), built in about 1.3 s.
EXPORT_MESH = {"max_voxels": 400_000, "smooth_iterations": 8, "target_triangles": 12_000}


def _serialise(window: Any) -> bytes:
    from trame_vtk.modules.vtk.serializers import (SynchronizationContext, extract_array_hash,
                                                   initialize_serializers, reference_id, serialize)

    initialize_serializers()
    ctx = SynchronizationContext()
    scene = serialize(None, window, reference_id(window), ctx, 1)
    cam = window.GetRenderers().GetFirstRenderer().GetActiveCamera()
    scene["extra"] = {"vtkRefId": reference_id(window), "centerOfRotation": cam.GetFocalPoint(),
                      "camera": reference_id(cam)}
    hashes = {e["hash"]: dict(**e, content=ctx.get_cached_data_array(e["hash"], False))
              for e in extract_array_hash(scene)}
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("index.json", json.dumps({"hashes": hashes, "scene": scene}), compress_type=zipfile.ZIP_DEFLATED)
    return buf.getvalue()


def _page(data: bytes, title: str, lines: list[str], legend: list[tuple[str, tuple[int, int, int]]]) -> str:
    from trame_vtk.tools.vtksz2html import write_html

    out = io.StringIO()
    write_html(data, out)
    page = "\n".join(ln for ln in out.getvalue().split("\n")  # the icons it would fetch: no network needed
                     if not (ln.lstrip().startswith("<link") and "kitware.github.io" in ln))
    swatches = "".join(f"<span style='color:rgb{c}'>&#9632; {html.escape(n)}</span> " for n, c in legend)
    info = ("<div id='planner-info' style=\"position:absolute;top:8px;left:8px;z-index:10;color:#f2f2f2;"
            "font:14px 'DejaVu Sans',Arial,sans-serif;background:rgba(0,0,0,0.55);padding:8px 12px;"
            "max-width:38%;pointer-events:none\">"
            f"<div style='font-size:19px;font-weight:700'>{html.escape(title)}</div>"
            + "".join(f"<div>{html.escape(x)}</div>" for x in lines)
            + f"<div style='margin-top:6px'>{swatches}</div>"
            "<div style='color:#9fb3c8;margin-top:6px'>drag to rotate, wheel to zoom; positions in LPS mm. "
            "A view of the plan, not the plan: the report is the record.</div></div>")
    # the viewer draws into .content (else it takes the whole body, text included)
    room = "<div class='content' style='position:absolute;top:0;left:0;right:0;bottom:0'></div>"
    return page.replace("<body>", "<body>" + room + info, 1) if "<body>" in page else room + info + page


def write_scene_html(scene: Any, path: str | os.PathLike[str]) -> Path:
    """Write ``scene`` (a :class:`planner.scene.Scene` of a plan) as one offline HTML file."""
    from ..atomic import write_text_atomic
    from ..scene import views as V
    from ..scene.needles import ALTERNATIVE, CHOSEN, TARGET
    from ..scene.surfaces import mask_mesh
    from ..anatomy.registry import colour_of

    view = V.overview_3d(scene, size=(1000, 750), volume=None)
    try:
        layer = view.info.get("layer")
        sset = scene.case.structures
        if layer is not None and sset is not None:  # lighter surfaces: a file of a few MB, shapes still true
            for name, actor in layer.actors.items():
                if name in sset:
                    actor.GetMapper().SetInputData(mask_mesh(sset[name], sset.affine, **EXPORT_MESH))
        for r in view.renderers():  # 2D text, legend and colour bar are written in the page instead
            props = r.GetViewProps()
            props.InitTraversal()
            flat = [props.GetNextProp() for _ in range(props.GetNumberOfItems())]
            for p in flat:
                if p is not None and p.IsA("vtkActor2D"):
                    r.RemoveViewProp(p)
        view.window.Render()
        data = _serialise(view.window)
    finally:
        view.close()
    case = scene.case
    plan = case.plan or {}
    lines = []
    tgt = plan.get("target") or {}
    if tgt.get("point"):
        label = str(tgt.get("label") or "target")
        lines.append(f"{label if label == 'target' else 'target ' + label} at LPS "
                     f"({', '.join(f'{x:.1f}' for x in tgt['point'])}) mm")
    for p in case.paths:
        t = p.info or {}
        lines.append(f"#{p.rank}{' (chosen, yellow)' if p.rank == 1 else ''}: depth {p.length_mm:.1f} mm, entry LPS "
                     f"({', '.join(f'{x:.1f}' for x in p.entry)}) mm" + (f"; {t['limiting']}" if t.get("limiting") else ""))
    if not case.paths:
        lines.append("NO SAFE TRAJECTORY")
    legend = [(c.value, colour_of(c)) for c in (view.info["layer"].present_classes() if view.info.get("layer") else [])]
    legend += [("chosen needle", CHOSEN), ("alternatives", ALTERNATIVE), ("target", TARGET)]
    title = str(plan.get("procedure_title") or plan.get("procedure") or "plan") + " - 3D scene"
    return write_text_atomic(_page(data, title, lines, legend), path)
