"""Realized model performance: what the scores of a past scoring run were worth once the
customers' behaviour over the label horizon is known.

Every batch scoring run keeps a snapshot of its scores under
``scores/<version>/<cut-off>.parquet`` (customer id, churn probability, label at the
version's threshold, expected total sales, version, cut-off, threshold, horizon, when it was
scored). Once the raw transactions cover the snapshot's cut-off plus the data set's
``horizon_days``, the snapshot is joined with what the customers then did, with the label
definitions of the training data (:func:`~churn_assets.lib.features.transaction_labels`:
churned = no purchase in ``[cut-off, cut-off + horizon)``, total sales = net spend in it,
floored at 0), and scored with the metrics of the model sets
(:mod:`churn_assets.lib.models.metrics`), so realized figures and the deployment-time
holdout figures in the version's manifest are the same quantities.

Framework-free (no Dagster): the asset in ``churn_assets/monitoring/realized.py`` calls
:func:`evaluate_snapshots` and turns its report into metadata and a check verdict.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl

from churn_assets.lib import deployment as dep
from churn_assets.lib.storage import Storage

SNAPSHOT_ROOT = "scores"
#: Score columns a snapshot keeps (from :func:`~churn_assets.lib.scoring.score_frame`).
SCORE_COLUMNS = (
    "customer_id",
    "churn_probability",
    "churn_label",
    "expected_total_sales",
    "model_version",
)
#: Fewer churned or retained customers than this: ranking metrics are not judged.
MIN_PER_CLASS = 10
DECILES = 10
#: Realized and deployment-time metrics compared side by side (classification, then value).
RANK_AND_LABEL_METRICS = ("roc_auc", "pr_auc", "brier", "log_loss", "f1", "precision", "recall")
VALUE_METRICS = ("mae", "rmse", "r2")
DEFAULT_MARGIN = 0.05


# --------------------------------------------------------------------------- snapshots


@dataclass(frozen=True, order=True)
class SnapshotRef:
    """Where one scoring run's snapshot is: its cut-off, model version and path."""

    cutoff: dt.date
    version: str
    path: str

    def evaluable_on(self, horizon_days: int) -> dt.date:
        """The first scoring cut-off (day after the last transaction) at which the whole
        horizon after this snapshot's cut-off is in the data."""
        return self.cutoff + dt.timedelta(days=horizon_days)


def snapshot_path(version: str, cutoff: dt.date) -> str:
    """``scores/<version>/<cut-off>.parquet`` (relative to the data set's storage)."""
    return f"{SNAPSHOT_ROOT}/{version}/{cutoff.isoformat()}.parquet"


def write_snapshot(
    storage: Storage,
    scores: pl.DataFrame,
    *,
    version: str,
    cutoff: dt.date,
    threshold: float,
    horizon_days: int,
    scored_at: dt.datetime | None = None,
) -> str:
    """Keep a scoring run's ``scores`` as the snapshot of ``version`` at ``cutoff``; returns
    its URL. Scoring the same cut-off again with the same version replaces it (same
    features, same models: the same scores)."""
    scored_at = scored_at or dt.datetime.now(dt.UTC).replace(tzinfo=None)
    frame = scores.select(SCORE_COLUMNS).with_columns(
        pl.lit(cutoff, dtype=pl.Date).alias("cutoff"),
        pl.lit(float(threshold)).alias("threshold"),
        pl.lit(int(horizon_days), dtype=pl.Int32).alias("horizon_days"),
        pl.lit(scored_at, dtype=pl.Datetime("us")).alias("scored_at"),
    )
    return storage.write_parquet(snapshot_path(version, cutoff), frame)


def list_snapshots(storage: Storage) -> list[SnapshotRef]:
    """Every snapshot in storage, oldest cut-off first (then by version)."""
    out = []
    for rel in storage.list_files(SNAPSHOT_ROOT, "*/*.parquet"):
        version, name = rel.split("/")[-2:]
        try:
            cutoff = dt.date.fromisoformat(name.removesuffix(".parquet"))
        except ValueError:
            continue
        out.append(SnapshotRef(cutoff, version, rel))
    return sorted(out)


def stored_scoring_cutoff(storage: Storage) -> dt.date | None:
    """The scoring cut-off of the stored raw transactions: the day after the last usable
    one, where ``current_features`` places "now"; None without transactions."""
    frame = storage.read_asset("raw_transactions", ["timestamp", "_quarantined"])
    if frame is None or "timestamp" not in frame.columns:
        return None
    if "_quarantined" in frame.columns:
        frame = frame.filter(~pl.col("_quarantined"))
    last = frame["timestamp"].max()
    return None if last is None else last.date() + dt.timedelta(days=1)


# --------------------------------------------------------------------------- outcomes


def evaluable_until(transactions: pl.DataFrame | pl.LazyFrame, horizon_days: int) -> dt.date | None:
    """The latest cut-off whose whole horizon the transactions cover (the training label
    cut-off rule, :func:`~churn_assets.lib.features.default_cutoff`); None without data.
    A lazy scan reads the timestamp column alone."""
    from churn_assets.lib.features import cutoff_before

    last = transactions.lazy().select(pl.col("timestamp").max()).collect().item()
    return None if last is None else cutoff_before(last, horizon_days)


def horizon_labels(
    transactions: pl.DataFrame | pl.LazyFrame,
    cutoff: dt.date,
    horizon_days: int,
    exit_events: tuple[str, ...] = (),
) -> pl.DataFrame:
    """``customer_id``, ``_bought``, ``total_sales``, ``_exit`` of the customers with a
    transaction in ``[cutoff, cutoff + horizon)``:
    :func:`~churn_assets.lib.features.transaction_labels`."""
    from churn_assets.lib.features import FeatureParams, transaction_labels

    params = FeatureParams(
        cutoff=cutoff, horizon_days=horizon_days, with_labels=True, exit_events=exit_events
    )
    tx = transactions.lazy().filter(pl.col("customer_id").is_not_null())
    return transaction_labels(tx, params).collect()


def observed_outcomes(
    transactions: pl.DataFrame | pl.LazyFrame,
    customer_ids: pl.Series,
    cutoff: dt.date,
    horizon_days: int,
    labels: pl.DataFrame | None = None,
) -> pl.DataFrame:
    """``customer_id``, ``churned``, ``total_sales`` of ``customer_ids`` over the horizon
    after ``cutoff``: the training labels' definition
    (:func:`~churn_assets.lib.features.transaction_labels`), and like the training table a
    customer without any transaction in the horizon churned with total sales 0. ``labels``:
    :func:`horizon_labels` of the same cut-off, when already computed."""
    if labels is None:
        labels = horizon_labels(transactions, cutoff, horizon_days)
    ids = pl.DataFrame({"customer_id": customer_ids})
    if labels["customer_id"].dtype != ids["customer_id"].dtype:
        labels = labels.with_columns(pl.col("customer_id").cast(ids["customer_id"].dtype))
    return (
        ids.join(labels, on="customer_id", how="left")
        .with_columns(
            (~pl.col("_bought").fill_null(False) | pl.col("_exit").fill_null(False))
            .cast(pl.Int8)
            .alias("churned"),
            pl.col("total_sales").fill_null(0.0),
        )
        .drop("_bought", "_exit")
    )


# --------------------------------------------------------------------------- metrics


def _finite(value: Any) -> float | None:
    """``value`` as a float, or None when missing or not finite."""
    if value is None:
        return None
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def decile_calibration(y: np.ndarray, proba: np.ndarray, bins: int = DECILES) -> list[dict]:
    """Expected (mean predicted) vs observed churn rate per decile of churn probability,
    lowest first: ``decile`` (1..bins), ``n``, ``min_probability``, ``max_probability``,
    ``expected_rate``, ``observed_rate``. Equal-count bins of the sorted probabilities."""
    y = np.asarray(y, dtype=float)
    p = np.asarray(proba, dtype=float)
    order = np.argsort(p, kind="stable")
    out = []
    for i, idx in enumerate(np.array_split(order, min(bins, len(p))), start=1):
        if idx.size == 0:
            continue
        out.append(
            {
                "decile": i,
                "n": int(idx.size),
                "min_probability": float(p[idx].min()),
                "max_probability": float(p[idx].max()),
                "expected_rate": float(p[idx].mean()),
                "observed_rate": float(y[idx].mean()),
            }
        )
    return out


def calibration_error(deciles: list[dict]) -> float | None:
    """Row-weighted mean |expected - observed| churn rate over the deciles (ECE)."""
    n = sum(d["n"] for d in deciles)
    if not n:
        return None
    return sum(d["n"] * abs(d["expected_rate"] - d["observed_rate"]) for d in deciles) / n


def realized_metrics(joined: pl.DataFrame, threshold: float) -> dict[str, Any]:
    """Realized figures of one snapshot joined with its outcomes (``churn_probability``,
    ``expected_total_sales``, ``churned``, ``total_sales``): n, positives, churn metrics at
    the version's threshold, deciles, calibration error, and value metrics of
    ``expected_total_sales`` when the snapshot has them."""
    from churn_assets.lib.models.metrics import classification_metrics, regression_metrics

    y = joined["churned"].to_numpy().astype(int)
    p = joined["churn_probability"].to_numpy().astype(float)
    positives = int(y.sum())
    churn = classification_metrics(y, p, threshold)
    deciles = decile_calibration(y, p)
    out: dict[str, Any] = {
        "n": int(len(y)),
        "positives": positives,
        "observed_churn_rate": float(y.mean()) if len(y) else None,
        "expected_churn_rate": float(p.mean()) if len(p) else None,
        **{k: _finite(churn.get(k)) for k in RANK_AND_LABEL_METRICS},
        "calibration_error": calibration_error(deciles),
        "deciles": deciles,
    }
    value = joined["expected_total_sales"]
    if value.null_count() < len(value):
        known = joined.filter(pl.col("expected_total_sales").is_not_null())
        reg = regression_metrics(
            known["total_sales"].to_numpy(), known["expected_total_sales"].to_numpy()
        )
        out.update({f"value_{k}": _finite(reg[k]) for k in VALUE_METRICS})
        out["expected_total_sales_sum"] = float(known["expected_total_sales"].sum())
        out["realized_total_sales_sum"] = float(known["total_sales"].sum())
    return out


def deployment_metrics(manifest: dict[str, Any] | None) -> dict[str, Any]:
    """The deployment-time (holdout) figures of a version from its manifest: churn metrics
    of the classifier and value metrics of the regressor; {} when the manifest is gone."""
    if not manifest:
        return {}
    models = manifest.get("models") or {}
    clf = (models.get("classifier") or {}).get("metrics") or {}
    reg = (models.get("regressor") or {}).get("metrics") or {}
    out: dict[str, Any] = {k: _finite(clf.get(k)) for k in RANK_AND_LABEL_METRICS}
    out["candidate"] = (models.get("classifier") or {}).get("candidate")
    out["threshold"] = _finite((models.get("classifier") or {}).get("threshold"))
    base = (manifest.get("base_rates") or {}).get("churn_probability")
    out["training_churn_rate"] = _finite(base)
    if reg:
        out.update({f"value_{k}": _finite(reg.get(k)) for k in VALUE_METRICS})
        out["value_candidate"] = (models.get("regressor") or {}).get("candidate")
    return {k: v for k, v in out.items() if v is not None}


# --------------------------------------------------------------------------- verdict


@dataclass(frozen=True)
class Verdict:
    """Whether realized ROC-AUC holds: ``passed``, the reason, and what was compared."""

    passed: bool
    reason: str
    judged: bool
    realized_roc_auc: float | None = None
    deployed_roc_auc: float | None = None
    floor: float | None = None
    margin: float | None = None


def judge(
    realized: dict[str, Any], deployed: dict[str, Any], *, floor: float, margin: float
) -> Verdict:
    """Fails when the realized ROC-AUC is below ``floor`` or more than ``margin`` below the
    deployment-time ROC-AUC. Too few churned or retained customers (under
    :data:`MIN_PER_CLASS`) is not judged (passes, and says so)."""
    auc = _finite(realized.get("roc_auc"))
    base = _finite(deployed.get("roc_auc"))
    n, pos = int(realized.get("n", 0)), int(realized.get("positives", 0))
    common = {"deployed_roc_auc": base, "floor": floor, "margin": margin}
    if auc is None or min(pos, n - pos) < MIN_PER_CLASS:
        return Verdict(
            True,
            f"not judged: {pos} churned and {n - pos} retained customers (need "
            f"{MIN_PER_CLASS} of each for a ROC-AUC)",
            False,
            auc,
            **common,
        )
    problems = []
    if auc < floor:
        problems.append(f"realized ROC-AUC {auc:.4f} is below the floor {floor:.2f}")
    if base is not None and auc < base - margin:
        problems.append(
            f"realized ROC-AUC {auc:.4f} is {base - auc:.4f} below the deployment-time "
            f"{base:.4f} (margin {margin:.2f})"
        )
    if problems:
        return Verdict(False, "; ".join(problems), True, auc, **common)
    against = f", deployment-time {base:.4f} (margin {margin:.2f})" if base is not None else ""
    return Verdict(
        True, f"realized ROC-AUC {auc:.4f} holds (floor {floor:.2f}{against})", True, auc, **common
    )


# --------------------------------------------------------------------------- the report


def _manifest(storage: Storage, version: str, cache: dict[str, Any]) -> dict[str, Any] | None:
    if version not in cache:
        try:
            cache[version] = dep.read_manifest(storage, version)
        except dep.DeploymentError:
            cache[version] = None
    return cache[version]


def evaluate_snapshot(
    storage: Storage,
    ref: SnapshotRef,
    transactions: pl.DataFrame | pl.LazyFrame,
    horizon_days: int,
    manifest: dict[str, Any] | None = None,
    labels: pl.DataFrame | None = None,
) -> dict[str, Any]:
    """Realized and deployment-time figures of one snapshot whose horizon has passed
    (``labels``: :func:`horizon_labels` of its cut-off, when already computed)."""
    snap = storage.read_parquet(ref.path)
    outcomes = observed_outcomes(
        transactions, snap["customer_id"], ref.cutoff, horizon_days, labels
    )
    joined = snap.join(outcomes, on="customer_id", how="left")
    threshold = float(snap["threshold"][0]) if "threshold" in snap.columns else 0.5
    return {
        "version": ref.version,
        "cutoff": ref.cutoff.isoformat(),
        "horizon_end": ref.evaluable_on(horizon_days).isoformat(),
        "threshold": threshold,
        "realized": realized_metrics(joined, threshold),
        "deployment": deployment_metrics(manifest),
        "snapshot": storage.url(ref.path),
    }


def evaluate_snapshots(
    storage: Storage,
    transactions: pl.DataFrame | pl.LazyFrame,
    horizon_days: int,
    *,
    floor: float,
    margin: float = DEFAULT_MARGIN,
    exit_events: tuple[str, ...] = (),
) -> dict[str, Any]:
    """Every snapshot whose horizon the transactions cover, evaluated (churned as in
    training: no purchase in the horizon, or one of ``exit_events``); the others listed as
    pending. ``status``: ``ok`` (at least one evaluated), ``waiting`` (snapshots, none
    evaluable yet) or ``no_snapshots``. ``latest`` is the most recent evaluable snapshot
    (latest cut-off, then latest version), ``by_version`` the latest one of each version,
    and ``verdict`` judges ``latest`` (see :func:`judge`). ``retraining_requested`` is true
    when the verdict fails and the judged version is still the deployed one."""
    refs = list_snapshots(storage)
    until = evaluable_until(transactions, horizon_days)
    last_seen = None if until is None else until + dt.timedelta(days=horizon_days - 1)
    current = dep.read_current(storage)
    deployed_version = current["version"] if current else None
    base = {
        "horizon_days": horizon_days,
        "observed_until": last_seen.isoformat() if last_seen else None,
        "evaluable_until": until.isoformat() if until else None,
        "deployed_version": deployed_version,
        "floor": floor,
        "margin": margin,
    }
    ready = [r for r in refs if until is not None and r.cutoff <= until]
    pending = [
        {
            "version": r.version,
            "cutoff": r.cutoff.isoformat(),
            "evaluable_on": r.evaluable_on(horizon_days).isoformat(),
        }
        for r in refs
        if r not in ready
    ]
    if not refs:
        return {
            **base,
            "status": "no_snapshots",
            "message": "no scoring snapshot yet: churn_scores keeps one per scoring run",
            "snapshots": [],
            "pending": [],
            "retraining_requested": False,
        }
    if not ready:
        first = min(p["evaluable_on"] for p in pending)
        return {
            **base,
            "status": "waiting",
            "message": f"{len(pending)} snapshot(s), none evaluable yet: the horizon of "
            f"{horizon_days} days after the earliest cut-off passes when the data reaches "
            f"{first} (observed until {base['observed_until']})",
            "snapshots": [],
            "pending": pending,
            "retraining_requested": False,
        }
    manifests: dict[str, Any] = {}
    labels: dict[dt.date, pl.DataFrame] = {}  # one label computation per cut-off
    evaluated = []
    for r in ready:
        if r.cutoff not in labels:
            labels[r.cutoff] = horizon_labels(transactions, r.cutoff, horizon_days, exit_events)
        manifest = _manifest(storage, r.version, manifests)
        evaluated.append(
            evaluate_snapshot(storage, r, transactions, horizon_days, manifest, labels[r.cutoff])
        )
    by_version: dict[str, dict[str, Any]] = {}
    for e in evaluated:  # oldest first: the latest cut-off of a version wins
        by_version[e["version"]] = e
    latest = max(evaluated, key=lambda e: (e["cutoff"], e["version"]))
    verdict = judge(latest["realized"], latest["deployment"], floor=floor, margin=margin)
    still_deployed = latest["version"] == deployed_version
    reason = verdict.reason
    if not verdict.passed and not still_deployed:
        reason += (
            f" (version {latest['version']}; {deployed_version} is deployed since: "
            "no retraining requested)"
        )
    return {
        **base,
        "status": "ok",
        "message": f"{len(evaluated)} snapshot(s) evaluated, {len(pending)} pending; latest: "
        f"{latest['version']} at {latest['cutoff']}: {reason}",
        "snapshots": evaluated,
        "pending": pending,
        "by_version": by_version,
        "latest": latest,
        "verdict": {
            "passed": verdict.passed,
            "judged": verdict.judged,
            "reason": reason,
            "realized_roc_auc": verdict.realized_roc_auc,
            "deployed_roc_auc": verdict.deployed_roc_auc,
            "floor": floor,
            "margin": margin,
            "version": latest["version"],
            "cutoff": latest["cutoff"],
        },
        "retraining_requested": (not verdict.passed) and still_deployed,
    }


def summary_rows(report: dict[str, Any]) -> pl.DataFrame:
    """One row per evaluated snapshot: version, cut-off, n, positives, realized and
    deployment-time figures side by side (what the metadata table shows)."""
    rows = []
    for e in report.get("snapshots", []):
        r, d = e["realized"], e["deployment"]
        row: dict[str, Any] = {
            "version": e["version"],
            "cutoff": e["cutoff"],
            "n": r["n"],
            "positives": r["positives"],
        }
        for k in ("roc_auc", "pr_auc", "brier"):
            row[k] = r.get(k)
            row[f"deployed_{k}"] = d.get(k)
        row["observed_rate"] = r.get("observed_churn_rate")
        row["expected_rate"] = r.get("expected_churn_rate")
        row["calibration_error"] = r.get("calibration_error")
        for k in ("mae", "r2"):
            row[f"value_{k}"] = r.get(f"value_{k}")
            row[f"deployed_value_{k}"] = d.get(f"value_{k}")
        rows.append(row)
    return pl.DataFrame(rows, infer_schema_length=None) if rows else pl.DataFrame()


def deciles_frame(evaluation: dict[str, Any]) -> pl.DataFrame:
    """The decile table of one evaluated snapshot."""
    return pl.DataFrame(evaluation["realized"]["deciles"])


# ------------------------------------------------------------- simulating time passing


def land_window(
    source_root: str,
    landing_root: str,
    *,
    start: dt.date | None = None,
    end: dt.date | None = None,
    batch_name: str = "batch-0000",
    storage_options: dict | None = None,
) -> dict[str, int]:
    """Copy the part of a generated synthetic history (``churn_assets.lib.generator``
    layout: ``customers/*.parquet``, ``transactions/*.parquet``) that happened in
    ``[start, end)`` into a landing zone as one batch: the transactions with a timestamp in
    the window and the customers who signed up in it (every customer lands once: the first
    window also takes those who signed up before ``start`` or have no signup date).

    Landing ``[None, T)`` first and ``[T, None)`` later simulates time passing: the
    platform trains and scores at ``T`` without any later data, and the outcomes arrive
    afterwards. Returns the rows landed."""
    import fsspec

    src_fs, src = fsspec.core.url_to_fs(source_root)
    dst_fs, dst = fsspec.core.url_to_fs(landing_root, **(storage_options or {}))
    dst = dst.rstrip("/")

    def read(sub: str) -> pl.DataFrame:
        files = sorted(src_fs.glob(f"{src.rstrip('/')}/{sub}/*.parquet"))
        frames = []
        for f in files:
            with src_fs.open(f, "rb") as fh:
                frames.append(pl.read_parquet(fh))
        return pl.concat(frames, how="diagonal_relaxed") if frames else pl.DataFrame()

    customers = read("customers")
    transactions = read("transactions")
    ts = pl.col("timestamp")
    tx_cond = pl.lit(True)
    if start is not None:
        tx_cond = tx_cond & (ts >= dt.datetime.combine(start, dt.time()))
    if end is not None:
        tx_cond = tx_cond & (ts < dt.datetime.combine(end, dt.time()))
    tx = transactions.filter(tx_cond)
    signup = pl.col("signup_date")
    cust_cond = pl.lit(True)
    if start is not None:
        cust_cond = cust_cond & signup.is_not_null() & (signup >= start)
    if end is not None:
        cust_cond = cust_cond & (signup.is_null() | (signup < end))
    cust = customers.filter(cust_cond)
    for sub, frame in (("customers", cust), ("transactions", tx)):
        dst_fs.makedirs(f"{dst}/{sub}", exist_ok=True)
        with dst_fs.open(f"{dst}/{sub}/{batch_name}.parquet", "wb") as fh:
            frame.write_parquet(fh, compression="zstd")
    return {"customers": cust.height, "transactions": tx.height}


def land_history_holding_back(
    stage_root: str,
    landing_root: str,
    *,
    customers: int,
    days: int,
    seed: int,
    hold_back_days: int,
    stage_options: dict | None = None,
    storage_options: dict | None = None,
) -> tuple[Any, dt.date, dict[str, int]]:
    """Generate a synthetic history under ``stage_root`` and land it without its last
    ``hold_back_days`` (the first step of a simulated horizon; :func:`land_window` with
    ``start=cutoff`` lands the rest later). Returns the generator's summary, the cut-off
    and the rows landed."""
    from churn_assets.lib.generator import generate

    summary = generate(
        stage_root, customers=customers, days=days, seed=seed, storage_options=stage_options
    )
    cutoff = summary.end - dt.timedelta(days=hold_back_days)
    landed = land_window(stage_root, landing_root, end=cutoff, storage_options=storage_options)
    return summary, cutoff, landed


# ------------------------------------------------- simulating time on a data set's files

#: Where a simulation keeps its copy of a file-based data set, under the data set's storage.
SIMULATION_DIR = "horizon-simulation"


@dataclass(frozen=True)
class SourceSplit:
    """A file-based data set cut in two at ``cutoff`` (see :func:`split_sources`): the copy
    the platform reads (``landing_url``: what happened before ``cutoff``), the rest waiting
    under ``held_back_url``, and the config that reads the copy."""

    cutoff: dt.date
    training_cutoff: dt.date
    history: tuple[dt.date, dt.date]
    landing_url: str
    held_back_url: str
    config: dict[str, Any]
    landed_first: dict[str, int]
    held_back: dict[str, int]


def simulation_cutoffs(
    last_day: dt.date, horizon_days: int, configured: dt.date | None
) -> tuple[dt.date, dt.date]:
    """The scoring cut-off and the training cut-off of a simulated horizon on data whose last
    transaction is on ``last_day``.

    Scoring cut-off: the latest one whose whole horizon the data covers (``last_day + 1 -
    horizon``, :func:`~churn_assets.lib.features.default_cutoff` of the full data). Later, the
    outcomes would be cut short (churn overstated); earlier, the model would train on less
    history for nothing. Training cut-off: the configured one when its label horizon ends by
    the scoring cut-off, else one horizon before the scoring cut-off (the configured cut-off
    is usually picked for the full data, and its labels would then reach into the very window
    the scores are measured on). Either way the model's labels end before the scores' horizon
    starts, and it never sees a transaction from that horizon."""
    cutoff = last_day + dt.timedelta(days=1) - dt.timedelta(days=horizon_days)
    latest_training = cutoff - dt.timedelta(days=horizon_days)
    training = configured if configured is not None and configured <= latest_training else None
    return cutoff, training or latest_training


def _source_frames(
    spec: Any, landing_url: str, storage_options: dict[str, Any]
) -> list[tuple[str, pl.DataFrame, bool]]:
    """Every file of a source as (name, frame, is_parquet): CSV and spreadsheets as strings,
    every column kept; compressed files unpacked."""
    import fsspec

    from churn_assets.lib.ingest import list_source_files, resolve_source
    from churn_assets.lib.source_files import is_blank, open_table

    out = []
    for url in list_source_files(resolve_source(spec, landing_url), storage_options):
        with fsspec.open(url, "rb", **storage_options) as f:
            data = f.read()
        name = url.rsplit("/", 1)[-1]
        if is_blank(data):
            continue
        frame, kind = open_table(data, name, spec)
        out.append((name, frame, kind == "parquet"))
    return out


def _as_time(
    frame: pl.DataFrame, column: str, kind: str, fmt: str | None, timezone: str | None
) -> pl.Series:
    """``column`` of a raw frame as UTC datetimes, parsed as ingestion parses it (offsets,
    ``timezone``; bad values null), so that the split falls where the cut-offs do."""
    from churn_assets.lib.ingest import parse_times

    return parse_times(frame[column], kind, fmt, timezone).cast(pl.Datetime("us"))


def _write_part(
    frame: pl.DataFrame, url: str, is_parquet: bool, separator: str, options: dict
) -> None:
    import fsspec

    with fsspec.open(url, "wb", **options) as f:
        if is_parquet:
            frame.write_parquet(f, compression="zstd")
        else:
            frame.write_csv(f, separator=separator)


def split_sources(
    cfg: Any,
    landing_url: str,
    stage_url: str,
    *,
    storage_options: dict[str, Any] | None = None,
    stage_options: dict[str, Any] | None = None,
) -> SourceSplit:
    """Copy a file-based transaction data set (``cfg``, its relative paths under
    ``landing_url``) into ``stage_url`` cut at the scoring cut-off of
    :func:`simulation_cutoffs`: ``<stage>/landing/<table>/`` gets the transactions before it
    (and rows without a readable timestamp: ingestion quarantines them as it would) and the
    customers who signed up before it (or without a signup date); the rest waits under
    ``<stage>/held-back/<table>/`` until :func:`land_held_back`. The source files are only
    read. ``config`` is ``cfg`` reading the copy, with the training cut-off: a data set
    config as a plain dict (CSV copies are UTF-8, columns and separator as in the source)."""
    import fsspec

    if cfg.transactions is None or cfg.labels.source != "transactions":
        raise ValueError(f"data set '{cfg.name}' has no transaction labels to wait for")
    storage_options = storage_options or {}
    stage_options = stage_options or {}
    stage = stage_url.rstrip("/")
    fs, root = fsspec.core.url_to_fs(stage, **stage_options)
    if fs.exists(root):
        fs.rm(root, recursive=True)
    t = cfg.transactions
    tx_files = _source_frames(t, landing_url, storage_options)
    times = [
        _as_time(frame, t.timestamp, "datetime", t.timestamp_format, t.timezone)
        for _, frame, _ in tx_files
    ]
    stamps = [s.drop_nulls() for s in times]
    known = [s for s in stamps if len(s)]
    if not known:
        raise ValueError(f"data set '{cfg.name}': no readable transaction timestamps")
    first_day = min(s.min() for s in known).date()
    last_day = max(s.max() for s in known).date()
    horizon = cfg.labels.horizon_days
    cutoff, training = simulation_cutoffs(last_day, horizon, cfg.labels.cutoff)
    if training <= first_day:
        raise ValueError(
            f"data set '{cfg.name}': {first_day} to {last_day} is too short to train and then "
            f"wait {horizon} days (two horizons of data after the first transaction needed)"
        )
    bound = dt.datetime.combine(cutoff, dt.time())
    landed = {"transactions": 0, "customers": 0}
    later = {"transactions": 0, "customers": 0}

    def split(table: str, files: list, when: list[pl.Series], separator: str) -> None:
        for i, ((name, frame, is_parquet), ts) in enumerate(zip(files, when, strict=True)):
            after = ts.is_not_null() & (ts >= bound)
            suffix = "parquet" if is_parquet else "csv"
            part = f"{i:04d}-{name.rsplit('.', 1)[0]}.{suffix}"
            for where, prefix, rows, counts in (
                ("landing", "batch-0000-", frame.filter(~after), landed),
                ("held-back", "", frame.filter(after), later),
            ):
                fs.makedirs(f"{root}/{where}/{table}", exist_ok=True)
                if rows.height:
                    url = f"{stage}/{where}/{table}/{prefix}{part}"
                    _write_part(rows, url, is_parquet, separator, stage_options)
                    counts[table] += rows.height

    split("transactions", tx_files, times, t.separator)
    config = cfg.model_dump(mode="json")
    # the copies are plain .csv (UTF-8, the source's separator) or .parquet files
    copied = {"encoding": "utf-8", "format": "auto", "sheet": None, "skip_rows": 0}
    config["transactions"].update(path=f"{stage}/landing/transactions", **copied)
    if cfg.customers is not None:
        c = cfg.customers
        cust_files = _source_frames(c, landing_url, storage_options)
        if c.signup_date is not None:
            sd = c.signup_date
            kind = "date" if sd.type == "date" else "datetime"
            signups = [
                _as_time(frame, sd.raw, kind, sd.format, c.timezone) for _, frame, _ in cust_files
            ]
        else:
            signups = [
                pl.Series([None] * frame.height, dtype=pl.Datetime("us"))
                for _, frame, _ in cust_files
            ]
        split("customers", cust_files, signups, c.separator)
        config["customers"].update(path=f"{stage}/landing/customers", **copied)
    config["labels"]["cutoff"] = training.isoformat()
    config["description"] = (
        f"{cfg.description} [horizon simulation: data before {cutoff} first, trained at "
        f"{training}]".strip()
    )
    return SourceSplit(
        cutoff=cutoff,
        training_cutoff=training,
        history=(first_day, last_day + dt.timedelta(days=1)),
        landing_url=f"{stage}/landing",
        held_back_url=f"{stage}/held-back",
        config=config,
        landed_first=landed,
        held_back=later,
    )


def land_held_back(split: SourceSplit, stage_options: dict[str, Any] | None = None) -> list[str]:
    """Move the held-back files of a :func:`split_sources` copy into the copy the platform
    reads (as ``batch-0001-…``): the customers' outcomes arrive. Returns the files landed."""
    import fsspec

    fs, held = fsspec.core.url_to_fs(split.held_back_url, **(stage_options or {}))
    _, landing = fsspec.core.url_to_fs(split.landing_url, **(stage_options or {}))
    moved = []
    for path in sorted(p for p in fs.find(held) if not fs.isdir(p)):
        table, name = path.rstrip("/").split("/")[-2:]
        fs.mv(path, f"{landing}/{table}/batch-0001-{name}")
        moved.append(f"{table}/batch-0001-{name}")
    return moved
