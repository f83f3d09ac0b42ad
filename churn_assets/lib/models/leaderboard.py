"""Result containers of a model set and the leaderboard built from them."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

import pandas as pd

from .metrics import greater_is_better

Kind = Literal["classification", "regression"]


@dataclass
class CandidateResult:
    """One trained candidate of a model set.

    ``pipeline`` is a fitted sklearn ``Pipeline`` (fitted on the TRAIN split) taking the raw
    feature frame.  ``metrics`` are measured on the HOLDOUT split, ``validation_metrics`` on
    the VALIDATION split (used for champion choice and, for classification, the threshold),
    ``cv`` on TRAIN with k-fold cross-validation (``cv_<metric>_mean`` / ``cv_<metric>_sd``).
    """

    name: str
    pipeline: Any
    metrics: dict[str, float]
    cv: dict[str, float]
    threshold: float | None
    params: dict[str, Any]
    train_seconds: float
    kind: Kind
    is_simple: bool
    validation_metrics: dict[str, float] = field(default_factory=dict)
    cv_seconds: float = 0.0
    #: Rows of the fit behind ``pipeline`` / ``metrics`` (train, its screening subsample, or
    #: train + validation after the refit).
    fit_rows: int = 0
    #: ``screened`` (subsample fit, dropped at the screen), ``finalist`` (fitted on train),
    #: ``refit`` (refitted on train + validation; ``metrics`` score that refit).
    stage: str = "finalist"
    #: Holdout metrics of the train-only fit, kept when the candidate was refitted.
    metrics_before_refit: dict[str, float] | None = None


@dataclass
class ModelSetResult:
    """All candidates of one model set plus the selection.

    ``champion`` is chosen as ``selection`` records (see :mod:`.selection`: by default on
    validation and CV together, then refitted on train + validation; for regression only a
    candidate that beats the naive baseline, else the naive baseline itself);
    ``best_simple`` is the best simple candidate (logistic regression / ridge / naive) on
    validation, the serving fallback. Holdout metrics are never used for selection, so they
    stay an honest estimate.
    """

    kind: Kind
    candidates: list[CandidateResult]
    champion: str
    best_simple: str
    primary_metric: str
    seed: int = 42
    feature_spec: dict[str, Any] = field(default_factory=dict)
    #: JSON-able record of how the champion was chosen: ``procedure``, ``rule``, per-candidate
    #: ``scores`` (validation, CV mean, combined), ``finalists``, ``excluded`` (name ->
    #: reason), ``refit`` (names refitted on train + validation), ``fallback_to_naive``,
    #: ``threshold_source`` and the per-phase ``seconds``.
    selection: dict[str, Any] = field(default_factory=dict)

    def get(self, name: str) -> CandidateResult:
        """The candidate called ``name`` (``KeyError`` if absent)."""
        for cand in self.candidates:
            if cand.name == name:
                return cand
        raise KeyError(f"no candidate {name!r}; have {[c.name for c in self.candidates]}")

    @property
    def champion_result(self) -> CandidateResult:
        """The champion's :class:`CandidateResult`."""
        return self.get(self.champion)

    @property
    def best_simple_result(self) -> CandidateResult:
        """The best simple candidate's :class:`CandidateResult`."""
        return self.get(self.best_simple)

    def leaderboard(self, by: Literal["holdout", "validation"] = "holdout") -> pd.DataFrame:
        """One row per candidate sorted best-first by the primary metric.

        ``by="holdout"`` (default) sorts on the holdout value (column ``<primary>``),
        ``by="validation"`` on the validation value used for selection (``val_<primary>``).
        Columns: ``name``, ``champion``, ``best_simple``, ``is_simple``, all holdout metrics,
        ``val_<primary>``, the CV columns, ``threshold`` (classification only), ``train_seconds``,
        ``cv_seconds``, ``fit_rows``, ``stage``.
        """
        rows = []
        for cand in self.candidates:
            row: dict[str, Any] = {
                "name": cand.name,
                "champion": cand.name == self.champion,
                "best_simple": cand.name == self.best_simple,
                "is_simple": cand.is_simple,
            }
            row.update(cand.metrics)
            row[f"val_{self.primary_metric}"] = cand.validation_metrics.get(
                self.primary_metric, math.nan
            )
            row.update(cand.cv)
            if self.kind == "classification":
                row["threshold"] = cand.threshold if cand.threshold is not None else math.nan
            row["train_seconds"] = cand.train_seconds
            row["cv_seconds"] = cand.cv_seconds
            row["fit_rows"] = cand.fit_rows
            row["stage"] = cand.stage
            rows.append(row)
        frame = pd.DataFrame(rows)
        key = self.primary_metric if by == "holdout" else f"val_{self.primary_metric}"
        ascending = not greater_is_better(self.primary_metric)
        frame = frame.sort_values(
            [key, "name"], ascending=[ascending, True], na_position="last", kind="mergesort"
        )
        return frame.reset_index(drop=True)

    def leaderboard_markdown(self, by: Literal["holdout", "validation"] = "holdout") -> str:
        """The leaderboard as a GitHub-flavoured markdown table (floats to 4 decimals)."""
        frame = self.leaderboard(by=by)
        frame = frame.drop(columns=["is_simple"])
        frame["name"] = [
            name + (" (champion)" if champ else "") + (" (simple)" if simple else "")
            for name, champ, simple in zip(
                frame["name"], frame["champion"], frame["best_simple"], strict=True
            )
        ]
        frame = frame.drop(columns=["champion", "best_simple"])
        header = "| " + " | ".join(frame.columns) + " |"
        sep = "|" + "|".join("---" if col == "name" else "---:" for col in frame.columns) + "|"
        lines = [header, sep]
        for _, row in frame.iterrows():
            cells = []
            for col in frame.columns:
                value = row[col]
                if isinstance(value, float):
                    cells.append("" if math.isnan(value) else f"{value:.4f}")
                else:
                    cells.append(str(value))
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines)
