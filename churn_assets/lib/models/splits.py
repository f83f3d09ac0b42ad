"""Train / validation / holdout splits.

Both splitters first cut off the holdout (``holdout`` fraction of all rows) and then split
the rest into train and validation (``validation`` fraction of all rows).  With the defaults
that is 60 / 20 / 20.  Row order and index of the input frame are kept inside each part.
"""

from __future__ import annotations

import pandas as pd
from sklearn.model_selection import train_test_split

SPLIT_NAMES: tuple[str, str, str] = ("train", "validation", "holdout")


def _check_fractions(validation: float, holdout: float) -> None:
    if not (0 < validation < 1 and 0 < holdout < 1 and validation + holdout < 1):
        raise ValueError(
            f"need 0 < validation, holdout and validation + holdout < 1; "
            f"got validation={validation}, holdout={holdout}"
        )


def _split(
    df: pd.DataFrame, *, stratify_col: str | None, seed: int, validation: float, holdout: float
) -> dict[str, pd.DataFrame]:
    _check_fractions(validation, holdout)
    if len(df) < 10:
        raise ValueError(f"need at least 10 rows to split, got {len(df)}")
    strat = df[stratify_col] if stratify_col is not None else None
    rest, hold = train_test_split(df, test_size=holdout, random_state=seed, stratify=strat)
    strat_rest = rest[stratify_col] if stratify_col is not None else None
    train, val = train_test_split(
        rest, test_size=validation / (1 - holdout), random_state=seed, stratify=strat_rest
    )
    # Keep the original row order inside each part (deterministic, easier to debug).
    return {
        "train": df.loc[df.index.isin(train.index)],
        "validation": df.loc[df.index.isin(val.index)],
        "holdout": df.loc[df.index.isin(hold.index)],
    }


def split_snapshot(
    df: pd.DataFrame,
    *,
    label: str = "churned",
    seed: int = 42,
    validation: float = 0.2,
    holdout: float = 0.2,
) -> dict[str, pd.DataFrame]:
    """Stratified (on ``label``) train / validation / holdout split of a snapshot frame.

    The holdout is drawn first with ``train_test_split(test_size=holdout, stratify=label,
    random_state=seed)``, so for ``holdout=0.2`` it is the same holdout as a classic
    stratified 80/20 split with that seed.  The index must be unique.
    """
    if not df.index.is_unique:
        raise ValueError("frame index must be unique")
    if label not in df.columns:
        raise KeyError(f"label column {label!r} not in frame")
    return _split(df, stratify_col=label, seed=seed, validation=validation, holdout=holdout)


def split_random(
    df: pd.DataFrame, *, seed: int = 42, validation: float = 0.2, holdout: float = 0.2
) -> dict[str, pd.DataFrame]:
    """Unstratified random train / validation / holdout split (e.g. for regression)."""
    if not df.index.is_unique:
        raise ValueError("frame index must be unique")
    return _split(df, stratify_col=None, seed=seed, validation=validation, holdout=holdout)
