"""The cohort's results: ``results.csv``, ``results.parquet`` and ``summary.html`` with its plots
(matplotlib, PNG): feasibility by region and by target size, the depth and risk-factor
distributions, the most limiting structures, and the failures with their reasons."""

from __future__ import annotations

import csv
import html
import io
from collections import Counter
from pathlib import Path
from typing import Any, Sequence

from ..atomic import write_bytes_atomic, write_text_atomic

#: Target sizes (mm, equivalent-sphere diameter) the feasibility is shown by.
SIZE_BINS = ((0, 10, "< 10 mm"), (10, 20, "10-20 mm"), (20, 30, "20-30 mm"), (30, 1e9, ">= 30 mm"))


def write_results(d: Path, records: list[dict[str, Any]], columns: Sequence[str]) -> None:
    """The table (CSV and Parquet, one row per manifest row) and the summary page."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{c: rec.get(c) for c in columns} for rec in records]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(columns), lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: "" if v is None else v for k, v in r.items()})
    write_text_atomic(buf.getvalue(), d / "results.csv")
    types = {"line": pa.int64(), "feasible": pa.bool_(), "n_risk_factors": pa.int64(), "n_candidates": pa.int64(),
             "skipped": pa.bool_()}
    floats = ("depth_mm", "lung_mm", "fissures", "pleura_crossings", "emphysema_mm", "min_clearance_excess_mm",
              "target_diameter_mm", "seconds")
    fields = [pa.field(c, types.get(c, pa.float64() if c in floats else pa.string())) for c in columns]
    table = pa.Table.from_pylist(rows, schema=pa.schema(fields))
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    write_bytes_atomic(sink.getvalue().to_pybytes(), d / "results.parquet")
    _summary(d, records)


def _plot(path: Path, draw: Any) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 3.6), dpi=100)
    draw(ax)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    write_bytes_atomic(buf.getvalue(), path)
    return path.name


def _share_bars(ax: Any, groups: dict[str, list[bool]], title: str) -> None:
    names = list(groups)
    shares = [100.0 * sum(v) / len(v) for v in groups.values()]
    ax.barh(names, shares, color="#3a7")
    for y, (s, v) in enumerate(zip(shares, groups.values())):
        ax.text(min(s + 1, 90), y, f"{s:.0f}% of {len(v)}", va="center", fontsize=8)
    ax.set_xlim(0, 100)
    ax.set_xlabel("feasible (%)")
    ax.set_title(title, fontsize=10)
    ax.invert_yaxis()


def _summary(d: Path, records: list[dict[str, Any]]) -> None:
    ran = [r for r in records if not r.get("error")]
    failed = [r for r in records if r.get("error")]
    plots = []
    if ran:
        by_region: dict[str, list[bool]] = {}
        for r in ran:
            by_region.setdefault(f"{r.get('procedure')}: {r.get('region') or 'unnamed'}", []).append(bool(r["feasible"]))
        plots.append(("Feasibility by procedure and region", _plot(d / "summary_region.png", lambda ax: _share_bars(
            ax, dict(sorted(by_region.items())), "feasible share by procedure and region"))))
        by_size: dict[str, list[bool]] = {}
        for lo, hi, label in SIZE_BINS:
            sel = [bool(r["feasible"]) for r in ran if r.get("target_diameter_mm") is not None
                   and lo <= float(r["target_diameter_mm"]) < hi]
            if sel:
                by_size[label] = sel
        if by_size:
            plots.append(("Feasibility by target size", _plot(d / "summary_size.png", lambda ax: _share_bars(
                ax, by_size, "feasible share by target size"))))
        depths = [float(r["depth_mm"]) for r in ran if r.get("depth_mm") is not None]
        if depths:
            def hist(ax: Any) -> None:
                ax.hist(depths, bins=min(20, max(5, len(depths) // 3)), color="#47a")
                ax.set_xlabel("depth of the best trajectory (mm)")
                ax.set_ylabel("targets")
                ax.set_title(f"depth, {len(depths)} feasible targets", fontsize=10)
            plots.append(("Depth", _plot(d / "summary_depth.png", hist)))
        factors = Counter(f.split(":")[0].split(" (")[0] for r in ran for f in str(r.get("risk_factors") or "").split("; ")
                          if f)
        if factors:
            def bars(ax: Any) -> None:
                names, counts = zip(*factors.most_common(10))
                ax.barh(names, counts, color="#a74")
                ax.invert_yaxis()
                ax.set_xlabel("feasible targets with it")
                ax.set_title("risk factors of the best trajectories", fontsize=10)
            plots.append(("Risk factors", _plot(d / "summary_risk.png", bars)))
        limiting = Counter(str(r.get("limiting_structure")) for r in ran if r.get("limiting_structure"))
        ruled = Counter()
        for r in ran:
            if not r.get("feasible") and r.get("ruled_out"):
                import json

                shares = json.loads(r["ruled_out"])
                if shares:
                    ruled[max(shares, key=shares.get)] += 1
        if limiting or ruled:
            def lim(ax: Any) -> None:
                items = [(f"closest: {k}", v) for k, v in limiting.most_common(8)] + \
                        [(f"ruled out most by: {k}", v) for k, v in ruled.most_common(5)]
                names, counts = zip(*items)
                ax.barh(names, counts, color="#777")
                ax.invert_yaxis()
                ax.set_xlabel("targets")
                ax.set_title("the most limiting structures and constraints", fontsize=10)
            plots.append(("Limiting structures", _plot(d / "summary_limiting.png", lim)))
    n_feasible = sum(1 for r in ran if r.get("feasible"))
    esc = html.escape
    parts = ["<!doctype html><html><head><meta charset='utf-8'><title>Cohort summary</title><style>"
             "body{font-family:sans-serif;margin:2em;max-width:60em}table{border-collapse:collapse}"
             "td,th{border:1px solid #bbb;padding:2px 6px;font-size:90%}</style></head><body>",
             "<h1>Cohort summary</h1>",
             f"<p>{len(records)} targets: {len(ran)} planned, {n_feasible} feasible "
             f"({100.0 * n_feasible / max(len(ran), 1):.0f}% of those planned), {len(failed)} failed (listed below). "
             "Table: <a href='results.csv'>results.csv</a>, <a href='results.parquet'>results.parquet</a>.</p>"]
    for title, name in plots:
        parts.append(f"<h2>{esc(title)}</h2><img src='{esc(name)}' alt='{esc(title)}'>")
    parts.append("<h2>Failures</h2>")
    if failed:
        parts.append("<table><tr><th>line</th><th>case</th><th>target</th><th>reason</th></tr>")
        for r in failed:
            parts.append(f"<tr><td>{r.get('line')}</td><td>{esc(str(r.get('case_id')))}</td>"
                         f"<td>{esc(str(r.get('target', '')))}</td><td>{esc(str(r.get('error')))}</td></tr>")
        parts.append("</table>")
    else:
        parts.append("<p>none</p>")
    parts.append("</body></html>")
    write_text_atomic("\n".join(parts), d / "summary.html")
