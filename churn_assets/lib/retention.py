"""Retention: keep the last N of everything the platform writes on every run.

What grows without bound, and what is kept (``CHURN_RETENTION_*`` overrides each count):

- deployed versions ``deployments/versions/v*`` — the newest ``versions`` (default 10);
  the deployed version, a pinned one and the rollback target (the version a rollback
  goes to) are never deleted, whatever their age;
- model-set files of training runs ``models/<kind>/<run id>/`` — the newest ``model_sets``;
- drift reports ``monitoring/drift/<stamp>-<run>/`` — the newest ``drift_reports``
  (``latest.json`` stays), and as many served-traffic reports ``monitoring/served_drift/``;
- quarantine batches ``quarantine/<table>/<stamp>-<run>/`` — the newest
  ``quarantine_batches`` per table;
- inference-log days ``inference_log/date=YYYY-MM-DD/`` — the last ``inference_log_days``;
- scoring snapshots ``scores/<version>/<cut-off>.parquet`` — every snapshot whose horizon
  has not passed in the data yet (realized performance still needs it), and the newest
  ``score_snapshots`` of those whose horizon has passed;
- MLflow model-set runs (parent + nested candidate runs) — the newest ``model_sets`` per
  kind; a run whose model a kept version or a registered model version uses is kept;
- MLflow drift-report runs (one per drift report) — the newest ``drift_reports``.

A pruned MLflow run is marked deleted and its files go with it: its artifacts and its
logged models' (MLflow only marks a deleted run; its files would stay for ever).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import warnings
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from churn_assets.lib import deployment as dep
from churn_assets.lib.storage import Storage


@dataclass(frozen=True)
class RetentionPolicy:
    """How many of each kind of record to keep (each at least 1)."""

    versions: int = 10
    model_sets: int = 20
    drift_reports: int = 30
    quarantine_batches: int = 30
    inference_log_days: int = 30
    score_snapshots: int = 30

    def __post_init__(self) -> None:
        for key, value in asdict(self).items():
            if int(value) < 1:
                raise ValueError(f"retention {key} must be at least 1, got {value}")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> RetentionPolicy:
        """Counts from ``CHURN_RETENTION_<FIELD>`` (e.g. ``CHURN_RETENTION_VERSIONS``)."""
        env = os.environ if env is None else env
        values: dict[str, int] = {}
        for key in asdict(cls()):
            raw = env.get(f"CHURN_RETENTION_{key.upper()}")
            if raw not in (None, ""):
                try:
                    values[key] = int(raw)
                except ValueError:
                    values[key] = 0
                if values[key] < 1:
                    raise ValueError(
                        f"CHURN_RETENTION_{key.upper()}={raw!r}: it takes a whole number of "
                        f"at least 1 (unset: {getattr(cls(), key)})"
                    )
        return cls(**values)


def _dirs(storage: Storage, rel: str, pattern: str = "*") -> list[str]:
    """Sub-folder names of ``rel`` (one level) that hold files, sorted."""
    names = set()
    prefix = rel.rstrip("/") + "/"
    for f in storage.list_files(rel, f"{pattern}/**"):
        rest = f[len(prefix) :] if f.startswith(prefix) else f
        if "/" in rest:
            names.add(rest.split("/", 1)[0])
    return sorted(names)


def protected_versions(storage: Storage) -> set[str]:
    """Versions never deleted: the deployed one, a pinned one, the rollback target (the
    version ``churn rollback`` goes to, :func:`deployment.previous_version`) and the
    version deployed before the deployed one (after a rollback: the one it left)."""
    current = dep.read_current(storage)
    if current is None:
        return set()
    keep = {current["version"]}
    if current.get("pinned"):
        keep.add(str(current["pinned"]))
    history = current.get("history", [])
    earlier = [h["version"] for h in history if h["version"] != current["version"]]
    if earlier:
        keep.add(earlier[-1])
    with contextlib.suppress(dep.DeploymentError):  # raised when there is nothing older
        keep.add(dep.previous_version(current))
    return keep


def settled_snapshots_beyond(storage: Storage, keep: int, horizon_days: int | None) -> list[str]:
    """Scoring snapshots to delete: of those whose horizon has passed in the data (cut-off
    at least ``horizon_days`` before the newest snapshot's; all of them when the horizon is
    unknown), all but the newest ``keep``. Pending snapshots are always kept."""
    from churn_assets.lib.realized import list_snapshots

    snapshots = list_snapshots(storage)  # oldest cut-off first
    if not snapshots:
        return []
    newest = snapshots[-1].cutoff
    settled = [
        s
        for s in snapshots
        if horizon_days is None or s.cutoff <= newest - dt.timedelta(days=horizon_days)
    ]
    return [s.path for s in settled[: max(len(settled) - keep, 0)]]


def plan(
    storage: Storage,
    policy: RetentionPolicy,
    today: dt.date | None = None,
    *,
    horizon_days: int | None = None,
) -> dict[str, list[str]]:
    """What :func:`prune` would delete, by kind (relative paths), without deleting.
    ``horizon_days``: the data set's churn horizon, which decides which scoring snapshots
    realized performance still needs (unknown: only the newest ``score_snapshots`` stay)."""
    today = today or dt.datetime.now(dt.UTC).date()
    out: dict[str, list[str]] = defaultdict(list)
    versions = dep.list_versions(storage)
    keep = set(versions[-policy.versions :]) | protected_versions(storage)
    out["versions"] = [dep.version_dir(v) for v in versions if v not in keep]
    for kind in _dirs(storage, "models"):
        runs = _dirs(storage, f"models/{kind}")
        by_age = sorted(runs, key=lambda r: _mtime(storage, f"models/{kind}/{r}"))
        out["model_sets"] += [f"models/{kind}/{r}" for r in by_age[: -policy.model_sets]]
    reports = _dirs(storage, "monitoring/drift")
    out["drift_reports"] = [f"monitoring/drift/{r}" for r in reports[: -policy.drift_reports]]
    served = _dirs(storage, "monitoring/served_drift")  # served-traffic reports, same count
    out["drift_reports"] += [
        f"monitoring/served_drift/{r}" for r in served[: -policy.drift_reports]
    ]
    for table in _dirs(storage, "quarantine"):
        batches = _dirs(storage, f"quarantine/{table}")
        out["quarantine_batches"] += [
            f"quarantine/{table}/{b}" for b in batches[: -policy.quarantine_batches]
        ]
    oldest = today - dt.timedelta(days=policy.inference_log_days - 1)
    for day in _dirs(storage, "inference_log", "date=*"):
        try:
            date = dt.date.fromisoformat(day.removeprefix("date="))
        except ValueError:
            continue
        if date < oldest:
            out["inference_log_days"].append(f"inference_log/{day}")
    out["score_snapshots"] = settled_snapshots_beyond(storage, policy.score_snapshots, horizon_days)
    return dict(out)


def _mtime(storage: Storage, rel: str) -> float:
    files = storage.list_files(rel, "**")
    times = []
    for f in files:
        info = storage.fs.info(storage._path(f))
        stamp = info.get("mtime") or info.get("LastModified") or info.get("created")
        if isinstance(stamp, dt.datetime):
            stamp = stamp.timestamp()
        times.append(float(stamp or 0))
    return max(times, default=0.0)


def prune(
    storage: Storage,
    policy: RetentionPolicy,
    *,
    dry_run: bool = False,
    today: dt.date | None = None,
    horizon_days: int | None = None,
) -> dict[str, Any]:
    """Delete what :func:`plan` lists; returns the counts and the deleted paths by kind."""
    todo = plan(storage, policy, today, horizon_days=horizon_days)
    protected = protected_versions(storage)
    for kind, paths in todo.items():
        for rel in paths:
            if kind == "versions" and rel.rsplit("/", 1)[-1] in protected:
                raise RuntimeError(f"refusing to delete protected version {rel}")
            if not dry_run:
                storage.delete(rel, recursive=not rel.endswith(".parquet"))
    return {
        "dry_run": dry_run,
        "policy": asdict(policy),
        "deleted": {k: len(v) for k, v in todo.items()},
        "paths": todo,
        "protected_versions": sorted(protected),
    }


def prune_mlflow(
    tracking: Any, storage: Storage, policy: RetentionPolicy, *, dry_run: bool = False
) -> dict[str, Any]:
    """Delete MLflow model-set runs beyond the newest ``policy.model_sets`` per kind (parent
    and candidates), keeping every run a kept version or a registered model uses."""
    from churn_assets.lib.shared_tracking import foreign_experiment
    from churn_assets.lib.tracking import (
        DRIFT_REPORT_RUN,
        _client,
        retired_registrations,
        unregister,
    )

    client = _client(tracking)
    exp = client.get_experiment_by_name(tracking.experiment)
    if exp is None:
        return {"deleted_runs": 0, "kept_model_sets": 0}
    if foreign := foreign_experiment(
        tracking, exp.artifact_location, "No MLflow run or registration was deleted."
    ):
        # its runs are another platform's: counting them as this one's deleted theirs
        return {"deleted_runs": 0, "kept_model_sets": 0, "not_pruned": foreign}
    # registrations of versions removed above: never served again, and they would keep
    # their runs (and files) for ever
    retired = retired_registrations(
        tracking, tracking.dataset, dep.list_versions(storage), storage.url()
    )
    if retired and not dry_run:
        unregister(tracking, retired)
    used: set[str] = set()
    for version in dep.list_versions(storage):
        manifest = dep.read_manifest(storage, version)
        used |= {m.get("mlflow_run_id") for m in manifest.get("models", {}).values()}
    token = None
    while True:  # every registered version, page by page (a shared registry may be large)
        page = client.search_model_versions(page_token=token)
        used |= {mv.run_id for mv in page}
        token = page.token
        if not token:
            break
    parents = client.search_runs(
        [exp.experiment_id],
        filter_string="tags.model_set != ''",
        order_by=["attributes.start_time DESC"],
        max_results=5000,
    )
    parents = [r for r in parents if "mlflow.parentRunId" not in r.data.tags]
    seen: dict[str, int] = defaultdict(int)
    deleted = 0
    left: list[str] = []  # why a run's files could not be deleted
    for parent in parents:
        kind = parent.data.tags.get("model_set", "")
        seen[kind] += 1
        if seen[kind] <= policy.model_sets:
            continue
        children = client.search_runs(
            [exp.experiment_id],
            filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'",
            max_results=1000,
        )
        if parent.info.run_id in used or any(c.info.run_id in used for c in children):
            continue
        for run in [*children, parent]:
            if not dry_run and (refused := _purge_run(client, exp.experiment_id, run)):
                left.append(refused)
                continue
            deleted += 1
    reports = client.search_runs(
        [exp.experiment_id],
        filter_string=f"tags.mlflow.runName = '{DRIFT_REPORT_RUN}'",
        order_by=["attributes.start_time DESC"],
        max_results=5000,
    )
    old_reports = reports[policy.drift_reports :]
    reports_deleted = 0
    for run in old_reports:
        if not dry_run and (refused := _purge_run(client, exp.experiment_id, run)):
            left.append(refused)
            continue
        reports_deleted += 1
    kept = sum(min(n, policy.model_sets) for n in seen.values())
    out: dict[str, Any] = {
        "deleted_registrations": [f"{n} {v}" for n, v in retired],
        "deleted_runs": deleted,
        "kept_model_sets": kept,
        "deleted_drift_report_runs": reports_deleted,
    }
    if left:  # kept whole, to be pruned by a later run once the artifact store allows it
        out["runs_kept_files_not_deletable"] = len(left)
        out["artifact_store_error"] = left[0]
    return out


def _purge_run(client: Any, experiment_id: str, run: Any) -> str | None:
    """Delete an MLflow run with its files: the models logged from it (their artifacts and
    the logged-model records) and the run's own artifacts, then the run. When the artifact
    store refuses a deletion (no delete permission, unreachable), the run stays, to be
    pruned by a later retention run: what refused is returned, else None."""
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    run_id = run.info.run_id
    try:
        models = client.search_logged_models(
            [experiment_id], filter_string=f"source_run_id = '{run_id}'"
        )
        for model in models:
            get_artifact_repository(model.artifact_location).delete_artifacts()
            client.delete_logged_model(model.model_id)
        if run.info.artifact_uri:
            get_artifact_repository(run.info.artifact_uri).delete_artifacts()
    except Exception as e:  # noqa: BLE001 - the artifact store's own errors, named below
        return f"{type(e).__name__}: {str(e)[:300]}"
    client.delete_run(run_id)
    _hard_delete(client, run_id, [m.model_id for m in models])
    return None


def _hard_delete(client: Any, run_id: str, model_ids: list[str]) -> None:
    """Remove a deleted run's rows (params, metrics, tags) and its logged models' rows from
    a database store the platform reaches directly (the embedded SQLite ``mlflow.db``, or a
    ``postgresql://`` tracking URI), as ``mlflow gc`` does for them alone: otherwise each
    retraining round left about 230 KB in the database for ever. Through an ``mlflow
    server`` (an ``http`` URI) the runs stay marked deleted: the server's operator runs
    ``mlflow gc`` (docs/production.md)."""
    store = getattr(getattr(client, "_tracking_client", None), "store", None)
    if not hasattr(store, "_hard_delete_run"):
        return
    try:
        for model_id in model_ids:
            if hasattr(store, "_hard_delete_logged_model"):
                store._hard_delete_logged_model(model_id)
        store._hard_delete_run(run_id)
    except Exception as e:  # noqa: BLE001 - the run is deleted already; only its rows stay
        warnings.warn(
            f"MLflow run {run_id} is deleted but its rows stay in the tracking database "
            f"({type(e).__name__}: {str(e)[:200]}); `mlflow gc` removes them",
            stacklevel=2,
        )
