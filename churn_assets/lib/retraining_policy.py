"""When a retraining is worth starting: the scheduled one only when its inputs changed
since the last completed training, the drift-triggered one once per drift episode.

Framework-free: the schedule and the drift sensor read the event log and pass plain
values here."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Verdict:
    """``due``: start a run; ``reason``: why, or why not (shown on the tick in the UI)."""

    due: bool
    reason: str


def scheduled_retraining(
    latest_inputs: Mapping[str, float | None], last_training: float | None
) -> Verdict:
    """Retrain on a schedule tick only when an input of the training set was materialized
    after the last completed training began.

    Args:
        latest_inputs: Asset name → when it was last materialized (epoch seconds; None:
            never), the last completed training's own materializations left out.
        last_training: When the last successful retraining run started (None: no
            retraining has completed yet).
    """
    present = {name: sid for name, sid in latest_inputs.items() if sid is not None}
    if not present:
        return Verdict(False, "no input has been materialized yet: nothing to train on")
    if last_training is None:
        return Verdict(True, "no retraining has completed yet")
    newer = sorted(name for name, sid in present.items() if sid > last_training)
    if newer:
        return Verdict(True, f"new data since the last training: {', '.join(newer)}")
    return Verdict(
        False,
        "no new data since the last completed training (inputs "
        f"{', '.join(sorted(present))} unchanged): nothing to retrain",
    )


def drift_episode(
    reference: str, drifted: Iterable[str], requested_before: Iterable[Iterable[str]]
) -> Verdict:
    """Start a drift-triggered retraining once per drift episode.

    An episode is a deployed reference version and the columns drifted against it. A
    drift report whose drifted columns were all named by an earlier drift-triggered
    retraining against the same reference belongs to that episode: that retraining's
    challenger was refused (the reference did not move) or is still queued. New data is
    picked up by the scheduled retraining; a newly drifted column, or a new deployed
    version, starts a new episode.

    Args:
        reference: The deployed version the report compared against.
        drifted: The report's drifted columns (features and predictions).
        requested_before: Drifted columns of each earlier drift-triggered retraining
            against ``reference``.
    """
    now = set(drifted)
    seen: set[str] = set()
    for columns in requested_before:
        seen |= set(columns)
    if seen and now <= seen:
        return Verdict(
            False,
            f"drift against {reference} on {_names(now)} already requested a retraining "
            "(its challenger was refused or is still queued); the scheduled retraining picks "
            "up new data",
        )
    new = now - seen
    if seen:
        return Verdict(True, f"new drift against {reference}: {_names(new)}")
    return Verdict(True, f"drift against {reference}: {_names(now)}")


def _names(columns: set[str], shown: int = 8) -> str:
    names = sorted(columns)
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return (", ".join(names[:shown]) or "predictions") + more
