"""Platforms sharing one MLflow server: whose experiment is whose.

A platform creates its data set's experiment with the artifact location under its own
storage root (``<storage>/mlflow/artifacts/<data set>``), so that location says which
platform the experiment belongs to. A second platform (staging beside production) on the
same server with the same names would log into the first one's experiment (its model files
under the first one's storage), move the first one's ``champion`` aliases (one alias per
registered name) and let either's retention delete the other's runs: it is refused, and
``CHURN_MLFLOW_NAMESPACE`` gives it names of its own.
"""

from __future__ import annotations

from typing import Protocol


class SharedExperimentError(RuntimeError):
    """The MLflow experiment of this platform's names belongs to another platform."""


class _Tracking(Protocol):
    tracking_uri: str
    artifact_location: str
    experiment: str
    namespace: str
    embedded: bool


def _normalized(location: str) -> str:
    return location.removeprefix("file://").rstrip("/")


def foreign_experiment(
    cfg: _Tracking,
    artifact_location: str | None,
    outcome: str = "Nothing was logged or registered in it.",
) -> str | None:
    """Why the existing experiment of ``cfg``, whose artifacts go to ``artifact_location``,
    is not this platform's (another storage root created it), with ``outcome`` (what was
    not done) and what to do; None when it is this platform's (or the store is the embedded
    one inside this platform's storage, which nothing shares)."""
    if cfg.embedded or not artifact_location:
        return None
    if _normalized(artifact_location) == _normalized(cfg.artifact_location):
        return None
    dataset_dir = "/" + cfg.artifact_location.rstrip("/").rsplit("/", 1)[-1]
    suffix = "/mlflow/artifacts" + dataset_dir
    theirs = _normalized(artifact_location).removesuffix(suffix)
    ours = _normalized(cfg.artifact_location).removesuffix(suffix)
    return (
        f"the MLflow experiment {cfg.experiment!r} at {cfg.tracking_uri} belongs to another "
        f"platform: its artifacts go to {artifact_location} (the platform storing at "
        f"{theirs}), while this platform stores at {ours}. Sharing it would put this "
        "platform's runs and model files under the other's storage, move the other's "
        "champion aliases with this platform's promotions and rollbacks, and let either "
        f"platform's retention delete the other's runs. {outcome} Give this platform names "
        "of its own: set CHURN_MLFLOW_NAMESPACE (a short name such as production) "
        "wherever it runs (code location, daemon, `churn` commands); if this is "
        f"the same platform and only its storage moved from {theirs}, set it too, or rename "
        "the old experiment in MLflow"
    )
