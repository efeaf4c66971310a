"""The report as an A4 PDF (reportlab), readable when printed in black and white.

Nothing relies on colour alone: tables have ruled grids, warnings are boxed and marked
"WARNING", the chosen trajectory is the first row of every table and is named so.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

from ..errors import MissingDependencyError
from ..atomic import atomic_path
from .facts import Bullets, KeyValues, ReportFacts, Table
from .images import image_title


def _reportlab():  # type: ignore[no-untyped-def]
    try:
        import reportlab  # noqa: F401
    except ImportError:  # pragma: no cover - a dependency of the package
        raise MissingDependencyError("the PDF report needs reportlab: pip install reportlab") from None


def write_pdf(facts: ReportFacts, images: Mapping[str, str | os.PathLike[str]], path: str | os.PathLike[str],
              title: str = "Needle plan", captions: Mapping[str, str] | None = None,
              images_at: int | None = None) -> Path:
    """Write the report to ``path`` (A4) atomically; ``images`` maps a name to a PNG file, in order;
    ``captions`` the words under an image (by default its title, :func:`.images.image_title`);
    ``images_at`` the block the images go before (by default after the last)."""
    _reportlab()
    from reportlab.lib import colors
    from reportlab.lib.pagesizes import A4
    from reportlab.lib.styles import ParagraphStyle, getSampleStyleSheet
    from reportlab.lib.units import mm
    from reportlab.platypus import (Image as RLImage, KeepTogether, Paragraph, SimpleDocTemplate, Spacer,
                                    Table as RLTable, TableStyle)

    from reportlab.pdfbase.pdfmetrics import stringWidth

    from .fonts import report_fonts

    fonts = report_fonts()
    ss = getSampleStyleSheet()
    body = ParagraphStyle("body", parent=ss["BodyText"], fontName=fonts.regular, fontSize=8.5, leading=10.5)
    cell = ParagraphStyle("cell", parent=body, fontSize=8, leading=9.5)
    head = ParagraphStyle("head", parent=cell, fontName=fonts.bold)
    h1 = ParagraphStyle("h1", parent=ss["Title"], fontName=fonts.bold, fontSize=15, leading=18, spaceAfter=2)
    h2 = ParagraphStyle("h2", parent=ss["Heading2"], fontName=fonts.bold, fontSize=10.5, leading=13,
                        spaceBefore=7, spaceAfter=3)
    sub = ParagraphStyle("sub", parent=body, fontSize=9.5, alignment=1)
    alert = ParagraphStyle("alert", parent=head, textColor=colors.HexColor("#c00000"))
    action = ParagraphStyle("action", parent=head, fontSize=14, leading=18)
    width = A4[0] - 30 * mm

    def P(text: str, style: ParagraphStyle = cell) -> Paragraph:
        """A paragraph of ``text``, each run of characters in a font that has them."""
        return Paragraph(fonts.markup(text, bold=style.fontName == fonts.bold), style)

    grid = TableStyle([
        ("GRID", (0, 0), (-1, -1), 0.4, colors.black),
        ("VALIGN", (0, 0), (-1, -1), "TOP"),
        ("LEFTPADDING", (0, 0), (-1, -1), 3), ("RIGHTPADDING", (0, 0), (-1, -1), 3),
        ("TOPPADDING", (0, 0), (-1, -1), 1.5), ("BOTTOMPADDING", (0, 0), (-1, -1), 1.5),
    ])
    story: list = [P(facts.title, h1), P(facts.subtitle, sub), Spacer(1, 3 * mm)]
    missing = fonts.missing(_all_text(facts))
    if missing:
        story.append(_boxed([P("Some characters of this plan cannot be printed with the fonts found on this "
                               f"computer and show as ? here ({' '.join(sorted(missing))[:60]}): report.html "
                               "shows them as they are.", head)], width, grid))
    if facts.status != "ok":
        story.append(_boxed([P("NO SAFE TRAJECTORY: see 'Why no trajectory is safe' below.", head)], width, grid))

    def image_story() -> list:
        """The images two by two with their captions, kept with their heading."""
        if not images:
            return []
        cells = []
        w = (width - 6 * mm) / 2
        for name, p in images.items():
            img = RLImage(str(p))
            scale = w / img.imageWidth
            img.drawWidth, img.drawHeight = w, img.imageHeight * scale
            cells.append([img, P((captions or {}).get(name) or image_title(name))])
        rows = []
        for n in range(0, len(cells), 2):
            pair = cells[n:n + 2]
            rows.append([c[0] for c in pair] + [""] * (2 - len(pair)))
            rows.append([c[1] for c in pair] + [""] * (2 - len(pair)))
        t = RLTable(rows, colWidths=[w + 3 * mm, w + 3 * mm])
        t.setStyle(TableStyle([("VALIGN", (0, 0), (-1, -1), "TOP")]))
        return [KeepTogether([P("Images", h2), t])]

    for n_block, block in enumerate(facts.blocks):
        if n_block == images_at:
            story += image_story()
        if isinstance(block, KeyValues):
            t = RLTable([[P(k, head), P(v)] for k, v in block.rows], colWidths=[0.36 * width, 0.64 * width])
            t.setStyle(grid)
            parts = [P(block.title, h2), t] + ([P(block.note)] if block.note else [])
            story.append(KeepTogether(parts))
        elif isinstance(block, Table):
            ncol = len(block.header)
            colw = _col_widths(block, width)
            alerts = set(block.alerts)
            rows = [[P(h, head) for h in block.header]] + [
                [P(c, alert if (n, m) in alerts else cell) for m, c in enumerate(r)] + [P("")] * (ncol - len(r))
                for n, r in enumerate(block.rows)]
            t = RLTable(rows, colWidths=colw, repeatRows=1)
            style = TableStyle(grid.getCommands() + [("BACKGROUND", (0, 0), (-1, 0), colors.HexColor("#dddddd")),
                                                     ("LINEBELOW", (0, 0), (-1, 0), 1.0, colors.black)])
            t.setStyle(style)
            parts = [P(block.title, h2), t]
            if block.note:
                parts.append(P(block.note))
            story.append(KeepTogether(parts))
        elif isinstance(block, Bullets) and block.kind == "action":
            box = RLTable([[P(i, action)] for i in block.items], colWidths=[width])
            box.setStyle(TableStyle([("BOX", (0, 0), (-1, -1), 2.5, colors.black),
                                     ("LEFTPADDING", (0, 0), (-1, -1), 6), ("RIGHTPADDING", (0, 0), (-1, -1), 6),
                                     ("TOPPADDING", (0, 0), (-1, -1), 4), ("BOTTOMPADDING", (0, 0), (-1, -1), 5)]))
            story.append(KeepTogether([P(block.title, h2), box]))
        elif isinstance(block, Bullets):
            items = [P(("WARNING: " if block.kind == "warning" else "- ") + i) for i in block.items]
            box = _boxed(items, width, grid) if block.kind == "warning" else _list(items, width)
            story.append(KeepTogether([P(block.title, h2), box]))
    if images_at is None or not 0 <= images_at < len(facts.blocks):
        story += image_story()
    sig = RLTable([[P(line, head), ""] for line in facts.signature_lines], colWidths=[0.4 * width, 0.6 * width],
                  rowHeights=[10 * mm] * len(facts.signature_lines))
    sig.setStyle(TableStyle([("LINEBELOW", (1, 0), (1, -1), 0.6, colors.black), ("VALIGN", (0, 0), (-1, -1), "BOTTOM")]))
    story.append(KeepTogether([P("Operator sign-off", h2), sig]))

    size = 6.5

    def runs_width(runs: list[tuple[str, str]]) -> float:
        return sum(stringWidth(t, f, size) for f, t in runs)

    def draw_runs(canvas, x: float, y: float, runs: list[tuple[str, str]]) -> None:  # type: ignore[no-untyped-def]
        for f, t in runs:
            canvas.setFont(f, size)
            canvas.drawString(x, y, t)
            x += stringWidth(t, f, size)

    def on_page(canvas, doc) -> None:  # type: ignore[no-untyped-def]
        # the page's own text on the right, whole; the footer on the left, cut to the room left
        # between them (the two never overlap, whatever their lengths)
        canvas.saveState()
        right = fonts.runs(f"{facts.subtitle} · page {doc.page}")
        while runs_width(right) > width * 0.4 and len(right[-1][1]) > 1:  # a long subtitle: keep the page number
            text = "".join(t for _, t in right)
            right = fonts.runs("…" + text[len(text) // 4:])
        left_room = width - runs_width(right) - 4 * mm
        text = facts.footer
        left = fonts.runs(text)
        while runs_width(left) > left_room and text:
            text = text[:-2]
            left = fonts.runs(text.rstrip() + "…")
        draw_runs(canvas, 15 * mm, 8 * mm, left)
        draw_runs(canvas, A4[0] - 15 * mm - runs_width(right), 8 * mm, right)
        canvas.restoreState()

    with atomic_path(path, ".pdf") as tmp:
        doc = SimpleDocTemplate(str(tmp), pagesize=A4, leftMargin=15 * mm, rightMargin=15 * mm, topMargin=12 * mm,
                                bottomMargin=15 * mm, title=title, author="planner", subject="needle procedure plan",
                                creator="planner")
        doc.build(story, onFirstPage=on_page, onLaterPages=on_page)
    return Path(path)


def _all_text(facts: ReportFacts) -> str:
    """Every string the report prints."""
    parts = [facts.title, facts.subtitle, facts.footer, *facts.signature_lines]
    for block in facts.blocks:
        parts.append(block.title)
        if isinstance(block, KeyValues):
            parts += [x for row in block.rows for x in row] + [block.note]
        elif isinstance(block, Table):
            parts += list(block.header) + [x for row in block.rows for x in row] + [block.note]
        else:
            parts += list(block.items)
    return "\n".join(parts)


def _col_widths(block: Table, width: float) -> list[float]:
    """Column widths in proportion to their longest text, each at least a share of the page."""
    n = len(block.header)
    longest = [max([len(block.header[c])] + [len(r[c]) for r in block.rows if c < len(r)]) for c in range(n)]
    weights = [min(max(x, 8, len(block.header[c]) + 3), 40) + 2 for c, x in enumerate(longest)]
    total = float(sum(weights))
    return [width * w / total for w in weights]


def _boxed(items: list, width: float, grid) -> object:  # type: ignore[no-untyped-def]
    from reportlab.lib import colors
    from reportlab.platypus import Table as RLTable, TableStyle

    t = RLTable([[i] for i in items], colWidths=[width])
    t.setStyle(TableStyle([("BOX", (0, 0), (-1, -1), 1.5, colors.black),
                           ("BACKGROUND", (0, 0), (-1, -1), colors.HexColor("#fff4d6")),
                           ("LEFTPADDING", (0, 0), (-1, -1), 4), ("TOPPADDING", (0, 0), (-1, -1), 1.5),
                           ("BOTTOMPADDING", (0, 0), (-1, -1), 1.5)]))
    return t


def _list(items: list, width: float) -> object:
    from reportlab.platypus import Table as RLTable, TableStyle

    t = RLTable([[i] for i in items], colWidths=[width])
    t.setStyle(TableStyle([("LEFTPADDING", (0, 0), (-1, -1), 4), ("TOPPADDING", (0, 0), (-1, -1), 1),
                           ("BOTTOMPADDING", (0, 0), (-1, -1), 1)]))
    return t
