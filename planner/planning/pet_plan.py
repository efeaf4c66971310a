"""A PET attached to a planning session: loaded in SUV, put on the CT grid once, and what a plan
says of it (``plan.json``'s ``pet``): the SUV factors, each lesion's SUVmax, SUVpeak and
SUVmean, the avid target, and per trajectory the SUV its biopsy core samples.
"""

from __future__ import annotations

import os
from typing import Any, Sequence

from ..anatomy.target import Target
from ..errors import InputError
from ..images import Image
from .pet_target import DEFAULT_CORE_LENGTH_MM, LesionSuv, avid_target, core_suv, lesion_suv


def core_length_mm(preset: Any) -> tuple[float, str]:
    """The preset's biopsy throw (``biopsy.core_length_mm``) and where it comes from."""
    biopsy = preset.raw.get("biopsy") or {}
    if "core_length_mm" in biopsy:
        return float(biopsy["core_length_mm"]), f"preset {preset.id}"
    return DEFAULT_CORE_LENGTH_MM, f"default {DEFAULT_CORE_LENGTH_MM:g} mm (preset {preset.id} names no core length)"


#: With --avid, this many times n trajectories are planned and re-ranked by their core's SUV.
RERANK_FACTOR = 4


class PlanPet:
    """The PET in SUV on the CT grid (NaN outside the PET's field of view)."""

    def __init__(self, suv: Image, factors: Any, source: str, registration: dict[str, Any] | None = None):
        self.suv = suv
        self.factors = factors
        self.source = source
        self.registration = registration  # {"file", "pet_to_ct"} when the PET was mapped by a given matrix
        self._lesions: dict[int, LesionSuv] = {}
        self._avid: dict[tuple[float, ...], dict[str, Any]] = {}  # the facts of each avid target, by its point
        self.core_length_mm = DEFAULT_CORE_LENGTH_MM

    @classmethod
    def load(cls, path: str | os.PathLike[str], ct: Image, progress: Any = None, kind: str = "bw",
             registration: str | os.PathLike[str] | None = None) -> "PlanPet":
        from ..images.pet import read_pet, read_registration, resample_to

        m = read_registration(registration) if registration is not None else None
        pet, factors = read_pet(path, kind, progress=progress)
        reg = None if m is None else {"file": str(registration), "pet_to_ct": [[round(float(x), 6) for x in row]
                                                                                for row in m]}
        return cls(resample_to(pet, ct, m), factors, str(path), reg)

    def lesion(self, target: Target) -> LesionSuv:
        """SUV of a target's lesion (computed once per structure)."""
        assert target.structure is not None
        key = id(target.structure)
        if key not in self._lesions:
            mask = target.structure.full(self.suv.shape)
            self._lesions[key] = lesion_suv(self.suv.voxels, mask, self.suv.affine)
        return self._lesions[key]

    def avid_target(self, target: Target) -> Target:
        avid, stats, facts = avid_target(target, self.suv.voxels, self.suv.affine, core_length_mm=self.core_length_mm)
        assert target.structure is not None
        self._lesions[id(target.structure)] = stats
        self._avid[tuple(avid.point)] = facts
        return avid

    def rerank(self, result: Any, target: Target, n_best: int) -> None:
        """With an avid target: order the feasible trajectories by the mean SUV their core
        samples, highest first (ties by the preset's score), and keep ``n_best`` (in place)."""
        if not result.trajectories:
            return
        means = []
        for t in result.trajectories:
            c = core_suv(self.suv.voxels, self.suv.affine, t.entry, t.target, self.core_length_mm)
            means.append(c.get("suv_mean", float("-inf")))
        order = sorted(range(len(means)), key=lambda i: (-means[i], result.trajectories[i].rank))[:n_best]
        kept = [result.trajectories[i] for i in order]
        for n, t in enumerate(kept, 1):
            t.rank = n
        result.trajectories[:] = kept

    def summary(self, targets: Sequence[Target], results: Sequence[Any], preset: Any, avid: bool) -> dict[str, Any]:
        """``plan.json``'s ``pet``."""
        length, length_source = core_length_mm(preset)
        blocks = []
        for target, result in zip(targets, results):
            block: dict[str, Any] = {"label": target.label, "avid_target": avid and target.how.endswith("+avid")}
            stats = None
            if target.structure is not None:
                try:
                    stats = self.lesion(target)
                    block["lesion"] = stats.to_dict()
                    if stats.pet_coverage < 1.0:
                        block["note"] = (f"only {100 * stats.pet_coverage:.0f} % of {target.label} lies in the PET's "
                                         "field of view: its SUVmax, SUVpeak and SUVmean are those of that part")
                except InputError as exc:
                    block["lesion_error"] = str(exc)
            if block["avid_target"]:
                block["target_point"] = [round(float(x), 2) for x in target.point]
                block["avid_choice"] = self._avid.get(tuple(target.point), {})
            mask = target.structure.full(self.suv.shape) if target.structure is not None else None
            block["trajectories"] = [
                {"rank": t.rank, "core": core_suv(self.suv.voxels, self.suv.affine, t.entry, t.target, length, mask,
                                                  stats.suv_max if stats else None)}
                for t in result.trajectories]
            blocks.append(block)
        extra = {"registration": self.registration} if self.registration else {}
        return {**extra, "source": self.source, "units": self.suv.meta.units, "suv_factors": self.factors.summary(),
                "suv": self.factors.to_dict(), "resampling": self.suv.meta.corrections[-1],
                "core_length_mm": length, "core_length_source": length_source,
                "ranking": (f"the feasible trajectories (up to {RERANK_FACTOR} x n by the preset's score) ordered by "
                            "the mean SUV their core samples, highest first" if avid else "the preset's score"),
                "targets": blocks}


def format_pet(summary: dict[str, Any]) -> list[str]:
    """The command line's lines for a plan's ``pet``."""
    lines = [(f"PET {summary['source']}: {summary['units']}; biopsy core {summary['core_length_mm']:g} mm, "
              "centred on the target")]
    for b in summary["targets"]:
        s = b.get("lesion")
        if s:
            c = ", ".join(f"{x:.1f}" for x in s["suv_peak_centre"])
            lines.append(f"  {b['label']}: SUVmax {s['suv_max']:.2f}, SUVpeak {s['suv_peak']:.2f} (1 ml sphere at "
                         f"LPS ({c}) mm), SUVmean {s['suv_mean']:.2f}, {s['volume_ml']:.1f} ml"
                         )
        a = b.get("avid_choice")
        if b["avid_target"] and a:
            c = ", ".join(f"{x:.1f}" for x in a["point"])
            lines.append(f"  avid target at LPS ({c}) mm: " + (
                "the SUVpeak centre" if a.get("is_suv_peak_centre") else
                f"the hottest 1 ml sphere (SUV {a['sphere_suv']:.2f}) at least {a['min_depth_mm']:.1f} mm inside the "
                "lesion, so the core stays in it") + (f"; {a['note']}" if a.get("note") else ""))
        if b.get("note"):
            lines.append(f"  CHECK: {b['note']}")
        if b.get("lesion_error"):
            lines.append(f"  {b['label']}: {b['lesion_error']}")
        for t in b["trajectories"]:
            c = t["core"]
            if "suv_mean" in c:
                share = f" ({100 * c['share_of_lesion_suv_max']:.0f} % of SUVmax)" if "share_of_lesion_suv_max" in c \
                    else ""
                inside = f", {100 * c['in_lesion']:.0f} % in the lesion" if "in_lesion" in c else ""
                lines.append(f"    #{t['rank']} core SUV mean {c['suv_mean']:.2f}{share}, min {c['suv_min']:.2f}, "
                             f"max {c['suv_max']:.2f}{inside}")
    return lines


__all__ = ["PlanPet", "core_length_mm", "format_pet"]
