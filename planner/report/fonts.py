"""Fonts for the PDF report: every character of a patient's name printed, or said to be missing.

The PDF's standard fonts (Helvetica) hold Latin-1 only: a Cyrillic, Greek, Chinese or Japanese
name would print as blanks or boxes. The report keeps Helvetica for Latin-1 and embeds TrueType
fonts found on the system for the rest: one with wide coverage (DejaVu Sans: Greek, Cyrillic,
...), then one for what it lacks (Droid Sans Fallback, Noto Sans CJK or WenQuanYi: Chinese,
Japanese, Korean). Text is split into runs, each set in the first font that has its characters.
A character no font found has is printed as "?" and the report says so; the HTML report (read
by a browser with its own fonts) shows it as it is.

Debian: ``fonts-dejavu-core`` and ``fonts-droid-fallback`` (``.ci/run`` installs them). Other
folders can be added with ``PLANNER_FONT_DIRS`` (``:``-separated).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from xml.sax.saxutils import escape

#: Candidate files, best first: (regular, bold) of the main font, then fallbacks.
MAIN = (("DejaVuSans.ttf", "DejaVuSans-Bold.ttf"), ("NotoSans-Regular.ttf", "NotoSans-Bold.ttf"),
        ("LiberationSans-Regular.ttf", "LiberationSans-Bold.ttf"), ("Arial Unicode.ttf", "Arial Unicode.ttf"))
FALLBACKS = ("DroidSansFallbackFull.ttf", "DroidSansFallback.ttf", "NotoSansCJK-Regular.ttc",
             "NotoSansCJKsc-Regular.otf", "wqy-zenhei.ttc", "wqy-microhei.ttc", "ArialUnicode.ttf")
FOLDERS = ("/usr/share/fonts", "/usr/local/share/fonts", "~/.local/share/fonts", "~/.fonts", "/Library/Fonts",
           "/System/Library/Fonts", "C:/Windows/Fonts")
MISSING = "?"


@dataclass(frozen=True)
class FontSet:
    """The registered fonts: ``regular`` and ``bold`` names for reportlab, the fallbacks, and
    the characters each covers (None for the standard Helvetica: Latin-1)."""

    regular: str
    bold: str
    fallbacks: tuple[str, ...]
    covers: dict  # font name -> frozenset of code points, or None for Latin-1

    def font_for(self, ch: str, bold: bool = False) -> str | None:
        first = self.bold if bold else self.regular
        order = (first, *(["PlannerSans-Bold"] if bold and "PlannerSans-Bold" in self.covers else []), *self.fallbacks)
        for name in order:
            cover = self.covers.get(name)
            if (cover is None and ord(ch) < 256) or (cover is not None and ord(ch) in cover):
                return name
        return None

    def runs(self, text: str, bold: bool = False) -> list[tuple[str, str]]:
        """``text`` as (font, text) runs; a character no font has becomes ``?`` in the first font."""
        first = self.bold if bold else self.regular
        out: list[tuple[str, str]] = []
        for ch in text:
            font = self.font_for(ch, bold) if not ch.isspace() else first
            piece = ch if font is not None else MISSING
            font = font or first
            if out and out[-1][0] == font:
                out[-1] = (font, out[-1][1] + piece)
            else:
                out.append((font, piece))
        return out

    def missing(self, text: str) -> set[str]:
        """The characters of ``text`` no registered font has."""
        return {ch for ch in text if not ch.isspace() and self.font_for(ch) is None}

    def markup(self, text: str, bold: bool = False) -> str:
        """Paragraph markup of ``text`` with each run in its font (escaped)."""
        first = self.bold if bold else self.regular
        return "".join(escape(t) if f == first else f'<font name="{f}">{escape(t)}</font>'
                       for f, t in self.runs(text, bold))


def _folders() -> list[Path]:
    extra = [p for p in os.environ.get("PLANNER_FONT_DIRS", "").split(os.pathsep) if p]
    return [Path(p).expanduser() for p in (*extra, *FOLDERS)]


@lru_cache(maxsize=None)
def _find(name: str) -> Path | None:
    for folder in _folders():
        if folder.is_dir():
            for hit in folder.rglob(name):
                if hit.is_file():
                    return hit
    return None


def _register(name: str, path: Path) -> frozenset | None:
    """Register ``path`` with reportlab as ``name``; the code points it covers (None if unusable)."""
    from reportlab.pdfbase import pdfmetrics
    from reportlab.pdfbase.ttfonts import TTFont, TTFError

    try:
        font = TTFont(name, str(path), subfontIndex=0) if path.suffix.lower() == ".ttc" else TTFont(name, str(path))
    except (TTFError, OSError, ValueError, KeyError, IndexError):
        return None
    pdfmetrics.registerFont(font)
    return frozenset(font.face.charToGlyph)


@lru_cache(maxsize=1)
def report_fonts() -> FontSet:
    """The fonts the PDF uses (found and registered once).

    Latin-1 text stays in Helvetica (the report's look, and its tables' widths, do not change);
    only characters beyond it are set in the TrueType fonts found."""
    covers: dict = {"Helvetica": None, "Helvetica-Bold": None}
    fallbacks = []
    for reg_file, bold_file in MAIN:
        reg_path = _find(reg_file)
        cover = _register("PlannerSans", reg_path) if reg_path is not None else None
        if cover is None:
            continue
        covers["PlannerSans"] = cover
        fallbacks.append("PlannerSans")
        bold_path = _find(bold_file)
        bold_cover = _register("PlannerSans-Bold", bold_path) if bold_path else None
        if bold_cover is not None:
            covers["PlannerSans-Bold"] = bold_cover
        break
    for n, fname in enumerate(FALLBACKS):
        path = _find(fname)
        if path is None:
            continue
        cover = _register(f"PlannerFallback{n}", path)
        if cover is not None:
            fallbacks.append(f"PlannerFallback{n}")
            covers[f"PlannerFallback{n}"] = cover
    return FontSet("Helvetica", "Helvetica-Bold", tuple(fallbacks), covers)
