"""``planner``: the one command-line entry point, a thin shell over the Python API.

Exit status: 0 success (for ``plan``: at least one safe trajectory), 3 no safe trajectory,
2 unusable input (one line naming the file and the problem), 1 a bug (with traceback).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import traceback
from pathlib import Path
from typing import Any, Sequence

from .. import __version__
from ..errors import InputError, PlannerError

EXIT_OK, EXIT_BUG, EXIT_INPUT, EXIT_NO_SAFE_PATH = 0, 1, 2, 3

_NUMBER_LIST = re.compile(r"^-?\d*\.?\d+(,\s*-?\d*\.?\d+)*$")
_VALUE_OPTIONS = ("--target", "--seed")


def normalise_argv(argv: Sequence[str]) -> list[str]:
    """Let options take values that start with '-' (``--target -82,82,-8``).

    argparse would read ``-82,82,-8`` as an unknown option; it is joined to its option as
    ``--target=-82,82,-8``, which argparse accepts.
    """
    out: list[str] = []
    i = 0
    args = list(argv)
    while i < len(args):
        a = args[i]
        if a in _VALUE_OPTIONS and i + 1 < len(args) and _NUMBER_LIST.match(args[i + 1]):
            out.append(f"{a}={args[i + 1]}")
            i += 2
            continue
        out.append(a)
        i += 1
    return out


_STEPS = ("planning", "writing the report")  # progress counted in steps, not files


class _Progress:
    """A tqdm bar on stderr, shown on terminals only, one bar per step name."""

    def __init__(self, enabled: bool = True):
        self.enabled = enabled
        self._bar: Any = None
        self._what = ""

    def __call__(self, done: int, total: int, what: str) -> None:
        if not self.enabled:
            return
        from tqdm import tqdm

        if what != self._what or self._bar is None:
            self.close()
            self._bar = tqdm(total=total, desc=what, unit="step" if what in _STEPS else "file", file=sys.stderr,
                             leave=False, disable=None)
            self._what = what
        self._bar.n = done
        self._bar.refresh()
        if done >= total:
            self.close()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
            self._what = ""


def _positive_int(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"{n}: at least 1")
    return n


def _modality(value: str) -> str | None:
    return None if value.lower() == "any" else value.upper()


# ---------------------------------------------------------------------------------------------
def cmd_info(args: argparse.Namespace) -> int:
    from ..images import load_image, load_series, scan_folder, select_series, source_kind
    from ..images.dicom import series_sub_volumes
    from ..images.quiet import one_line

    path = Path(args.path)
    progress = _Progress(not args.json)
    result: dict[str, Any] = {"source": str(path), "format": source_kind(path), "series": [], "skipped": [], "image": None}
    error: str | None = None
    try:
        if not path.exists():
            raise InputError(f"{path}: no such file or folder")
        if result["format"] == "dicom":
            scan = scan_folder(path, progress)
            result["series"] = scan.describe()
            result["skipped"] = [{"file": f, "reason": r} for f, r in scan.skipped + scan.corrupt_unknown_series]
            series = select_series(scan, args.series, _modality(args.modality))
            result["loaded_series"] = series.uid
            result["sub_volumes"] = series_sub_volumes(series)
            image = load_series(series, str(path), progress, echo=args.echo, phase=args.phase)
            if series.modality == "PT":
                from ..images.pet import suv_summary

                result["suv"] = suv_summary(series)
        else:
            image = load_image(path, args.series, _modality(args.modality), progress, echo=args.echo, phase=args.phase)
        result["image"] = image.describe()
    except InputError as exc:
        error = one_line(exc)
    finally:
        progress.close()
    result["error"] = error
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(_format_info(result))
    if error:
        if not args.json:
            print(f"planner: error: {error}", file=sys.stderr)
        return EXIT_INPUT
    return EXIT_OK


def _format_info(r: dict[str, Any]) -> str:
    from ..images.dicom import format_sub_volumes

    lines = [f"source: {r['source']} ({r['format']})"]
    if r["series"]:
        lines.append(f"series found: {len(r['series'])}")
        loaded = r.get("loaded_series") if r["image"] else None
        for s in r["series"]:
            mark = "*" if s["key"] == loaded else "-"
            sizes = ", ".join(f"{k} ({v})" for k, v in s["image_sizes"].items())
            desc = f" {s['description']!r}" if s["description"] else ""
            blank = " (blank SeriesInstanceUID)" if s["blank_uid"] else ""
            lines.append(f"  {mark} {s['key']}{blank}  {s['modality'] or '?'}  {s['images']} images  {sizes}{desc}")
            if s["key"] == r.get("loaded_series") and r.get("sub_volumes"):
                lines += [f"      {line}" for line in format_sub_volumes(r["sub_volumes"])]
    if r["skipped"]:
        reasons: dict[str, int] = {}
        for item in r["skipped"]:
            reasons[item["reason"]] = reasons.get(item["reason"], 0) + 1
        lines.append("files skipped: " + "; ".join(f"{n} {why}" for why, n in reasons.items()))
    im = r["image"]
    if im:
        def fmt(v: Sequence[float], nd: int = 4) -> str:
            return ", ".join(f"{x:.{nd}f}" for x in v)

        ext = im["extent_lps_mm"]
        lines += [
            "image:",
            f"  modality        {im['modality'] or '?'}",
            f"  patient         {im['patient_name'] or '-'} (ID {im['patient_id'] or '-'})",
            f"  study UID       {im['study_instance_uid'] or '-'}",
            f"  series UID      {im['series_instance_uid'] or '-'}",
            f"  frame of ref.   {im['frame_of_reference_uid'] or '-'}",
            f"  acquired        {im['acquisition_date'] or '-'}",
            f"  size (i, j, k)  {' x '.join(str(n) for n in im['size_ijk'])} voxels",
            f"  spacing (mm)    {fmt(im['spacing_mm_ijk'])}",
            f"  orientation     {im['orientation']} (i, j, k point to these patient directions)",
            f"  origin (LPS)    {fmt(im['origin_lps_mm'], 3)} mm",
            "  affine (ijk -> LPS mm)",
            *[f"    [{fmt(row, 6)}]" for row in im["affine"]],
            f"  extent (LPS)    x {ext['min'][0]:.1f} .. {ext['max'][0]:.1f}, y {ext['min'][1]:.1f} .. {ext['max'][1]:.1f}, "
            f"z {ext['min'][2]:.1f} .. {ext['max'][2]:.1f} mm",
            f"  values          {im['value_range'][0]:g} .. {im['value_range'][1]:g} ({im['dtype']})",
            f"  sha256          {im['sha256']}",
            "  corrections     " + ("none" if not im["corrections"] else ""),
            *[f"    - {c}" for c in im["corrections"]],
        ]
    if r.get("suv"):
        from ..images.pet import format_suv_summary

        lines += ["SUV (PET):", *[f"  {line}" for line in format_suv_summary(r["suv"])]]
    return "\n".join(lines)


def cmd_convert(args: argparse.Namespace) -> int:
    from ..images import load_image, save_image, source_kind

    if source_kind(args.output) not in ("nifti", "nrrd"):
        raise InputError(f"{args.output}: output must end in .nii, .nii.gz or .nrrd")
    progress = _Progress()
    try:
        if args.suv:
            from ..images.pet import load_pet

            if args.modality not in (None, "PT", "pt") or args.echo is not None:
                raise InputError("--suv loads a PET (PT) series: leave out --modality and --echo")
            image = load_pet(args.path, args.suv, args.series, progress, phase=args.phase)
        else:
            image = load_image(args.path, args.series, _modality(args.modality or "CT"), progress, echo=args.echo,
                               phase=args.phase)
    finally:
        progress.close()
    save_image(image, args.output)
    print(f"wrote {args.output}: {image!r}")
    for c in image.meta.corrections:
        print(f"  correction: {c}")
    return EXIT_OK


class _TargetAction(argparse.Action):
    """Collects --target, --target-label and --seed into one list of (kind, text), in order."""

    def __init__(self, option_strings, dest, const=None, default=None, **kwargs):  # type: ignore[no-untyped-def]
        super().__init__(option_strings, dest, nargs=None, const=const, default=default, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):  # type: ignore[no-untyped-def]
        items = list(getattr(namespace, self.dest, None) or [])
        items.append((self.const, values))
        setattr(namespace, self.dest, items)


def cmd_plan(args: argparse.Namespace) -> int:
    from ..session import PlanRequest, TargetSpec, plan_and_write
    from .library import department_preset

    if not args.targets:
        print("planner plan: give a target: --target X,Y,Z, --target-label NAME, --seed X,Y,Z or --target-joint NAME",
              file=sys.stderr)
        return EXIT_INPUT
    if args.pacs:
        from ..planning.presets import load_preset
        from .pacs import fetch_for_plan

        load_preset(args.procedure, args.approach)  # a wrong procedure is said before the pull
        args.ct = str(fetch_for_plan(args))
    elif not args.ct:
        print("planner plan: give the scan: --ct PATH, or --pacs NODE --series UID", file=sys.stderr)
        return EXIT_INPUT
    request = PlanRequest(args.ct, args.procedure, [TargetSpec(kind, text) for kind, text in args.targets],
                          structures=args.structures, series_uid=args.series, modality=args.modality,
                          echo=args.echo, phase=args.phase, approach=args.approach, side=args.side, n_best=args.n,
                          fissure_points=args.fissure_points, pet=getattr(args, "pet", None),
                          avid=getattr(args, "avid", False),
                          pet_registration=getattr(args, "pet_registration", None),
                          preset_file=department_preset(args.preset_file, args.library, args.procedure))
    progress = _Progress()
    try:
        session, plan, rs = plan_and_write(request, args.out, dicom=args.dicom, anonymize=args.anonymize,
                                           progress=progress, scene_html=True)
    finally:
        progress.close()
    if session.preset.variant is not None:
        from ..planning.presets import describe_preset

        print(f"preset: {describe_preset(session.preset.binding())}")
    for block, result in zip(plan.targets, plan.results):
        print(_format_plan(result, block.target, session.preset))
    if "pet" in plan.extra:
        from ..planning.pet_plan import format_pet

        print("\n".join(format_pet(plan.extra["pet"])))
    for note in session.structures.notes:
        print(f"note: {note}")
    for note in plan.extra.get("procedure_notes", []):
        print(f"procedure: {note}")
    for warning in plan.warnings:
        print(f"CHECK: {warning}")
    print(f"wrote {rs.plan_dir / 'plan.json'}")
    print(f"wrote {rs.pdf}, {rs.html.name}, {rs.markups[0].name}, {len(rs.meshes)} meshes"
          + (f", {len(rs.dicom)} DICOM objects in {rs.dicom[0].parent}" if rs.dicom else "")
          + (" (de-identified)" if args.anonymize else ""))
    for note in rs.dicom_notes:
        print(f"note: {note}")
    return EXIT_OK if plan.ok else EXIT_NO_SAFE_PATH


def cmd_review(args: argparse.Namespace) -> int:
    from ..images import load_image
    from ..report.review import review_plan

    from ..planning.output import read_plan
    from .library import check_review_choice, record_review_choice

    image = read_plan(args.dir).get("image", {})
    check_review_choice(args.dir, args.chosen)
    modality = image.get("modality") or "CT"
    echo = args.echo if args.echo is not None else image.get("echo")  # the plan's own, unless told
    phase = args.phase if args.phase is not None else image.get("phase")
    progress = _Progress()
    try:
        ct = load_image(args.ct, args.series, modality, progress, echo=echo, phase=phase)
    finally:
        progress.close()
    result = review_plan(args.dir, ct)
    for line in result.lines() + record_review_choice(args.dir, args.chosen, result):
        print(line)
    code = EXIT_OK if result.ok else EXIT_NO_SAFE_PATH
    if args.no_window:
        return code
    try:
        from .. import scene  # noqa: F401  (the viewer, from the scene issue)
    except ImportError:
        print("viewer not available in this build (planner.scene is missing); the checks above stand. "
              "Use --no-window to only check.", file=sys.stderr)
        return code
    if "view" not in _commands():
        print("viewer not available in this build (no 'planner view'); the checks above stand.", file=sys.stderr)
        return code
    view_code = main(["view", str(args.dir)])
    return code if view_code == EXIT_OK else view_code


def _format_plan(result: Any, target: Any, preset: Any) -> str:
    p = ", ".join(f"{x:.1f}" for x in target.point)
    size = f", {target.diameter_mm:.0f} mm" if target.diameter_mm else ""
    lines = [f"{preset.title}", f"target {target.label} at LPS ({p}) mm{size}"]
    lines += [f"  {e}" for e in result.explanation]
    if result.status != "ok":
        lines.append("NO SAFE TRAJECTORY: every candidate breaks a hard constraint (see above).")
        return "\n".join(lines)
    for t in result.trajectories:
        e = ", ".join(f"{x:.1f}" for x in t.entry)
        lines.append(
            f"#{t.rank} entry LPS ({e}) mm, depth {t.length_mm:.1f} mm, {t.needle.gauge} {t.needle.length_mm:g} mm, "
            f"{t.angle_from_vertical_deg:.0f} deg from vertical, {t.craniocaudal_deg:+.0f} deg craniocaudal, "
            f"{t.position}; {t.limiting}"
        )
        for rf in t.risk_factors:
            lines.append(f"     risk factor: {rf}")
    return "\n".join(lines)


def cmd_check(args: argparse.Namespace) -> int:
    from ..checks.run import NoNeedleFound, run_check

    progress = _Progress()
    try:
        result = run_check(args.dir, args.ct, force=args.force, series_uid=args.series, progress=progress,
                           dicom=args.dicom, anonymize=args.anonymize)
    except NoNeedleFound as exc:
        print(f"planner: no needle: {exc}", file=sys.stderr)
        return EXIT_NO_SAFE_PATH
    finally:
        progress.close()
    for line in result.lines():
        print(line)
    return EXIT_OK


def cmd_segment(args: argparse.Namespace) -> int:
    from ..anatomy.autoseg import segment_ct
    from ..anatomy.fissure_points import read_fissure_points
    from ..anatomy.export import save_structures_folder
    from ..anatomy.slicer_seg import save_slicer_seg
    from ..images import load_image

    points = read_fissure_points(args.fissure_points) if args.fissure_points else None  # fails before the long work
    progress = _Progress()
    try:
        # NIfTI and NRRD record no modality: --modality MR says the file is a (knee) MR
        ct = load_image(args.path, args.series, args.modality, progress, echo=args.echo, phase=args.phase)
        if (ct.meta.modality or "").upper() == "MR":  # a knee MR: its own classical segmentation
            from ..anatomy.autoseg.knee_mr import segment_mr_scan

            ct, seg = segment_mr_scan(args.path, args.series, args.echo, progress, image=ct)
            sset = seg.structures
        else:
            ct = load_image(args.path, args.series, "CT", progress, echo=args.echo, phase=args.phase)
            sset = segment_ct(ct, progress=progress, fissure_points=points)
    finally:
        progress.close()
    if len(sset) == 0:
        raise InputError(f"{args.path}: the automatic segmentation found nothing (no body, lungs or bones) in "
                         f"{ct!r}; is it a CT of a patient? Nothing was written")
    out = Path(args.out)
    save_structures_folder(sset, out)
    save_slicer_seg(sset, out / "segmentation.seg.nrrd")
    print(f"segmented {ct!r}")
    print(f"{'structure':<28}{'class':<11}{'volume ml':>10}")
    for row in sset.summary():
        print(f"{row['name']:<28}{row['class']:<11}{row['volume_ml']:>10.1f}")
    if sset.empty:
        print("not found: " + ", ".join(sorted(sset.empty)))
    for note in sset.notes:
        print(f"note: {note}")
    print(f"wrote {len(sset)} masks (one NIfTI each) and segmentation.seg.nrrd to {out}")
    return EXIT_OK


def cmd_procedures(args: argparse.Namespace) -> int:
    from ..planning import list_presets

    for p in list_presets().values():
        print(f"{p.id:<22}{p.title}")
        for a in p.approaches:
            default = " (default)" if a is p.approaches[0] else ""
            print(f"{'':<22}  --approach {a.id}{default}: {a.title}")
    return EXIT_OK


def cmd_view(args: argparse.Namespace) -> int:
    from ..viewer import open_viewer

    try:
        w, h = (int(x) for x in args.size.lower().split("x"))
    except ValueError:
        raise InputError(f"--size {args.size!r}: expected WIDTHxHEIGHT in pixels, e.g. 1500x900") from None
    check: int | str | None = args.check.lower()
    if check == "none":
        check = None
    elif check != "latest":
        if not str(check).isdigit() or int(str(check)) < 1:
            raise InputError(f"--check {args.check!r}: a check number (1, 2, ...), latest or none")
        check = int(str(check))
    shot = open_viewer(args.dir, room=args.room, offscreen=args.offscreen, screenshot=args.screenshot,
                       size=(w, h), ct_path=args.ct, check=check)
    if shot is not None:
        print(f"wrote {shot}")
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    from ..demo import run_demo

    for line in run_demo(Path(args.out)):
        print(line)
    return EXIT_OK


def _add_sub_volume_options(q: argparse.ArgumentParser) -> None:
    """--echo and --phase: which images of a DICOM series with several per slice position."""
    q.add_argument("--echo", type=int, metavar="N",
                   help="echo to load from a multi-echo DICOM series (its EchoNumbers value; default the first)")
    q.add_argument("--phase", type=int, metavar="N",
                   help="phase, temporal position, acquisition or image type to load from a DICOM series with "
                        "several images per slice position (the number planner info lists; default the first)")


def _commands() -> set[str]:
    """The sub-command names this build offers."""
    build_parser()
    return set(_COMMAND_NAMES)


_COMMAND_NAMES: list[str] = []


# ---------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="planner",
        description="Plan needle trajectories on CT (and MR). Positions are DICOM patient coordinates (LPS, mm).",
    )
    p.add_argument("--version", action="version", version=f"planner {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    q = sub.add_parser("info", help="list the series under PATH and the geometry of the one that would load")
    q.add_argument("path", help="DICOM folder (searched recursively) or file, NIfTI or NRRD")
    q.add_argument("--json", action="store_true", help="print JSON instead of text")
    q.add_argument("--series", help="SeriesInstanceUID to load when there are several")
    q.add_argument("--modality", default="CT", help="modality required (default CT; 'any' for any)")
    _add_sub_volume_options(q)
    q.set_defaults(func=cmd_info)

    q = sub.add_parser("convert", help="write the loaded volume (after every correction) to NIfTI or NRRD")
    q.add_argument("path", help="DICOM folder or file, NIfTI or NRRD")
    q.add_argument("output", help="output file: .nii, .nii.gz or .nrrd")
    q.add_argument("--series", help="SeriesInstanceUID to load when there are several")
    q.add_argument("--modality", help="modality required (default CT; 'any' for any)")
    q.add_argument("--suv", nargs="?", const="bw", choices=("bw", "lbm"),
                   help="a PET (PT) series in SUV: bw body weight (the default), lbm lean body mass (SUL)")
    _add_sub_volume_options(q)
    q.set_defaults(func=cmd_convert)

    q = sub.add_parser("plan", help="plan needle trajectories and write plan.json into --out")
    q.add_argument("--ct", help="DICOM folder or file, NIfTI or NRRD (or --pacs NODE --series UID)")
    q.add_argument("--pacs", metavar="NODE", help="take the series --series from this PACS node (pulled into a cache "
                                                  "keyed by series UID and content)")
    q.add_argument("--pacs-config", metavar="PATH", help="the PACS nodes (TOML; default ~/.config/planner/pacs.toml)")
    q.add_argument("--structures", help="TotalSegmentator folder, label map, .seg.nrrd, DICOM SEG or RTSTRUCT "
                                       "(default: automatic segmentation of the CT)")
    q.add_argument("--target", action=_TargetAction, dest="targets", const="point", default=[],
                   help="target point X,Y,Z in LPS mm (e.g. -82,82,-8); repeat the target options for several "
                        "targets in one plan (kept in the order given)")
    q.add_argument("--target-label", action=_TargetAction, dest="targets", const="label", default=[],
                   help="name of the target structure in the structure set")
    q.add_argument("--seed", action=_TargetAction, dest="targets", const="seed", default=[],
                   help="a point X,Y,Z (LPS mm) inside a lesion to segment and target")
    q.add_argument("--target-joint", action=_TargetAction, dest="targets", const="joint", default=[],
                   help="a joint target found from the segmented bones: hip_left, hip_right (anterior femoral "
                        "head-neck junction), knee_recess_left, knee_recess_right (suprapatellar recess)")
    q.add_argument("--procedure", required=True, help="procedure preset id (see planner procedures)")
    q.add_argument("--out", required=True, help="output folder")
    q.add_argument("--series", help="SeriesInstanceUID to load when there are several")
    _add_sub_volume_options(q)
    q.add_argument("--n", type=_positive_int, default=5, help="number of distinct trajectories to keep (default 5)")
    q.add_argument("--modality", choices=["CT", "MR"], default="CT",
                   help="modality of the scan given with --ct (default CT; an MR without --structures is segmented as a knee)")
    q.add_argument("--approach", help="the preset's approach (see planner procedures; default its first)")
    q.add_argument("--fissure-points", metavar="MRK_JSON",
                   help="3D Slicer markups (.mrk.json) with points on the fissures (markups or points named "
                        "'oblique' or 'minor'): with the automatic segmentation, the lungs they lie in get their lobes through them instead of from "
                        "the image (the right lung needs points on both fissures)")
    q.add_argument("--side", choices=["left", "right"],
                   help="side of the target, for lateral and medial approaches (default: from its label)")
    q.add_argument("--pet", metavar="PATH", help="a PET series (DICOM, same frame of reference as the CT) in SUV: the "
                                                 "lesion's SUVmax, SUVpeak, SUVmean and each core's SUV in plan.json")
    q.add_argument("--pet-registration", metavar="FILE",
                   help="with --pet of another frame of reference: a 4x4 matrix taking PET LPS to CT LPS (mm), as "
                        "text (four rows of four numbers) or JSON, from a registration you trust")
    q.add_argument("--avid", action="store_true",
                   help="with --pet: aim at the lesion's most avid part (the SUVpeak 1 ml sphere's centre, PERCIST) "
                        "instead of its deepest point; needs --target-label or --seed")
    q.add_argument("--dicom", action="store_true",
                   help="also write the report (Encapsulated PDF) and key images (Secondary Capture) as DICOM in "
                        "the CT's study, into OUT/dicom")
    q.add_argument("--anonymize", action="store_true",
                   help="leave no patient identifier in any output (DICOM PS3.15 basic profile for DICOM objects)")
    q.add_argument("--preset-file", metavar="PATH",
                   help="plan with this variant of the procedure's preset (a department variant written by planner "
                        "library learn): its soft-criterion weights; refused unless every hard constraint is the "
                        "shipped preset's")
    q.add_argument("--library", metavar="ROOT",
                   help="plan with the department variant of the case library ROOT (ROOT/presets/PROCEDURE.json)")
    q.set_defaults(func=cmd_plan)

    q = sub.add_parser("review", help="check a plan against its scan (series UID, voxel hash) and re-verify it")
    q.add_argument("dir", help="plan folder (holds plan.json and structures.seg.nrrd)")
    q.add_argument("--ct", required=True, help="the scan: DICOM folder or file, NIfTI or NRRD")
    q.add_argument("--series", help="SeriesInstanceUID to load when there are several")
    _add_sub_volume_options(q)
    q.add_argument("--no-window", action="store_true", help="only check; do not open the viewer")
    q.add_argument("--chosen", type=_positive_int, metavar="RANK",
                   help="record trajectory RANK as the one chosen (DIR/choice.json, kept by planner library add), "
                        "when it passes its checks")
    q.set_defaults(func=cmd_review)

    q = sub.add_parser("check", help="a check scan with the needle in: registration, needle, deviation from the "
                                     "plan and the correction, into DIR/checks/NN")
    q.add_argument("dir", help="plan folder written by planner plan")
    q.add_argument("--ct", required=True, help="the check scan: DICOM folder or file, NIfTI or NRRD")
    q.add_argument("--series", help="SeriesInstanceUID to load when there are several")
    q.add_argument("--force", action="store_true",
                   help="go on when the check scan names no patient (blank identifiers)")
    q.add_argument("--dicom", action="store_true",
                   help="also write the check's images and page as DICOM (Secondary Capture, Encapsulated PDF)")
    q.add_argument("--anonymize", action="store_true", help="leave the patient's identifiers out of what is written")
    q.set_defaults(func=cmd_check)

    from .batch import add_commands as add_batch
    from .library import add_commands as add_library
    from .pacs import add_commands
    from .web import add_commands as add_web

    add_commands(sub)
    add_batch(sub)
    add_library(sub)
    add_web(sub)

    q = sub.add_parser("segment", help="segment the CT automatically: one NIfTI per structure and a .seg.nrrd")
    q.add_argument("path", help="DICOM folder or file, NIfTI or NRRD (a CT; or a knee MR)")
    q.add_argument("--out", required=True, help="output folder")
    q.add_argument("--series", help="SeriesInstanceUID to load when there are several")
    q.add_argument("--modality", choices=["CT", "MR"],
                   help="modality of the scan (default: the DICOM's own; a NIfTI or NRRD is taken as CT unless "
                        "MR is given); an MR is segmented as a knee")
    q.add_argument("--fissure-points", metavar="MRK_JSON",
                   help="3D Slicer markups (.mrk.json) with points on the fissures (markups or points named "
                        "'oblique' or 'minor'): the lungs they lie in get their lobes through them instead of from "
                        "the image (the right lung needs points on both fissures)")
    _add_sub_volume_options(q)
    q.set_defaults(func=cmd_segment)

    q = sub.add_parser("procedures", help="list the procedure presets")
    q.set_defaults(func=cmd_procedures)

    q = sub.add_parser("view", help="review a plan folder in the interactive 3D viewer")
    q.add_argument("dir", help="plan folder written by planner plan (plan.json, structures.seg.nrrd, risk_map.npz)")
    q.add_argument("--room", action="store_true", help="procedure-room mode: the chosen plan only, large type")
    q.add_argument("--offscreen", action="store_true", help="build the viewer without a window and write a screenshot")
    q.add_argument("--screenshot", help="PNG to write with --offscreen (default DIR/images/viewer.png)")
    q.add_argument("--size", default="1500x900", help="window size WIDTHxHEIGHT (default 1500x900)")
    q.add_argument("--ct", help="the CT, when plan.json's image.source no longer points to it")
    q.add_argument("--check", default="latest",
                   help="the check scan whose needle is shown beside the plan: its number, latest (default) or none")
    q.set_defaults(func=cmd_view)

    q = sub.add_parser("demo", help="run the embedded demo cases into out/demo/")
    q.add_argument("--out", default="out/demo", help="output folder (default out/demo)")
    q.set_defaults(func=cmd_demo)
    _COMMAND_NAMES[:] = list(sub.choices)
    return p


def _show_warning(message: Any, category: Any, filename: str, lineno: int, file: Any = None, line: Any = None) -> None:
    """Library warnings (pydicom on an over-long header value, ...) as one line each, each once."""
    from ..images.quiet import one_line

    text = one_line(message)
    if text not in _WARNED:
        _WARNED.add(text)
        print(f"planner: warning: {text}", file=sys.stderr)


_WARNED: set[str] = set()


def main(argv: Sequence[str] | None = None) -> int:
    import warnings

    warnings.showwarning = _show_warning
    parser = build_parser()
    args = parser.parse_args(normalise_argv(sys.argv[1:] if argv is None else argv))
    from ..images.quiet import one_line

    try:
        return int(args.func(args))
    except InputError as exc:
        print(f"planner: error: {one_line(exc)}", file=sys.stderr)
        return EXIT_INPUT
    except PlannerError as exc:
        print(f"planner: error: {one_line(exc)}", file=sys.stderr)
        return EXIT_INPUT
    except KeyboardInterrupt:
        print("planner: interrupted", file=sys.stderr)
        return 130
    except Exception:
        traceback.print_exc()
        print("planner: internal error (a bug): please report it with the traceback above", file=sys.stderr)
        return EXIT_BUG


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
