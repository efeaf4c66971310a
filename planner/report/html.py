"""The report as one self-contained HTML page: the same blocks as the PDF, images inlined as data URIs."""

from __future__ import annotations

import base64
import os
from html import escape
from pathlib import Path
from typing import Mapping

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
@media print{body{margin:0}}
"""


def render_html(facts: ReportFacts, images: Mapping[str, str | os.PathLike[str]], title: str = "Needle plan") -> str:
    """The whole page as a string."""
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">', f"<title>{escape(title)}</title>",
           f"<style>{_CSS}</style></head><body>", f"<h1>{escape(facts.title)}</h1>",
           f'<p class="sub">{escape(facts.subtitle)}</p>']
    if facts.status != "ok":
        out.append('<p class="warn"><strong>NO SAFE TRAJECTORY</strong>: see "Why no trajectory is safe" below.</p>')
    for block in facts.blocks:
        out.append(f"<h2>{escape(block.title)}</h2>")
        if isinstance(block, KeyValues):
            out.append('<table class="kv">')
            out += [f"<tr><th>{escape(k)}</th><td>{escape(v)}</td></tr>" for k, v in block.rows]
            out.append("</table>")
            if block.note:
                out.append(f'<p class="note">{escape(block.note)}</p>')
        elif isinstance(block, Table):
            out.append("<table><tr>" + "".join(f"<th>{escape(h)}</th>" for h in block.header) + "</tr>")
            out += ["<tr>" + "".join(f"<td>{escape(c)}</td>" for c in r) + "</tr>" for r in block.rows]
            out.append("</table>")
            if block.note:
                out.append(f'<p class="note">{escape(block.note)}</p>')
        elif isinstance(block, Bullets):
            if block.kind == "warning":
                out.append('<ul class="warn">' + "".join(f"<li><strong>WARNING:</strong> {escape(i)}</li>"
                                                        for i in block.items) + "</ul>")
            else:
                out.append("<ul>" + "".join(f"<li>{escape(i)}</li>" for i in block.items) + "</ul>")
    if images:
        out.append("<h2>Images</h2>")
        for name, p in images.items():
            data = base64.b64encode(Path(p).read_bytes()).decode("ascii")
            cap = escape(image_title(name))
            out.append(f'<figure><img alt="{cap}" src="data:image/png;base64,{data}"><figcaption>{cap}</figcaption></figure>')
    out.append('<h2>Operator sign-off</h2><table class="sig">')
    out += [f'<tr><td>{escape(line)}</td><td class="line"></td></tr>' for line in facts.signature_lines]
    out.append("</table>")
    out.append(f"<footer>{escape(facts.footer)}</footer></body></html>")
    return "\n".join(out) + "\n"


def write_html(facts: ReportFacts, images: Mapping[str, str | os.PathLike[str]], path: str | os.PathLike[str],
               title: str = "Needle plan") -> Path:
    """Write the page to ``path`` atomically."""
    return write_text_atomic(render_html(facts, images, title), path)
