"""The report prints what real headers hold: non-Latin names, values far over their DICOM limit,
and a footer that never runs into the page's own text.

Before: a 8800-character study description made the PDF writer fail (a table cell taller than a
page: a traceback, no report); a Chinese, Cyrillic or Greek name printed as blanks (the PDF's
standard Helvetica has Latin-1 only); a long patient line ran the footer's two halves into each
other; library warnings came as two-line Python warnings with file paths.
"""

from __future__ import annotations

import os
from pathlib import Path

import pydicom
import pytest

from planner.cli.main import main
from planner.demo import demo_cases

NAME = "山田^太郎 Иванов Γιώργος"
LONG_DESCRIPTION = "Very long description " * 400


def _require_fonts():
    from planner.report.fonts import report_fonts

    fonts = report_fonts()
    if not fonts.missing("山田太郎Иванов Γιώργος"):
        return fonts
    if os.environ.get("PLANNER_REQUIRE_TOOLS") == "1":
        pytest.fail("fonts for Cyrillic, Greek and CJK are missing but PLANNER_REQUIRE_TOOLS=1 (CI installs "
                    "fonts-dejavu-core and fonts-droid-fallback)")
    pytest.skip("no font with Cyrillic, Greek and CJK found (Debian fonts-dejavu-core, fonts-droid-fallback)")


@pytest.fixture(scope="module")
def odd_header_plan(tmp_path_factory):
    """The demo thorax with a Japanese-Cyrillic-Greek name 3000 characters long, a 500-character ID
    and an 8800-character study description (UTF-8), planned with its report and DICOM objects."""
    case = next(c for c in demo_cases() if c.id == "thorax")
    src = tmp_path_factory.mktemp("odd-header")
    for f in sorted(Path(case.ct).iterdir()):
        ds = pydicom.dcmread(f)
        ds.SpecificCharacterSet = "ISO_IR 192"
        ds.PatientName = NAME + " " + "X" * 3000
        ds.PatientID = "ID-" + "9" * 500
        ds.StudyDescription = LONG_DESCRIPTION
        ds.save_as(src / f.name)
    out = tmp_path_factory.mktemp("odd-plan") / "plan"
    return src, case, out


def test_odd_headers_give_a_report(odd_header_plan, capsys):
    src, case, out = odd_header_plan
    code = main(["plan", "--ct", str(src), "--structures", str(case.folder / case.info["structures"]),
                 "--target-label", "lung_nodule", "--procedure", "lung-biopsy", "--out", str(out), "--n", "2",
                 "--dicom"])
    cap = capsys.readouterr()
    assert code == 0, cap.err
    assert "Traceback" not in cap.err
    warnings = [line for line in cap.err.splitlines() if line.startswith("planner: warning:")]
    assert len(warnings) == len(set(warnings)) >= 1  # each library warning once, one line each
    assert all(line.startswith("planner: warning:") for line in cap.err.strip().splitlines())
    assert (out / "report.pdf").is_file() and (out / "dicom" / "report.dcm").is_file()


def test_non_latin_names_print_in_the_pdf(odd_header_plan):
    import pypdf

    _require_fonts()
    src, case, out = odd_header_plan
    if not (out / "report.pdf").is_file():
        pytest.skip("the plan of test_odd_headers_give_a_report did not run")
    text = " ".join(page.extract_text() for page in pypdf.PdfReader(str(out / "report.pdf")).pages)
    for word in ("山田", "太郎", "Иванов", "Γιώργος"):
        assert word in text, word
    assert "(cut: 3021 characters)" in text and "(cut: 8799 characters)" in text
    assert "cannot be printed with the fonts" not in text


def test_the_footer_never_overlaps(odd_header_plan):
    """On every page the characters of the bottom line (footer left, patient and page right) do
    not overlap, and stay within the page."""
    import pypdfium2 as pdfium

    src, case, out = odd_header_plan
    if not (out / "report.pdf").is_file():
        pytest.skip("the plan of test_odd_headers_give_a_report did not run")
    pdf = pdfium.PdfDocument(str(out / "report.pdf"))
    for n in range(len(pdf)):
        page = pdf[n]
        width, height = page.get_size()
        tp = page.get_textpage()
        boxes = [tp.get_charbox(i) for i in range(tp.count_chars())]
        foot = sorted((b for b in boxes if b[3] < 12 / 25.4 * 72 and b[2] > b[0]), key=lambda b: b[0])
        assert foot, f"page {n + 1}: no footer"
        for a, b in zip(foot, foot[1:]):
            assert b[0] >= a[2] - 0.3, f"page {n + 1}: footer characters overlap at x = {b[0]:.1f} pt"
        assert foot[0][0] >= 0 and foot[-1][2] <= width
        text = tp.get_text_bounded(0, 0, width, 12 / 25.4 * 72)
        assert f"page {n + 1}" in text and "planner" in text


def test_characters_no_font_has_are_marked_and_said(tmp_path, monkeypatch):
    """Where no font has a character, the PDF prints '?' and says so in a box at the top."""
    import pypdf

    import planner.report.fonts as fonts_module
    from planner.report.facts import ReportFacts
    from planner.report.pdf import write_pdf

    latin_only = fonts_module.FontSet("Helvetica", "Helvetica-Bold", (), {"Helvetica": None, "Helvetica-Bold": None})
    monkeypatch.setattr(fonts_module, "report_fonts", lambda: latin_only)
    assert latin_only.markup("Ивaнов") == "??a???"
    facts = ReportFacts("Needle plan", "Иванов · 2026", "ok")
    write_pdf(facts, {}, tmp_path / "r.pdf")
    text = pypdf.PdfReader(str(tmp_path / "r.pdf")).pages[0].extract_text()
    assert "?????? · 2026" in text and "cannot be printed with the fonts found" in text
