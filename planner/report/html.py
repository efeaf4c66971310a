"""The report as one self-contained HTML page: the same blocks as the PDF, images inlined as data URIs."""

from __future__ import annotations

import base64
import os
from html import escape
from pathlib import Path
from typing import Mapping, Sequence

from ..atomic import write_text_atomic
from .facts import Bullets, KeyValues, ReportFacts, Table
from .images import image_title

_CSS = """
body{font-family:Helvetica,Arial,sans-serif;font-size:13px;max-width:190mm;margin:1em auto;color:#000}
h1{font-size:20px;margin:0}h2{font-size:15px;margin:1.1em 0 .3em}.sub{margin:.2em 0 1em}
table{border-collapse:collapse;width:100%}td,th{border:1px solid #000;padding:2px 4px;vertical-align:top;text-align:left}
th{background:#ddd}.kv th{width:36%}.warn{border:2px solid #000;background:#fff4d6;padding:4px 8px}
.warn li{list-style:none}.note{font-size:11px}figure{display:inline-block;width:48%;margin:0 1% 8px 0;vertical-align:top}
figure img{width:100%}.sig td{border:none;height:2.2em;vertical-align:bottom}.sig td.line{border-bottom:1px solid #000;width:60%}
footer{font-size:10px;margin-top:2em;border-top:1px solid #000}
.alert{color:#c00000;font-weight:bold}.action{border:3px solid #000;padding:6px 10px;font-size:20px;font-weight:bold}
.action p{margin:.2em 0}
@media print{body{margin:0}}
"""


def render_html(facts: ReportFacts, images: Mapping[str, str | os.PathLike[str]], title: str = "Needle plan",
                captions: Mapping[str, str] | None = None, images_at: int | None = None,
                links: Sequence[tuple[str, str]] = ()) -> str:
    """The whole page as a string (``captions``: the words under an image, by default its title;
    ``images_at``: the block the images go before, by default after the last; ``links``: (words,
    relative address) of files beside the page, listed under the title)."""
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">', f"<title>{escape(title)}</title>",
           f"<style>{_CSS}</style></head><body>", f"<h1>{escape(facts.title)}</h1>",
           f'<p class="sub">{escape(facts.subtitle)}</p>']
    out += [f'<p class="sub"><a href="{escape(href)}">{escape(words)}</a></p>' for words, href in links]
    if facts.status != "ok":
        out.append('<p class="warn"><strong>NO SAFE TRAJECTORY</strong>: see "Why no trajectory is safe" below.</p>')

    def image_part() -> list[str]:
        if not images:
            return []
        part = ["<h2>Images</h2>"]
        for name, p in images.items():
            data = base64.b64encode(Path(p).read_bytes()).decode("ascii")
            cap = escape((captions or {}).get(name) or image_title(name))
            part.append(f'<figure><img alt="{cap}" src="data:image/png;base64,{data}"><figcaption>{cap}</figcaption></figure>')
        return part

    for n_block, block in enumerate(facts.blocks):
        if n_block == images_at:
            out += image_part()
        out.append(f"<h2>{escape(block.title)}</h2>")
        if isinstance(block, KeyValues):
            out.append('<table class="kv">')
            out += [f"<tr><th>{escape(k)}</th><td>{escape(v)}</td></tr>" for k, v in block.rows]
            out.append("</table>")
            if block.note:
                out.append(f'<p class="note">{escape(block.note)}</p>')
        elif isinstance(block, Table):
            out.append("<table><tr>" + "".join(f"<th>{escape(h)}</th>" for h in block.header) + "</tr>")
            alerts = set(block.alerts)
            out += ["<tr>" + "".join(f'<td class="alert">{escape(c)}</td>' if (n, m) in alerts else f"<td>{escape(c)}</td>"
                                     for m, c in enumerate(r)) + "</tr>" for n, r in enumerate(block.rows)]
            out.append("</table>")
            if block.note:
                out.append(f'<p class="note">{escape(block.note)}</p>')
        elif isinstance(block, Bullets):
            if block.kind == "action":
                out.append('<div class="action">' + "".join(f"<p>{escape(i)}</p>" for i in block.items) + "</div>")
            elif block.kind == "warning":
                out.append('<ul class="warn">' + "".join(f"<li><strong>WARNING:</strong> {escape(i)}</li>"
                                                        for i in block.items) + "</ul>")
            else:
                out.append("<ul>" + "".join(f"<li>{escape(i)}</li>" for i in block.items) + "</ul>")
    if images_at is None or not 0 <= images_at < len(facts.blocks):
        out += image_part()
    out.append('<h2>Operator sign-off</h2><table class="sig">')
    out += [f'<tr><td>{escape(line)}</td><td class="line"></td></tr>' for line in facts.signature_lines]
    out.append("</table>")
    out.append(f"<footer>{escape(facts.footer)}</footer></body></html>")
    return "\n".join(out) + "\n"


def write_html(facts: ReportFacts, images: Mapping[str, str | os.PathLike[str]], path: str | os.PathLike[str],
               title: str = "Needle plan", captions: Mapping[str, str] | None = None,
               images_at: int | None = None, links: Sequence[tuple[str, str]] = ()) -> Path:
    """Write the page to ``path`` atomically."""
    return write_text_atomic(render_html(facts, images, title, captions, images_at, links), path)
