"""Learning the department's choices of trajectory: the preset's soft-criterion weights fitted
to the trajectories operators chose (pairwise learning to rank, a logistic regression of
scikit-learn on the differences of the criteria between the chosen and each other trajectory),
cross-validated. Only the weights are learned; the hard constraints (margins, angles, depth,
needles, positions, approaches) are copied unchanged, and a variant is written only if it agrees
with the choices better than the preset does."""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from .store import Library

MIN_CHOICES = 10


class TooFewChoices(InputError):
    pass


def preset_document(procedure: str) -> dict[str, Any]:
    try:
        return json.loads(resources.files("planner").joinpath("data", "presets", f"{procedure}.json").read_text())
    except (FileNotFoundError, OSError):
        raise InputError(f"{procedure!r}: no such procedure preset (planner procedures lists them)") from None


def variant_path(root: Path, procedure: str) -> Path:
    """Where a library keeps its department variant of a preset (``planner plan --library ROOT``
    plans with it)."""
    return Path(root) / "presets" / f"{procedure}.json"


def term(metrics: dict[str, float], key: str) -> float:
    """One criterion as the planner's score uses it (planner/planning/engine.py ``_score``)."""
    if key == "clearance_deficit_mm":
        return max(0.0, 10.0 - metrics.get("min_clearance_excess_mm", 99.0))
    if key == "pleura_crossings_beyond_first":
        return max(0.0, metrics.get("pleura_crossings", 0.0) - 1)
    return float(metrics.get(key, 0.0))


@dataclass
class Choices:
    keys: list[str]
    sets: list[np.ndarray]  # per case: trajectories x criteria
    chosen: list[int]  # per case: index of the chosen trajectory


def choices(lib: Library, procedure: str, keys: list[str]) -> Choices:
    sets, chosen = [], []
    for c in lib.cases(procedure=procedure):
        f = c.facts
        if f["chosen_source"] not in ("recorded", "check") or f["n_trajectories"] < 2:
            continue
        trajs = sorted(f["trajectories"], key=lambda t: t["rank"])
        idx = next((i for i, t in enumerate(trajs) if t["rank"] == f["chosen_rank"]), None)
        if idx is None:
            continue
        sets.append(np.array([[term(t["metrics"], k) for k in keys] for t in trajs]))
        chosen.append(idx)
    return Choices(keys, sets, chosen)


def agreement(ch: Choices, w: np.ndarray, idx: list[int] | None = None) -> float:
    """Share of cases whose chosen trajectory scores best (lowest) under weights ``w``."""
    idx = list(range(len(ch.sets))) if idx is None else idx
    if not idx:
        return float("nan")
    return float(np.mean([int(np.argmin(ch.sets[i] @ w)) == ch.chosen[i] for i in idx]))


def fit(ch: Choices, idx: list[int], w0: np.ndarray, C: float = 10.0) -> np.ndarray:
    """Weights fitted to the choices of cases ``idx``: every other trajectory should score higher
    than the chosen one. Criteria that never differ keep the preset's weight; weights stay >= 0
    (every criterion is a cost) and are scaled to the preset's overall size."""
    from sklearn.linear_model import LogisticRegression

    diffs = np.vstack([np.delete(ch.sets[i], ch.chosen[i], axis=0) - ch.sets[i][ch.chosen[i]] for i in idx])
    scale = np.vstack([ch.sets[i] for i in idx]).std(axis=0)
    live = scale > 1e-9
    w = w0.copy()
    if not live.any() or len(diffs) == 0:
        return w
    Z = diffs[:, live] / scale[live]
    X = np.vstack([Z, -Z])
    y = np.r_[np.ones(len(Z)), np.zeros(len(Z))]
    model = LogisticRegression(fit_intercept=False, C=C, max_iter=2000)
    model.fit(X, y)
    beta = np.maximum(model.coef_[0], 0.0) / scale[live]
    size0 = float(np.sum(w0[live] * scale[live]))
    size1 = float(np.sum(beta * scale[live]))
    w[live] = beta * (size0 / size1 if size1 > 0 else 1.0)
    return w


def learn(lib: Library, procedure: str, folds: int = 5, min_choices: int = MIN_CHOICES,
          write: bool = True) -> dict[str, Any]:
    """Fit, cross-validate, and (if better) write ``ROOT/presets/<procedure>.json``."""
    from sklearn.model_selection import KFold

    doc = preset_document(procedure)
    weights = doc.get("weights") or {}
    keys = list(weights)
    if not keys:
        raise InputError(f"{procedure}: the preset has no soft-criterion weights to learn")
    w0 = np.array([float(weights[k]) for k in keys])
    ch = choices(lib, procedure, keys)
    n = len(ch.sets)
    if n < min_choices:
        raise TooFewChoices(f"learn {procedure}: refused, {n} case(s) with a recorded choice of trajectory among "
                            f"two or more, at least {min_choices} are needed")
    before = agreement(ch, w0)
    k = max(2, min(folds, n))
    hits = []
    for train, test in KFold(n_splits=k, shuffle=True, random_state=0).split(np.arange(n)):
        w = fit(ch, list(train), w0)
        hits += [int(np.argmin(ch.sets[i] @ w)) == ch.chosen[i] for i in test]
    after = float(np.mean(hits))
    w_all = fit(ch, list(range(n)), w0)
    result = {"procedure": procedure, "cases": n, "folds": k, "agreement_before": before,
              "agreement_after_cv": after, "agreement_after_fit": agreement(ch, w_all),
              "weights_before": dict(zip(keys, w0.tolist())),
              "weights_after": {k_: round(float(v), 6) for k_, v in zip(keys, w_all)}, "written": None}
    if write and after > before:
        variant = dict(doc)
        variant["weights"] = result["weights_after"]
        variant["department_variant"] = {
            "of_preset": procedure, "of_version": doc.get("version"),
            "learned_from_cases": n, "agreement_before": round(before, 4), "agreement_after_cv": round(after, 4),
            "method": "pairwise learning to rank (scikit-learn LogisticRegression on criterion differences), "
                      f"{k}-fold cross-validated; only the soft-criterion weights are learned, every hard "
                      "constraint is the preset's own"}
        path = variant_path(lib.root, procedure)
        from ..atomic import write_json_atomic

        path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(variant, path)
        result["written"] = str(path)
    return result
