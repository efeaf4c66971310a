"""PET series in standardized uptake values (SUV), and PET values on another image's grid.

SUV body weight (SUVbw, g/ml) of a voxel::

    SUVbw = C * W / D_ref

``C`` the activity concentration (Bq/ml: the stored value times the slice's own RescaleSlope
plus RescaleIntercept, Units BQML), ``W`` the patient's weight in grams (PatientWeight, kg,
times 1000), ``D_ref`` the injected activity (RadionuclideTotalDose, Bq, at the injection time
RadiopharmaceuticalStartDateTime, or RadiopharmaceuticalStartTime on the SeriesDate) decayed
to the time the image values refer to: ``D_ref = D * 2 ** (-(t_ref - t_inj) / T_half)``
(RadionuclideHalfLife, s). ``t_ref`` follows DecayCorrection (0054,1102) of the PET Series module
(DICOM PS3.3 C.8.9.1): START, the images are decay-corrected to the series reference time
SeriesDate/SeriesTime (taken as the QIBA FDG-PET/CT Profile's vendor-neutral pseudo-code,
Appendix G, takes it: the SeriesDate/SeriesTime when it is not after the earliest
AcquisitionDate/AcquisitionTime of the series, else that earliest acquisition start, which
``SuvFactors.reference_source`` then names); ADMIN, decay-corrected to the injection, so
``D_ref = D``; NONE, not decay-corrected at all: each image holds the mean activity over its
own frame (AcquisitionDate/AcquisitionTime, the frame start, ActualFrameDuration), so its
factor is ``W / D(t_frame_start) * lambda * dt / (1 - exp(-lambda * dt))`` (the mean of the
decay over the frame), image by image.

SUL, SUV lean body mass: ``W`` replaced by the lean body mass of Janmahasatian et al., Clin
Pharmacokinet 2005;44(10):1051-65, the formula the QIBA FDG-PET/CT Profile (Appendix H) and
Tahari et al., J Nucl Med 2014;55:1481-4 recommend over James' (which PERCIST 1.0 first used,
and which falls at high body mass index)::

    LBM (kg) = 9270 * W / (6680 + 216 * BMI)   men
    LBM (kg) = 9270 * W / (8780 + 244 * BMI)   women,   BMI = W / H**2 (kg, m)

with PatientSize (m) and PatientSex (M or F).

Units GML: the values are SUV already (body weight unless SUVType (0054,1006) says otherwise)
and are taken as they are (factor 1; SUL from them is SUVbw * LBM / W). Units CNTS: only with
Philips' private SUV scale factor (7053,1000), as the QIBA pseudo-code does; otherwise refused.

Every missing, impossible or contradictory attribute is refused with an :class:`InputError`
naming the file and the tag; nothing is guessed.
"""

from __future__ import annotations

import datetime as _dt
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..errors import InputError, brief
from .image import Image

SUV_KINDS = ("bw", "lbm")
SUV_UNITS = {"bw": "SUVbw", "lbm": "SUVlbm"}
SUV_WORDS = {"bw": "SUV body weight", "lbm": "SUL (SUV lean body mass, Janmahasatian 2005)"}

#: Half-lives (s) of the usual PET radionuclides (NNDC/DDEP values); a RadionuclideHalfLife
#: more than HALF_LIFE_TOLERANCE away from the one its RadionuclideCodeSequence names is refused.
KNOWN_HALF_LIVES_S = {
    "F18": 6586.2, "C11": 1221.8, "N13": 597.9, "O15": 122.24, "GA68": 4062.6, "RB82": 75.45,
    "CU64": 45721.0, "ZR89": 282276.0, "I124": 360806.0,
}
_ELEMENT_NAMES = {"FLUORINE": "F", "CARBON": "C", "NITROGEN": "N", "OXYGEN": "O", "GALLIUM": "GA",
                  "RUBIDIUM": "RB", "COPPER": "CU", "ZIRCONIUM": "ZR", "IODINE": "I"}
HALF_LIFE_TOLERANCE = 0.03

#: Plausible ranges; values outside are refused as impossible (or in another unit).
WEIGHT_RANGE_KG = (0.2, 700.0)
HEIGHT_RANGE_M = (0.2, 3.0)
DOSE_RANGE_BQ = (1e5, 1e11)


# ---------------------------------------------------------------------------------------------
# Messages
# ---------------------------------------------------------------------------------------------
def _tag(keyword: str) -> str:
    from pydicom.datadict import tag_for_keyword

    t = tag_for_keyword(keyword)
    return f"({t >> 16:04X},{t & 0xFFFF:04X})" if t is not None else "(?)"


def _named(keyword: str) -> str:
    return f"{keyword} {_tag(keyword)}"


def _refuse(path: str, text: str) -> InputError:
    return InputError(f"{path}: {text}; no SUV computed")


# ---------------------------------------------------------------------------------------------
# Header values
# ---------------------------------------------------------------------------------------------
def _text(ds: Any, keyword: str) -> str:
    v = ds.get(keyword, None) if ds is not None else None
    if v is None:
        return ""
    if not isinstance(v, (str, bytes)) and hasattr(v, "__iter__"):
        return "\\".join(str(x).strip() for x in v)
    return str(v).strip()


def _number(ds: Any, keyword: str, path: str, what: str) -> float | None:
    """A finite number, None when absent or empty, an InputError when not a number."""
    v = ds.get(keyword, None) if ds is not None else None
    if v is None or (isinstance(v, (str, bytes)) and not str(v).strip()):
        return None
    try:
        x = float(v)
    except (TypeError, ValueError):
        raise _refuse(path, f"{_named(keyword)} ({what}) is not a number: {brief(repr(v), 40)}") from None
    if not math.isfinite(x):
        raise _refuse(path, f"{_named(keyword)} ({what}) is {x}, not a finite number")
    return x


def _date(text: str, keyword: str, path: str) -> _dt.date:
    t = text.replace(".", "").replace("-", "").strip()
    try:
        if len(t) != 8:
            raise ValueError
        return _dt.date(int(t[:4]), int(t[4:6]), int(t[6:8]))
    except ValueError:
        raise _refuse(path, f"{_named(keyword)} {text!r} is not a date (YYYYMMDD)") from None


def _time(text: str, keyword: str, path: str) -> _dt.time:
    t = text.strip().replace(":", "")
    frac = 0.0
    if "." in t:
        t, f = t.split(".", 1)
        try:
            frac = float("0." + f) if f else 0.0
        except ValueError:
            raise _refuse(path, f"{_named(keyword)} {text!r} is not a time (HHMMSS.FFFFFF)") from None
    try:
        if len(t) not in (2, 4, 6) or not t.isdigit():
            raise ValueError
        hh, mm, ss = int(t[:2]), int(t[2:4] or 0), int(t[4:6] or 0)
        return _dt.time(hh, mm, min(ss, 59), int(round(frac * 1e6)) if frac < 0.9999995 else 999999)
    except ValueError:
        raise _refuse(path, f"{_named(keyword)} {text!r} is not a time (HHMMSS.FFFFFF)") from None


def _offset(text: str) -> _dt.timedelta | None:
    """A UTC offset '+HHMM' / '-HHMM' as a timedelta, None if blank."""
    if not text:
        return None
    m = re.fullmatch(r"([+-])(\d\d)(\d\d)", text.strip())
    if not m:
        return None
    sign = 1 if m.group(1) == "+" else -1
    return sign * _dt.timedelta(hours=int(m.group(2)), minutes=int(m.group(3)))


def _datetime_dt(text: str, keyword: str, path: str) -> tuple[_dt.datetime, _dt.timedelta | None]:
    """A DT value (YYYYMMDDHHMMSS.FFFFFF&ZZXX, partial allowed down to the hour) and its offset."""
    t = text.strip()
    m = re.fullmatch(r"(\d{8})(\d{2,6}(?:\.\d{0,6})?)?([+-]\d{4})?", t)
    if not m or (m.group(2) and len(m.group(2).split(".")[0]) % 2):
        raise _refuse(path, f"{_named(keyword)} {text!r} is not a date-time (YYYYMMDDHHMMSS)")
    d = _date(m.group(1), keyword, path)
    tm = _time(m.group(2), keyword, path) if m.group(2) else _dt.time(0)
    return _dt.datetime.combine(d, tm), _offset(m.group(3) or "")


def _iso(t: _dt.datetime | None) -> str:
    return "" if t is None else t.isoformat(sep=" ", timespec="seconds")


# ---------------------------------------------------------------------------------------------
# The factors
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SuvFactors:
    """How the values of one PT series become SUV: ``SUV = value * factor``.

    ``value`` is the stored value times the slice's RescaleSlope plus its RescaleIntercept.
    ``slice_factors`` holds one factor per image (file) when they differ (DecayCorrection NONE),
    keyed by the image's ImagePositionPatient; ``factor`` is then the first image's.
    Times are local, as the file writes them; ``decay_s`` is from the injection to ``reference_time``.
    """

    kind: str
    units: str
    factor: float
    decay_correction: str = ""
    reference_time: str = ""
    reference_source: str = ""
    injection_time: str = ""
    injection_source: str = ""
    decay_s: float | None = None
    dose_bq: float | None = None
    dose_at_reference_bq: float | None = None
    half_life_s: float | None = None
    radionuclide: str = ""
    weight_kg: float | None = None
    height_m: float | None = None
    sex: str = ""
    lbm_kg: float | None = None
    source: str = ""
    notes: tuple[str, ...] = ()
    slice_factors: tuple[tuple[tuple[float, float, float], float], ...] = field(default=(), repr=False)

    @property
    def label(self) -> str:
        return SUV_UNITS[self.kind]

    def to_dict(self) -> dict[str, Any]:
        d = {k: getattr(self, k) for k in (
            "kind", "units", "factor", "decay_correction", "reference_time", "reference_source", "injection_time",
            "injection_source", "decay_s", "dose_bq", "dose_at_reference_bq", "half_life_s", "radionuclide",
            "weight_kg", "height_m", "sex", "lbm_kg", "source")}
        d["suv"] = self.label
        d["notes"] = list(self.notes)
        if self.slice_factors:
            d["factor_range"] = [min(f for _, f in self.slice_factors), max(f for _, f in self.slice_factors)]
        return d

    def summary(self) -> str:
        """One sentence for ``Image.meta.corrections``."""
        if self.units == "GML" and self.factor == 1.0:
            how = "values already in SUV (Units GML), taken as they are"
        elif self.slice_factors:
            lo, hi = (min(f for _, f in self.slice_factors), max(f for _, f in self.slice_factors))
            how = f"factor {lo:.6g} .. {hi:.6g} per image (no decay correction in the file, each frame's own decay)"
        else:
            how = f"factor {self.factor:.6g}"
        extra = []
        if self.decay_correction and self.units != "GML":
            extra.append(f"decay correction {self.decay_correction}")
        if self.reference_time and self.units != "GML":
            extra.append(f"reference {self.reference_time} ({self.reference_source})")
        if self.dose_bq is not None and self.units != "GML":
            extra.append(f"dose {self.dose_bq / 1e6:.4g} MBq at {self.injection_time}")
        if self.lbm_kg is not None:
            extra.append(f"LBM {self.lbm_kg:.2f} kg")
        return f"values in {self.label} (g/ml), from Units {self.units}: {how}" + (
            f" ({'; '.join(extra)})" if extra else "")

    def lines(self, details: bool = True) -> list[str]:
        """``planner info``'s lines; without ``details`` the dose and times are left out (they
        are the body-weight factors' own, printed just before)."""
        out = [f"{SUV_WORDS[self.kind]}: SUV = value x {self.factor:.6g}" + (
            " (first image; per image below)" if self.slice_factors else "") + f"   [Units {self.units}]"]
        if self.units == "GML":
            out.append("  the file's values are SUV already (Units GML): taken as they are"
                       + (", times the lean body mass over the weight" if self.factor != 1.0 else ""))
        if self.units == "BQML" and details:
            out.append(f"  decay correction {self.decay_correction}: values refer to "
                       f"{self.reference_time or 'each frame start'} ({self.reference_source})")
            out.append(f"  injected {self.dose_bq / 1e6:.4g} MBq ({_named('RadionuclideTotalDose')}) at "
                       f"{self.injection_time} ({self.injection_source})")
            if self.half_life_s is not None:
                out.append(f"  half-life {self.half_life_s:g} s{' (' + self.radionuclide + ')' if self.radionuclide else ''}"
                           + (f", uptake time {self.decay_s / 60:.1f} min, activity then "
                              f"{self.dose_at_reference_bq / 1e6:.4g} MBq" if self.decay_s is not None
                              and self.dose_at_reference_bq is not None else ""))
        if self.weight_kg is not None:
            out.append(f"  weight {self.weight_kg:g} kg" + (f", height {self.height_m:g} m" if self.height_m else "")
                       + (f", sex {self.sex}" if self.sex else "")
                       + (f", lean body mass {self.lbm_kg:.2f} kg" if self.lbm_kg is not None else ""))
        if self.slice_factors:
            fs = [f for _, f in self.slice_factors]
            out.append(f"  per-image factors {min(fs):.6g} .. {max(fs):.6g} ({len(fs)} images)")
        out += [f"  note: {n}" for n in self.notes]
        return out


def lean_body_mass_kg(weight_kg: float, height_m: float, sex: str) -> float:
    """Janmahasatian et al. 2005 lean body mass (kg); ``sex`` "M" or "F"."""
    bmi = weight_kg / height_m ** 2
    if sex == "M":
        return 9270.0 * weight_kg / (6680.0 + 216.0 * bmi)
    if sex == "F":
        return 9270.0 * weight_kg / (8780.0 + 244.0 * bmi)
    raise ValueError(f"sex must be 'M' or 'F', got {sex!r}")


def _same_everywhere(headers: Sequence[Any], paths: Sequence[str], keyword: str, seq: bool = False) -> None:
    """Refuse a series whose images disagree on an attribute the SUV depends on."""
    def value(ds: Any) -> str:
        if seq:
            item = _radiopharm_item(ds)
            return _text(item, keyword) if item is not None else ""
        return _text(ds, keyword)

    first = value(headers[0])
    for ds, p in zip(headers[1:], paths[1:]):
        v = value(ds)
        if v != first:
            raise _refuse(p, f"{_named(keyword)} is {v!r} here but {first!r} in {paths[0]}: the images of one "
                             f"series contradict each other")


def _radiopharm_item(ds: Any) -> Any:
    seq = ds.get("RadiopharmaceuticalInformationSequence", None)
    if seq is None or len(seq) == 0:
        return None
    return seq[0]


def _nuclide(item: Any) -> str:
    """'F18', 'GA68', ... from RadionuclideCodeSequence's CodeMeaning, '' if not recognised."""
    codes = item.get("RadionuclideCodeSequence", None) if item is not None else None
    if not codes:
        return ""
    meaning = re.sub(r"[^A-Za-z0-9]", "", str(codes[0].get("CodeMeaning", ""))).upper()
    m = re.fullmatch(r"(\d+)([A-Z]+)|([A-Z]+)(\d+)", meaning)
    if not m:
        return ""
    mass, name = (m.group(1), m.group(2)) if m.group(1) else (m.group(4), m.group(3))
    symbol = _ELEMENT_NAMES.get(name, name)
    key = f"{symbol}{int(mass)}"
    return key if key in KNOWN_HALF_LIVES_S else ""


def _philips_private(ds: Any, element: int) -> float | None:
    """A value of the "Philips PET Private Group" block (7053,10xx), None if absent."""
    try:
        block = ds.private_block(0x7053, "Philips PET Private Group")
        elem = block[element]
    except (KeyError, ValueError):
        return None
    try:
        x = float(elem.value if not isinstance(elem.value, bytes) else elem.value.decode().strip())
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) and x > 0 else None


def _check_kind(kind: str) -> str:
    k = str(kind).lower()
    if k not in SUV_KINDS:
        raise InputError(f"SUV kind {kind!r}: choose 'bw' (body weight) or 'lbm' (lean body mass, SUL)")
    return k


def suv_factors(headers: Sequence[Any], paths: Sequence[str], kind: str = "bw") -> SuvFactors:
    """The SUV factors of one PT series from its headers (pydicom Datasets, pixels not needed).

    Parameters
    ----------
    headers, paths
        The series' images and their files (``DicomSeries.headers`` / ``.paths``).
    kind
        "bw" (SUV body weight) or "lbm" (SUL, Janmahasatian lean body mass).

    Raises
    ------
    InputError
        Naming the file and the tag, for any missing, impossible or contradictory attribute.
    """
    kind = _check_kind(kind)
    if not headers:
        raise InputError("no PET images to compute SUV from")
    ds, path = headers[0], str(paths[0])
    modality = _text(ds, "Modality")
    if modality != "PT":
        raise _refuse(path, f"the series is {modality or 'of unknown modality'}; SUV needs a PET (PT) series")
    if int(ds.get("NumberOfFrames", 1) or 1) > 1 or "PerFrameFunctionalGroupsSequence" in ds:
        raise _refuse(path, "an Enhanced (multi-frame) PET image; SUV is computed for classic PET Image Storage "
                            "series only")
    for keyword in ("Units", "DecayCorrection", "SeriesDate", "SeriesTime", "PatientWeight", "PatientSize",
                    "PatientSex", "CorrectedImage", "SUVType"):
        _same_everywhere(headers, paths, keyword)
    for keyword in ("RadionuclideTotalDose", "RadionuclideHalfLife", "RadiopharmaceuticalStartTime",
                    "RadiopharmaceuticalStartDateTime"):
        _same_everywhere(headers, paths, keyword, seq=True)

    units = _text(ds, "Units").upper()
    if not units:
        raise _refuse(path, f"{_named('Units')} is missing: the unit of the values is unknown")
    notes: list[str] = []

    weight = _number(ds, "PatientWeight", path, "patient weight, kg")
    height = _number(ds, "PatientSize", path, "patient height, m")
    sex = _text(ds, "PatientSex").upper()

    def need_weight() -> float:
        if weight is None:
            raise _refuse(path, f"{_named('PatientWeight')} is missing: SUV needs the patient's weight")
        if not WEIGHT_RANGE_KG[0] <= weight <= WEIGHT_RANGE_KG[1]:
            raise _refuse(path, f"{_named('PatientWeight')} {weight:g} kg is impossible (expected "
                                f"{WEIGHT_RANGE_KG[0]:g} to {WEIGHT_RANGE_KG[1]:g} kg)")
        return weight

    def need_lbm() -> tuple[float, float]:
        w = need_weight()
        if height is None or height == 0:
            raise _refuse(path, f"{_named('PatientSize')} (height) is missing: SUL (lean body mass) needs it")
        if not HEIGHT_RANGE_M[0] <= height <= HEIGHT_RANGE_M[1]:
            raise _refuse(path, f"{_named('PatientSize')} {height:g} m is impossible (the height in metres, "
                                f"{HEIGHT_RANGE_M[0]:g} to {HEIGHT_RANGE_M[1]:g})")
        if sex not in ("M", "F"):
            raise _refuse(path, f"{_named('PatientSex')} is {sex or 'blank'!r}: the lean body mass formula needs "
                                f"M or F")
        return height, lean_body_mass_kg(w, height, sex)

    common = dict(kind=kind, units=units, source=path, sex=sex,
                  weight_kg=weight, height_m=height, decay_correction=_text(ds, "DecayCorrection").upper())

    if units == "GML":
        suv_type = _text(ds, "SUVType").upper()
        if suv_type not in ("", "BW", "LBM"):
            raise _refuse(path, f"Units GML with {_named('SUVType')} {suv_type}: only body-weight (BW) or "
                                f"lean-body-mass (LBM) SUV can be used")
        if not suv_type:
            notes.append(f"{_named('SUVType')} not recorded: the GML values are taken as SUV body weight")
        if suv_type == "LBM":
            if kind == "bw":
                raise _refuse(path, f"the values are SUL ({_named('SUVType')} LBM) and the writer's lean body mass "
                                    f"formula is not recorded, so SUV body weight cannot be derived from them")
            notes.append("values are SUL as the file's writer computed them (its lean body mass formula is not "
                         "recorded)")
            return SuvFactors(factor=1.0, notes=tuple(notes), **common)
        if kind == "bw":
            return SuvFactors(factor=1.0, notes=tuple(notes), **common)
        _, lbm = need_lbm()
        return SuvFactors(factor=lbm / weight, lbm_kg=lbm, notes=tuple(notes)
                          + ("SUL = SUVbw x LBM / weight",), **common)

    if units == "CNTS":
        scale = _philips_private(ds, 0x00)
        if scale is None:
            raise _refuse(path, "Units CNTS (counts) without the Philips private SUV scale factor (7053,1000): "
                                "counts cannot be turned into activity concentration")
        for p_ds, p in zip(headers[1:], paths[1:]):
            other = _philips_private(p_ds, 0x00)
            if other is None or abs(other - scale) > 1e-9 * abs(scale):
                raise _refuse(p, f"the Philips SUV scale factor (7053,1000) is {other} here but {scale:g} in {path}")
        notes.append("Units CNTS: the Philips private SUV scale factor (7053,1000) applied as the vendor wrote it")
        if kind == "bw":
            return SuvFactors(factor=scale, notes=tuple(notes), **common)
        _, lbm = need_lbm()
        return SuvFactors(factor=scale * lbm / weight, lbm_kg=lbm, notes=tuple(notes)
                          + ("SUL = SUVbw x LBM / weight",), **common)

    if units != "BQML":
        raise _refuse(path, f"{_named('Units')} is {units}: SUV is computed from activity concentration (BQML) "
                            f"or taken from SUV values (GML)")
    return _bqml_factors(headers, paths, kind, common, notes, need_weight, need_lbm)


def _bqml_factors(headers, paths, kind, common, notes, need_weight, need_lbm) -> SuvFactors:  # type: ignore[no-untyped-def]
    ds, path = headers[0], str(paths[0])
    decay = common["decay_correction"]
    if not decay:
        raise _refuse(path, f"{_named('DecayCorrection')} is missing: the time the values refer to is unknown "
                            f"(no decay information)")
    if decay not in ("START", "ADMIN", "NONE"):
        raise _refuse(path, f"{_named('DecayCorrection')} is {decay!r}; DICOM allows START, ADMIN or NONE")
    corrected = [c.strip().upper() for c in _text(ds, "CorrectedImage").split("\\") if c.strip()]
    if corrected:
        if "ATTN" not in corrected:
            raise _refuse(path, f"{_named('CorrectedImage')} ({'/'.join(corrected)}) lacks ATTN: the image is not "
                                f"attenuation-corrected and its values are not activity concentrations")
        if decay in ("START", "ADMIN") and "DECY" not in corrected:
            raise _refuse(path, f"{_named('DecayCorrection')} {decay} contradicts {_named('CorrectedImage')} "
                                f"({'/'.join(corrected)}), which does not list DECY")
        if decay == "NONE" and "DECY" in corrected:
            raise _refuse(path, f"{_named('DecayCorrection')} NONE contradicts {_named('CorrectedImage')}, "
                                f"which lists DECY")
    else:
        notes.append(f"{_named('CorrectedImage')} not recorded: attenuation and decay corrections taken from "
                     f"{_named('DecayCorrection')} alone")

    item = _radiopharm_item(ds)
    if item is None:
        raise _refuse(path, f"{_named('RadiopharmaceuticalInformationSequence')} is missing or empty: the injected "
                            f"dose and time are unknown")
    if len(ds.RadiopharmaceuticalInformationSequence) > 1:
        raise _refuse(path, f"{_named('RadiopharmaceuticalInformationSequence')} holds "
                            f"{len(ds.RadiopharmaceuticalInformationSequence)} radiopharmaceuticals: which injection "
                            f"the SUV refers to is ambiguous")
    dose = _number(item, "RadionuclideTotalDose", path, "injected activity, Bq")
    if dose is None:
        raise _refuse(path, f"{_named('RadionuclideTotalDose')} (the injected activity) is missing")
    if not DOSE_RANGE_BQ[0] <= dose <= DOSE_RANGE_BQ[1]:
        raise _refuse(path, f"{_named('RadionuclideTotalDose')} {dose:g} is impossible as an activity in Bq "
                            f"(expected {DOSE_RANGE_BQ[0]:g} to {DOSE_RANGE_BQ[1]:g}; a value in MBq cannot be told "
                            f"apart safely)")
    half = _number(item, "RadionuclideHalfLife", path, "half-life, s")
    if half is None:
        raise _refuse(path, f"{_named('RadionuclideHalfLife')} is missing: the decay of the dose cannot be computed")
    if half <= 0:
        raise _refuse(path, f"{_named('RadionuclideHalfLife')} {half:g} s is impossible (must be positive)")
    nuclide = _nuclide(item)
    if nuclide:
        known = KNOWN_HALF_LIVES_S[nuclide]
        if abs(half - known) > HALF_LIFE_TOLERANCE * known:
            raise _refuse(path, f"{_named('RadionuclideHalfLife')} {half:g} s contradicts the radionuclide "
                                f"{nuclide} named in {_named('RadionuclideCodeSequence')} (half-life {known:g} s)")

    injection, inj_source = _injection_time(ds, item, path, notes)
    weight = need_weight()
    lam = math.log(2.0) / half
    common = dict(common, dose_bq=dose, half_life_s=half, radionuclide=nuclide, injection_time=_iso(injection),
                  injection_source=inj_source)

    if decay == "ADMIN":
        if injection is None:
            notes.append("injection time not recorded; not needed: the values are decay-corrected to the injection")
        ref, ref_source, d_ref = injection, "the injection (DecayCorrection ADMIN)", dose
    else:
        if injection is None:
            raise _refuse(path, f"{_named('RadiopharmaceuticalStartDateTime')} and "
                                f"{_named('RadiopharmaceuticalStartTime')} are both missing: the time of the injection "
                                f"is unknown, so the decay of the dose cannot be computed")
        if decay == "START":
            ref, ref_source = _start_reference(headers, paths, notes)
            _after_injection(injection, inj_source, ref, ref_source, path)
            d_ref = dose * 2.0 ** (-(ref - injection).total_seconds() / half)
        else:  # NONE: one factor per image, at its own frame
            per = []
            for h, p in zip(headers, paths):
                t0 = _acquisition_time(h, str(p))
                if t0 is None:
                    raise _refuse(str(p), f"{_named('AcquisitionTime')} is missing: without decay correction "
                                          f"({_named('DecayCorrection')} NONE) each image's own time is needed")
                _after_injection(injection, inj_source, t0, "AcquisitionDate/AcquisitionTime", str(p))
                dur_ms = _number(h, "ActualFrameDuration", str(p), "frame duration, ms")
                if dur_ms is None or dur_ms <= 0:
                    raise _refuse(str(p), f"{_named('ActualFrameDuration')} is missing or not positive: the decay "
                                          f"during the frame of an image without decay correction cannot be computed")
                x = lam * dur_ms / 1000.0
                in_frame = x / -math.expm1(-x)
                d0 = dose * 2.0 ** (-(t0 - injection).total_seconds() / half)
                try:
                    ipp = tuple(float(v) for v in h.get("ImagePositionPatient", None))
                    if len(ipp) != 3 or not all(math.isfinite(v) for v in ipp):
                        raise ValueError
                except (TypeError, ValueError):
                    raise _refuse(str(p), f"{_named('ImagePositionPatient')} is missing or not three numbers") from None
                per.append((ipp, t0, d0, weight * 1000.0 / d0 * in_frame))
            first = min(per, key=lambda r: r[1])
            notes.append("each image decay-corrected to its own frame start (AcquisitionTime) and for the decay "
                         "during its frame (ActualFrameDuration)")
            factors = [(ipp, f) for ipp, _, _, f in per]
            lbm = None
            if kind == "lbm":
                _, lbm = need_lbm()
                factors = [(ipp, f * lbm / weight) for ipp, f in factors]
            return SuvFactors(
                factor=factors[0][1], reference_time="", reference_source="each image's AcquisitionTime",
                decay_s=(first[1] - injection).total_seconds(), dose_at_reference_bq=first[2], lbm_kg=lbm,
                notes=tuple(notes), slice_factors=tuple(factors), **common)
    decay_s = None if ref is None or injection is None else (ref - injection).total_seconds()
    mass = weight
    lbm = None
    if kind == "lbm":
        _, lbm = need_lbm()
        mass = lbm
    return SuvFactors(factor=mass * 1000.0 / d_ref, reference_time=_iso(ref), reference_source=ref_source,
                      decay_s=decay_s, dose_at_reference_bq=d_ref, lbm_kg=lbm, notes=tuple(notes), **common)


def _after_injection(injection: _dt.datetime, inj_source: str, ref: _dt.datetime, ref_source: str, path: str) -> None:
    if ref < injection:
        raise _refuse(path, f"the injection ({_iso(injection)}, {inj_source}) is after "
                            f"the acquisition ({_iso(ref)}, {ref_source}): contradictory times (if the injection was "
                            f"the day before, the file needs {_named('RadiopharmaceuticalStartDateTime')})")


def _series_date(ds: Any, path: str, notes: list[str]) -> _dt.date | None:
    for keyword in ("SeriesDate", "AcquisitionDate", "StudyDate"):
        text = _text(ds, keyword)
        if text:
            if keyword != "SeriesDate":
                notes.append(f"{_named('SeriesDate')} not recorded: the injection date taken from {keyword}")
            return _date(text, keyword, path)
    return None


def _injection_time(ds: Any, item: Any, path: str, notes: list[str]) -> tuple[_dt.datetime | None, str]:
    """The injection date and time, and which attributes gave it."""
    dt_text = _text(item, "RadiopharmaceuticalStartDateTime")
    tm_text = _text(item, "RadiopharmaceuticalStartTime")
    if dt_text:
        when, offset = _datetime_dt(dt_text, "RadiopharmaceuticalStartDateTime", path)
        local = _offset(_text(ds, "TimezoneOffsetFromUTC"))
        if offset is not None and local is not None and offset != local:
            when = when - offset + local  # the same instant in the series' own time zone
        if tm_text:
            t = _time(tm_text, "RadiopharmaceuticalStartTime", path)
            if abs((_dt.datetime.combine(when.date(), t) - when).total_seconds()) > 1.0:
                raise _refuse(path, f"{_named('RadiopharmaceuticalStartTime')} {tm_text} contradicts "
                                    f"{_named('RadiopharmaceuticalStartDateTime')} {dt_text}")
        return when, "RadiopharmaceuticalStartDateTime"
    if tm_text:
        t = _time(tm_text, "RadiopharmaceuticalStartTime", path)
        day = _series_date(ds, path, notes)
        if day is None:
            raise _refuse(path, f"{_named('RadiopharmaceuticalStartTime')} has no date: {_named('SeriesDate')} is "
                                f"missing too")
        return _dt.datetime.combine(day, t), "RadiopharmaceuticalStartTime on the SeriesDate"
    return None, ""


def _acquisition_time(ds: Any, path: str) -> _dt.datetime | None:
    adt = _text(ds, "AcquisitionDateTime")
    if adt:
        return _datetime_dt(adt, "AcquisitionDateTime", path)[0]
    tm = _text(ds, "AcquisitionTime")
    if not tm:
        return None
    day = _text(ds, "AcquisitionDate") or _text(ds, "SeriesDate")
    if not day:
        raise _refuse(path, f"{_named('AcquisitionTime')} has no date: {_named('AcquisitionDate')} and "
                            f"{_named('SeriesDate')} are missing")
    return _dt.datetime.combine(_date(day, "AcquisitionDate", path), _time(tm, "AcquisitionTime", path))


def _start_reference(headers: Sequence[Any], paths: Sequence[str], notes: list[str]) -> tuple[_dt.datetime, str]:
    """The time START-corrected values refer to (QIBA Profile Appendix G)."""
    ds, path = headers[0], str(paths[0])
    starts = [t for t in (_acquisition_time(h, str(p)) for h, p in zip(headers, paths)) if t is not None]
    earliest = min(starts) if starts else None
    st, sd = _text(ds, "SeriesTime"), _text(ds, "SeriesDate")
    if st and sd:
        series = _dt.datetime.combine(_date(sd, "SeriesDate", path), _time(st, "SeriesTime", path))
        if earliest is None or series <= earliest:
            return series, "SeriesDate/SeriesTime"
        notes.append(f"{_named('SeriesTime')} {_iso(series)} is after the earliest acquisition start "
                     f"{_iso(earliest)} (a series written after the scan): the earliest AcquisitionDate/AcquisitionTime "
                     f"taken as the decay-correction reference")
        return earliest, "earliest AcquisitionDate/AcquisitionTime of the series"
    if earliest is None:
        missing = "SeriesTime" if not st else "SeriesDate"
        raise _refuse(path, f"{_named(missing)} and {_named('AcquisitionTime')} are missing: the time the values "
                            f"are decay-corrected to (DecayCorrection START) is unknown")
    notes.append(f"{_named('SeriesDate')}/{_named('SeriesTime')} not recorded: the earliest "
                 f"AcquisitionDate/AcquisitionTime taken as the decay-correction reference")
    return earliest, "earliest AcquisitionDate/AcquisitionTime of the series"


# ---------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------
def _pet_series(path: str | os.PathLike[str], series_uid: str | None, progress: Any = None):  # type: ignore[no-untyped-def]
    from .dicom import scan_folder, select_series
    from .io import source_kind
    from .quiet import held_library_warnings

    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: no such file or folder")
    if source_kind(p) != "dicom":
        raise InputError(f"{p}: SUV needs the DICOM headers of the PET series (dose, times, weight); "
                         f"a NIfTI or NRRD file does not carry them")
    with held_library_warnings():
        return select_series(scan_folder(p, progress), series_uid, "PT")


def series_suv_factors(series: Any, kind: str = "bw") -> SuvFactors:
    """:func:`suv_factors` of a :class:`~planner.images.dicom.DicomSeries`."""
    return suv_factors(series.headers, series.paths, kind)


def read_pet(
    path: str | os.PathLike[str],
    suv: str = "bw",
    series_uid: str | None = None,
    progress: Any = None,
    phase: int | None = None,
) -> tuple[Image, SuvFactors]:
    """A PT series in SUV on its own grid, and the factors used.

    The voxels are float32 SUV (g/ml); ``image.meta.units`` is "SUVbw" or "SUVlbm" and
    ``image.meta.corrections`` ends with the factors in words. The SUV factors are checked
    before any pixel is read.
    """
    from .dicom import load_series
    from .quiet import held_library_warnings

    kind = _check_kind(suv)
    series = _pet_series(path, series_uid, progress)
    factors = series_suv_factors(series, kind)
    with held_library_warnings():
        image = load_series(series, str(path), progress, phase=phase)
    values = np.asarray(image.voxels, dtype=np.float64)
    if factors.slice_factors:
        values = values * _factor_per_slice(image, factors)[:, None, None]
    else:
        values = values * factors.factor
    meta = image.meta.replace(units=factors.label, corrections=image.meta.corrections + (factors.summary(),))
    return Image(values.astype(np.float32), image.affine, meta), factors


def load_pet(
    path: str | os.PathLike[str],
    suv: str = "bw",
    series_uid: str | None = None,
    progress: Any = None,
    phase: int | None = None,
) -> Image:
    """A PT series in SUV ("bw" body weight, "lbm" lean body mass) on its own grid (see :func:`read_pet`)."""
    return read_pet(path, suv, series_uid, progress, phase)[0]


def _factor_per_slice(image: Image, factors: SuvFactors) -> np.ndarray:
    """One factor per slice k of the loaded volume, from the images' positions."""
    by_k: dict[float, set[float]] = {}
    for ipp, f in factors.slice_factors:
        k = float(image.lps_to_ijk(np.array(ipp))[2])
        by_k.setdefault(round(k, 3), set()).add(round(f, 12))
    clash = [k for k, fs in by_k.items() if len(fs) > 1]
    if clash:
        raise _refuse(factors.source, "several images without decay correction at one slice position with different "
                                      "acquisition times (a dynamic or gated series): SUV is computed for one image "
                                      "per position only")
    ks = np.array(sorted(by_k))
    fs = np.array([next(iter(by_k[k])) for k in ks])
    return np.interp(np.arange(image.shape[0], dtype=float), ks, fs)


# ---------------------------------------------------------------------------------------------
# Fusion
# ---------------------------------------------------------------------------------------------
def _check_registration(registration: Any) -> np.ndarray:
    try:
        m = np.asarray(registration, dtype=float)
    except (TypeError, ValueError):
        raise InputError("registration: a 4x4 matrix of numbers (PET LPS -> CT LPS) is needed") from None
    if m.shape != (4, 4):
        raise InputError(f"registration: a 4x4 matrix (PET LPS -> CT LPS) is needed, got shape {m.shape}")
    if not np.all(np.isfinite(m)):
        raise InputError("registration: the matrix holds a value that is not a finite number")
    if not np.allclose(m[3], [0, 0, 0, 1], atol=1e-9):
        raise InputError(f"registration: the last row must be 0 0 0 1, got {m[3].tolist()}")
    if abs(np.linalg.det(m[:3, :3])) < 1e-6:
        raise InputError("registration: the matrix is singular")
    return m


def read_registration(path: str | os.PathLike[str]) -> np.ndarray:
    """A 4x4 matrix taking PET LPS (mm) to CT LPS (mm), from a text file (four rows of four
    numbers, spaces or commas; ``#`` starts a comment) or a JSON file (the 4x4 list, or an
    object with ``"matrix"``). Anything else is refused with the reason. An ITK/3D Slicer
    transform file is not read: its direction (fixed to moving) is easily taken the wrong way
    round; export the matrix PET -> CT in LPS instead."""
    import json

    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: no such file (--pet-registration)")
    if p.stat().st_size > 100_000:
        raise InputError(f"{p}: {p.stat().st_size} bytes is not a 4x4 matrix (--pet-registration)")
    if p.suffix.lower() in (".tfm", ".h5", ".mat"):
        raise InputError(f"{p}: an ITK transform file is not read (its direction, fixed to moving, is easily taken "
                         "the wrong way round): give the 4x4 matrix PET LPS -> CT LPS as text or JSON")
    try:
        text = p.read_text("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{p}: not a text file ({type(exc).__name__}) (--pet-registration)") from None
    if p.suffix.lower() == ".json" or text.lstrip().startswith(("[", "{")):
        try:
            doc = json.loads(text)
        except ValueError as exc:
            raise InputError(f"{p}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
        values = doc.get("matrix") if isinstance(doc, dict) else doc
    else:
        rows = [ln.split("#", 1)[0].replace(",", " ").split() for ln in text.splitlines()]
        rows = [r for r in rows if r]
        try:
            values = [[float(x) for x in r] for r in rows]
        except ValueError:
            raise InputError(f"{p}: the matrix holds something that is not a number") from None
    try:
        m = _check_registration(values)
    except InputError as exc:
        raise InputError(f"{p}: {exc}") from None
    rot = m[:3, :3]
    if not np.allclose(rot.T @ rot, np.eye(3), atol=0.02):
        raise InputError(f"{p}: the matrix scales or shears (its 3x3 part is not a rotation): a PET-to-CT registration "
                         "of one patient is rigid")
    return m


def resample_to(
    image: Image,
    reference: Image,
    registration: Any = None,
    outside: float = float("nan"),
) -> Image:
    """The values of ``image`` (a PET) on the grid of ``reference`` (a CT), trilinear, through both affines.

    Without ``registration`` both must share one non-blank FrameOfReferenceUID (a PET/CT
    acquired together); otherwise an :class:`InputError` says so. ``registration`` is a 4x4
    matrix taking ``image`` LPS to ``reference`` LPS (from a registration the user trusts);
    then the frames of reference are not compared. Reference voxels outside ``image`` (beyond
    half a voxel of its outer centres) get ``outside`` (NaN: no PET there, not "no uptake").
    The result is float32, on ``reference``'s affine, with ``image``'s metadata (units kept),
    the frame of reference of ``reference``, and the resampling said in the corrections.
    """
    where = image.meta.source or "image"
    fr, ref_fr = image.meta.frame_of_reference_uid.strip(), reference.meta.frame_of_reference_uid.strip()
    if registration is None:
        if not fr or not ref_fr:
            blank = " and ".join(n for n, v in (("the PET's", fr), ("the CT's", ref_fr)) if not v)
            raise InputError(f"{where}: FrameOfReferenceUID (0020,0052) is blank in {blank} header: nothing says the "
                             "two scans share one patient coordinate system; give a registration "
                             "(--pet-registration: 4x4, PET LPS -> CT LPS) to fuse them")
        if fr != ref_fr:
            raise InputError(f"{where}: FrameOfReferenceUID (0020,0052) {fr} differs from the CT's {ref_fr}: the scans "
                             "were not acquired in one coordinate system; give a registration "
                             "(--pet-registration: 4x4, PET LPS -> CT LPS) to fuse them")
        m = np.eye(4)
        how = f"same frame of reference {fr}"
    else:
        m = _check_registration(registration)
        how = "through the given registration (PET LPS -> CT LPS)"
    # reference index -> reference LPS -> image LPS -> image index
    to_src = np.linalg.inv(image.affine) @ np.linalg.inv(m) @ reference.affine
    corners = np.array([[i, j, k, 1.0] for i in (-0.5, image.size_ijk[0] - 0.5)
                        for j in (-0.5, image.size_ijk[1] - 0.5) for k in (-0.5, image.size_ijk[2] - 0.5)])
    src_box_in_ref = (np.linalg.inv(to_src) @ corners.T).T[:, :3]
    lo = np.maximum(np.floor(src_box_in_ref.min(axis=0)).astype(int), 0)
    hi = np.minimum(np.ceil(src_box_in_ref.max(axis=0)).astype(int), np.array(reference.size_ijk) - 1)
    out = np.full(reference.shape, outside, dtype=np.float32)
    if np.any(hi < lo):
        raise InputError(f"{where}: the PET does not overlap the CT at all (after the frame of reference check); "
                         f"nothing to fuse")
    from scipy import ndimage

    src = np.asarray(image.voxels, dtype=np.float32)
    size = np.array(image.size_ijk, float)
    ii, jj = np.meshgrid(np.arange(lo[0], hi[0] + 1, dtype=float), np.arange(lo[1], hi[1] + 1, dtype=float),
                         indexing="xy")  # shape (nj, ni)
    for k in range(lo[2], hi[2] + 1):
        ijk = np.stack([ii.ravel(), jj.ravel(), np.full(ii.size, float(k))])
        s = to_src[:3, :3] @ ijk + to_src[:3, 3:4]  # (3, n) image indices (i, j, k)
        inside = np.all((s >= -0.5) & (s <= size[:, None] - 0.5), axis=0)
        if not inside.any():
            continue
        vals = np.full(ii.size, outside, dtype=np.float32)
        vals[inside] = ndimage.map_coordinates(src, s[::-1, inside], order=1, mode="nearest")
        out[k, lo[1]:hi[1] + 1, lo[0]:hi[0] + 1] = vals.reshape(ii.shape)
    meta = image.meta.replace(
        frame_of_reference_uid=reference.meta.frame_of_reference_uid,
        corrections=image.meta.corrections + ((
            f"resampled (trilinear) onto the grid of {reference.meta.source or 'the reference image'} "
            f"({' x '.join(str(n) for n in reference.size_ijk)} voxels), {how}; outside the PET: "
            f"{'no value (NaN)' if math.isnan(outside) else outside}"),),
    )
    return Image(out, reference.affine, meta)


# ---------------------------------------------------------------------------------------------
# planner info
# ---------------------------------------------------------------------------------------------
def suv_summary(series: Any) -> dict[str, Any]:
    """For ``planner info`` (JSON-able): per kind ("bw", "lbm") either ``{"factors": {...},
    "lines": [...]}`` or, where the file refuses it (no height for SUL, a missing dose, ...),
    ``{"error": message}``."""
    from .quiet import one_line

    out: dict[str, Any] = {}
    for kind in SUV_KINDS:
        try:
            f = series_suv_factors(series, kind)
        except InputError as exc:
            out[kind] = {"error": one_line(exc)}
            continue
        out[kind] = {"factors": f.to_dict(), "lines": f.lines(details=kind == "bw" or "error" in out.get("bw", {}))}
    return out


def format_suv_summary(summary: dict[str, Any]) -> list[str]:
    """``planner info``'s lines for :func:`suv_summary`."""
    lines = []
    for kind in SUV_KINDS:
        entry = summary.get(kind)
        if entry:
            lines += entry["lines"] if "lines" in entry else [f"{SUV_WORDS[kind]}: not computed: {entry['error']}"]
    return lines


__all__ = ["SUV_KINDS", "SuvFactors", "lean_body_mass_kg", "suv_factors", "series_suv_factors", "read_pet", "load_pet",
           "resample_to", "suv_summary", "format_suv_summary"]
