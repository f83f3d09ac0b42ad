"""How a model set picks its champion: staged training and a selection that holds off-sample.

The **staged** procedure (the default) trains the same candidates as the exhaustive one with
less work, and picks the champion on two estimates instead of one:

1. *screen*: every candidate is fitted once on TRAIN (on a seeded, stratified subsample of
   at most ``screen_max_rows`` rows when train is larger) and scored on VALIDATION;
2. *finalists*: the best ``finalists`` candidates on validation are cross-validated on
   TRAIN (k-fold on at most ``cv_max_rows`` rows); the others are reported but excluded
   ("screened out");
3. *selection*: the champion is the finalist with the best combined score, the mean of its
   validation score and its CV mean (one estimate on later / other customers, one over
   several folds: a single split of a heavy-tailed target can be dominated by a handful of
   customers);
4. *final fit*: the champion (and the best simple candidate, the serving fallback) is
   refitted on TRAIN + VALIDATION, the only fits that see all the rows; its decision
   threshold was chosen on validation before the refit; the holdout, never used for a
   choice, scores the refitted pipeline.

Above the row caps the cost of steps 1-2 no longer grows with the data; only the final fit
does.  The forests' trees draw at most ``forest_max_samples`` rows each.

The **exhaustive** procedure is the previous one, kept for comparison (``churn bench
training`` runs both): every candidate fitted on all of train and cross-validated, the
champion is the best on validation alone, no refit.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np

Procedure = Literal["staged", "exhaustive"]

#: Candidates kept after the screen (they get the full fit and the cross-validation).
FINALISTS = 3
#: Above this many train rows, the screen fits a seeded subsample of this size.
SCREEN_MAX_ROWS = 20_000
#: Cross-validation of the finalists runs on at most this many train rows.
CV_MAX_ROWS = 20_000
#: Each tree of the random forests / extra trees draws at most this many rows.
FOREST_MAX_SAMPLES = 20_000
#: Weight of the validation score in the combined score (the CV mean gets the rest).
VALIDATION_WEIGHT = 0.5


@dataclass(frozen=True)
class SelectionPolicy:
    """Knobs of the procedure (defaults: the staged procedure described in the module)."""

    procedure: Procedure = "staged"
    finalists: int = FINALISTS
    screen_max_rows: int | None = SCREEN_MAX_ROWS
    cv_max_rows: int | None = CV_MAX_ROWS
    forest_max_samples: int | None = FOREST_MAX_SAMPLES
    refit: bool = True

    def __post_init__(self) -> None:
        if self.procedure not in ("staged", "exhaustive"):
            raise ValueError(f"unknown procedure {self.procedure!r}; use staged or exhaustive")
        if self.finalists < 1:
            raise ValueError("finalists must be at least 1")

    @property
    def staged(self) -> bool:
        return self.procedure == "staged"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


STAGED = SelectionPolicy()
EXHAUSTIVE = SelectionPolicy(
    procedure="exhaustive",
    finalists=10**6,
    screen_max_rows=None,
    cv_max_rows=None,
    forest_max_samples=None,
    refit=False,
)


def resolve_policy(policy: SelectionPolicy | Procedure | None) -> SelectionPolicy:
    """``None`` -> :data:`STAGED`; a procedure name -> its default policy."""
    if policy is None:
        return STAGED
    if isinstance(policy, SelectionPolicy):
        return policy
    if policy == "staged":
        return STAGED
    if policy == "exhaustive":
        return EXHAUSTIVE
    raise ValueError(f"unknown procedure {policy!r}; use staged or exhaustive")


def subsample_positions(
    n: int, cap: int | None, seed: int, stratify: np.ndarray | None = None
) -> np.ndarray | None:
    """Sorted row positions of a seeded (stratified) subsample of ``cap`` rows, or ``None``
    when ``n <= cap`` (use every row)."""
    if cap is None or n <= cap:
        return None
    from sklearn.model_selection import train_test_split

    positions = np.arange(n)
    kept, _ = train_test_split(positions, train_size=cap, random_state=seed, stratify=stratify)
    return np.sort(kept)


def combined_score(
    validation: float, cv_mean: float | None, validation_weight: float = VALIDATION_WEIGHT
) -> float:
    """Validation and CV together (``validation_weight`` on validation, the rest on the CV
    mean); validation alone without CV."""
    if cv_mean is None or not math.isfinite(cv_mean) or validation_weight >= 1:
        return float(validation)
    return validation_weight * float(validation) + (1 - validation_weight) * float(cv_mean)


def rank(scores: dict[str, float], greater_is_better: bool) -> list[str]:
    """Names best-first (NaN last, ties alphabetical)."""

    def key(name: str) -> tuple[int, float, str]:
        value = scores[name]
        if value != value:
            return (1, 0.0, name)
        return (0, -value if greater_is_better else value, name)

    return sorted(scores, key=key)


def finite(value: float | None) -> float | None:
    """``value`` as a JSON-safe float (None for NaN / inf / None)."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None
