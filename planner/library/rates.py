"""Local risk figures: complication rates by risk factor with Wilson 95% intervals and the
number of cases, and the local odds ratios (a logistic regression on every factor together,
Wald 95% intervals) beside the published ones of ``planner/data/risk_factors/<procedure>.json``.
Refused below a minimum number of cases with a recorded outcome."""

from __future__ import annotations

import json
import math
from importlib import resources
from typing import Any

import numpy as np

from ..errors import InputError
from .store import Library

Z95 = 1.959963984540054
MIN_CASES = 30  # cases with a recorded outcome before any figure is shown
MIN_GROUP = 5  # cases with and without a factor before its odds ratio is estimated


class TooFewCases(InputError):
    """The library has too few cases with an outcome for local figures."""


def published(procedure: str) -> dict[str, Any] | None:
    try:
        text = resources.files("planner").joinpath("data", "risk_factors", f"{procedure}.json").read_text()
    except (FileNotFoundError, OSError):
        return None
    return json.loads(text)


def wilson(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a proportion k/n."""
    if n == 0:
        return (0.0, 1.0)
    p = k / n
    den = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return (max(0.0, centre - half), min(1.0, centre + half))


def logistic(X: np.ndarray, y: np.ndarray, iters: int = 100) -> tuple[np.ndarray, np.ndarray] | None:
    """Maximum-likelihood logistic regression (Newton-Raphson) with an intercept: coefficients
    and their standard errors; None when it does not converge (separation)."""
    A = np.column_stack([np.ones(len(X)), X])
    beta = np.zeros(A.shape[1])
    for _ in range(iters):
        p = 1 / (1 + np.exp(-np.clip(A @ beta, -30, 30)))
        W = p * (1 - p)
        H = A.T @ (A * W[:, None])
        try:
            step = np.linalg.solve(H, A.T @ (y - p))
        except np.linalg.LinAlgError:
            return None
        beta += step
        if np.max(np.abs(step)) < 1e-9:
            break
    if not np.all(np.isfinite(beta)) or np.max(np.abs(beta)) > 15:
        return None
    p = 1 / (1 + np.exp(-(A @ beta)))
    try:
        cov = np.linalg.inv(A.T @ (A * (p * (1 - p))[:, None]))
    except np.linalg.LinAlgError:
        return None
    return beta[1:], np.sqrt(np.diag(cov))[1:]


def local_rates(lib: Library, procedure: str, min_cases: int = MIN_CASES,
                complication: str | None = None) -> dict[str, Any]:
    """The local figures of ``procedure`` (see the module); :class:`TooFewCases` below ``min_cases``."""
    pub = published(procedure)
    comp = complication or (pub or {}).get("complication") or \
        ("pneumothorax" if procedure == "lung-biopsy" else "haemorrhage")
    if comp not in ("pneumothorax", "haemorrhage", "chest_tube", "nondiagnostic"):
        raise InputError(f"--complication {comp!r}: one of pneumothorax, haemorrhage, chest_tube, nondiagnostic")
    cases = [c for c in lib.cases(procedure=procedure) if c.outcome is not None]
    if len(cases) < min_cases:
        raise TooFewCases(f"local rates of {procedure}: refused, {len(cases)} case(s) with a recorded outcome in "
                          f"the library, at least {min_cases} are needed (--min-cases)")

    def event(o: dict[str, Any]) -> int:
        if comp == "chest_tube":
            return int(o["chest_tube"])
        if comp == "nondiagnostic":
            return int(not o["diagnostic"])
        return int(comp in o["complications"])

    y = np.array([event(c.outcome) for c in cases], float)  # type: ignore[arg-type]
    factor_ids = [f["id"] for f in (pub or {}).get("factors", [])] or \
        sorted({k for c in cases for k in c.facts["risk_factors"]})
    titles = {f["id"]: f for f in (pub or {}).get("factors", [])}
    # the published odds ratios are of one complication (pneumothorax for a lung biopsy): beside
    # the local figures of another (a chest tube, a haemorrhage) they would compare unlike things
    pub_of = (pub or {}).get("complication")
    compared = pub is not None and comp == pub_of
    X = np.array([[float(bool(c.facts["risk_factors"].get(f))) for f in factor_ids] for c in cases]).reshape(len(cases), -1)
    n, k = len(cases), int(y.sum())
    rows = []
    usable = []
    for j, fid in enumerate(factor_ids):
        has = X[:, j] > 0
        n1, k1, n0, k0 = int(has.sum()), int(y[has].sum()), int((~has).sum()), int(y[~has].sum())
        row = {"factor": fid, "title": titles.get(fid, {}).get("title", fid),
               "with": {"cases": n1, "events": k1, "rate": k1 / n1 if n1 else None, "ci95": wilson(k1, n1)},
               "without": {"cases": n0, "events": k0, "rate": k0 / n0 if n0 else None, "ci95": wilson(k0, n0)},
               "published_or": titles.get(fid, {}).get("odds_ratio") if compared else None,
               "local_or": None, "local_or_ci95": None,
               "note": ""}
        if min(n1, n0) < MIN_GROUP:
            row["note"] = f"odds ratio not estimated: fewer than {MIN_GROUP} cases {'with' if n1 < n0 else 'without'} it"
        else:
            usable.append(j)
        rows.append(row)
    fit = logistic(X[:, usable], y) if usable else None
    if usable and fit is None:
        for j in usable:
            rows[j]["note"] = "odds ratio not estimable (the outcomes separate the factors completely)"
    elif fit is not None:
        beta, se = fit
        for b, s, j in zip(beta, se, usable):
            rows[j]["local_or"] = float(math.exp(b))
            rows[j]["local_or_ci95"] = (float(math.exp(b - Z95 * s)), float(math.exp(b + Z95 * s)))
            pub_or = rows[j]["published_or"]
            if pub_or is not None:
                lo, hi = rows[j]["local_or_ci95"]
                rows[j]["note"] = "published OR within the local 95% interval" if lo <= pub_or <= hi else \
                    "published OR OUTSIDE the local 95% interval"
    return {"procedure": procedure, "complication": comp, "cases": n, "events": k, "rate": k / n,
            "ci95": wilson(k, n), "min_cases": min_cases, "factors": rows,
            "model": "logistic regression on every estimable factor together; Wald 95% intervals",
            "published_complication": pub_of,
            "source": (pub or {}).get("source", "no published odds ratios for this procedure") if compared or pub is None
            else f"the published odds ratios are of {WORDS.get(pub_of, pub_of)}, not of {WORDS.get(comp, comp)}: none "
                 "shown beside these figures"}


#: How the complications read in the text.
WORDS = {"pneumothorax": "pneumothorax", "haemorrhage": "haemorrhage", "chest_tube": "chest tube",
         "nondiagnostic": "non-diagnostic sample"}


def lines(r: dict[str, Any]) -> list[str]:
    pct = (lambda v: "  -  " if v is None else f"{100 * v:5.1f}%")
    ci = (lambda t: f"[{100 * t[0]:.1f}-{100 * t[1]:.1f}%]")
    what = WORDS.get(r["complication"], r["complication"])
    out = [f"{r['procedure']}: {what} in {r['events']} of {r['cases']} cases with an outcome, "
           f"{pct(r['rate']).strip()} {ci(r['ci95'])} (Wilson 95%)"]
    if not r["factors"]:
        out.append(f"no risk factors with published odds ratios for {r['procedure']}: the overall rate only")
        return out
    group = (lambda g: f"{g['cases']:>4} {pct(g['rate'])} {ci(g['ci95']):<16}")  # 28 characters
    out.append(f"{'factor':<62}{'with: n, rate [95% CI]':<31}{'without: n, rate [95% CI]':<31}"
               f"{'local OR [95% CI]':<22}published OR")
    for f in r["factors"]:
        lor = "-" if f["local_or"] is None else f"{f['local_or']:.2f} [{f['local_or_ci95'][0]:.2f}-{f['local_or_ci95'][1]:.2f}]"
        pub = "-" if f["published_or"] is None else f"{f['published_or']:.2f}"
        out.append(f"{f['title'][:60]:<62}{group(f['with']):<31}{group(f['without']):<31}{lor:<22}{pub}")
        if f["note"]:
            out.append(f"    {f['note']}")
    out.append(f"local ORs: {r['model']}; published: {r['source']}")
    return out
