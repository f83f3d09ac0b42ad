"""Drift of what the sidecar actually served: the inference log's recent window against the
deployed version's reference sample (no Dagster here).

Landing batches can look stable while the traffic the sidecar answers drifts (another client,
another region, a broken upstream join). This reads the inference log the sidecar writes
(``<data set>/inference_log/date=YYYY-MM-DD/*.parquet``, see ``churn_serving.inference_log``)
over the last ``window_days`` days, newest files first and at most ``max_rows`` records, and
measures it with the same math and thresholds as the batch drift report
(:func:`churn_assets.lib.drift.compute_drift`):

* features: every record in the window, whichever version answered it (the features are what
  the clients sent, or what the lookup found);
* predictions (``churn_probability``, ``expected_total_sales`` when the version has a value
  model): only the records the deployed version answered, since another version's scores are
  not comparable with this version's reference.

Fewer than ``min_rows`` records in the window is "no served traffic": a status, not a failure.
The summary goes to ``monitoring/drift/served-latest.json`` next to the batch report's
``latest.json``, where the sidecar's ``churn_served_drift_*`` gauges read it.
"""

from __future__ import annotations

import datetime as dt
import io
from dataclasses import dataclass
from typing import Any

import polars as pl

from churn_assets.lib import deployment as dep
from churn_assets.lib.datasets import DatasetConfig
from churn_assets.lib.storage import Storage
from churn_serving.inference_log import META_COLUMNS
from churn_serving.inference_log import PREFIX as INFERENCE_LOG_PREFIX
from churn_serving.schema import MISSING_CATEGORY

#: The sidecar's inference log folder (relative to the data set's storage).
LOG_PREFIX = INFERENCE_LOG_PREFIX
#: The latest served-traffic summary, next to the batch report's ``latest.json``.
SERVED_SUMMARY = "monitoring/drift/served-latest.json"
#: Table and HTML report of each run: ``<REPORTS>/<stamp>-<run>/`` (retention keeps the newest).
REPORTS = "monitoring/served_drift"
PREDICTIONS = ("churn_probability", "expected_total_sales")
#: Inference-log columns that are not features (a clashing feature gets a ``feature_`` prefix).
LOG_META_COLUMNS = frozenset(META_COLUMNS)
NO_TRAFFIC = "no_served_traffic"
WINDOW_ENV = "CHURN_SERVED_DRIFT_WINDOW_DAYS"
MIN_ROWS_ENV = "CHURN_SERVED_DRIFT_MIN_ROWS"
MAX_ROWS_ENV = "CHURN_SERVED_DRIFT_MAX_ROWS"


@dataclass(frozen=True)
class ServedWindow:
    """Which served records are compared.

    Attributes:
        days: The window: records logged in the last ``days`` days (UTC).
        min_rows: Fewer records than this in the window is "no served traffic".
        max_rows: At most this many records, the newest ones (bounds time and memory).
    """

    days: int = 7
    min_rows: int = 200
    max_rows: int = 500_000

    def __post_init__(self) -> None:
        if self.days < 1 or self.min_rows < 1 or self.max_rows < self.min_rows:
            raise ValueError(f"need days >= 1 and 1 <= min_rows <= max_rows, got {self}")

    @classmethod
    def from_env(cls, **overrides: int | None) -> ServedWindow:
        """``CHURN_SERVED_DRIFT_WINDOW_DAYS`` / ``_MIN_ROWS`` / ``_MAX_ROWS``; explicit values
        (not None) win."""
        from churn_assets.lib.settings import SettingError, env_number

        defaults = cls()
        values = {
            "days": env_number(WINDOW_ENV, defaults.days, int, minimum=1),
            "min_rows": env_number(MIN_ROWS_ENV, defaults.min_rows, int, minimum=1),
            "max_rows": env_number(MAX_ROWS_ENV, defaults.max_rows, int, minimum=1),
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        if values["max_rows"] < values["min_rows"]:
            raise SettingError(
                f"{MAX_ROWS_ENV}={values['max_rows']} is below {MIN_ROWS_ENV}="
                f"{values['min_rows']}: the window would never hold enough served traffic"
            )
        return cls(**{k: int(v) for k, v in values.items()})


def log_files(storage: Storage, start: dt.datetime, end: dt.datetime) -> list[str]:
    """Inference-log files of the UTC days from ``start`` to ``end``, newest first."""
    files: list[str] = []
    day = start.date()
    while day <= end.date():
        files += storage.list_files(f"{LOG_PREFIX}/date={day.isoformat()}", "*.parquet")
        day += dt.timedelta(days=1)
    return sorted(files, reverse=True)  # date=…/HHMMSS-uuid: newest day and time first


def read_window(
    storage: Storage, start: dt.datetime, end: dt.datetime, max_rows: int
) -> pl.DataFrame:
    """The records logged in ``[start, end]``: the newest ``max_rows`` (files of different
    feature layouts are aligned; an empty frame when there are none)."""
    frames: list[pl.DataFrame] = []
    rows = 0
    for rel in log_files(storage, start, end):
        frame = pl.read_parquet(io.BytesIO(storage.read_bytes(rel))).filter(
            pl.col("logged_at").is_between(start, end)
        )
        if frame.height:
            frames.append(frame)
            rows += frame.height
        if rows >= max_rows:
            break
    if not frames:
        return pl.DataFrame()
    return pl.concat(frames, how="diagonal_relaxed").head(max_rows)


def feature_column(name: str) -> str:
    """The inference-log column of feature ``name``."""
    return f"feature_{name}" if name in LOG_META_COLUMNS else name


def served_sample(
    frame: pl.DataFrame,
    numeric: list[str],
    categorical: list[str],
    predictions: list[str],
    logged: bool = True,
) -> pl.DataFrame:
    """One column per feature (missing ones all null) and the prediction columns, numeric
    ones as Float64 and categoricals as String, so the log and the reference compare alike.
    ``logged``: ``frame`` is the inference log (a clashing feature has a ``feature_`` prefix
    there, and a missing category is logged as the sidecar's ``"__missing__"``: null again
    here, as in the reference), else the reference sample."""

    def column(name: str, is_feature: bool, dtype: type[pl.DataType]) -> pl.Expr:
        col = feature_column(name) if logged and is_feature else name
        expr = pl.col(col) if col in frame.columns else pl.lit(None)
        expr = expr.cast(dtype)
        if logged and dtype == pl.String:
            expr = pl.when(expr != MISSING_CATEGORY).then(expr)
        return expr.alias(name)

    return frame.select(
        *(column(n, True, pl.Float64) for n in numeric),
        *(column(n, True, pl.String) for n in categorical),
        *(column(n, False, pl.Float64) for n in predictions),
    )


def served_drift(
    reference: pl.DataFrame,
    log: pl.DataFrame,
    numeric: list[str],
    categorical: list[str],
    predictions: list[str],
    version: str,
    thresholds: Any = None,
    min_rows: int = 1,
) -> dict[str, Any]:
    """Drift of the served records in ``log`` against ``reference``.

    Returns ``{"status": "no_served_traffic", ...}`` when the log holds fewer than
    ``min_rows`` records, else ``{"status": "ok", "result": DriftResult, ...}`` where
    prediction columns count only the records ``version`` answered.
    """
    from churn_assets.lib.drift import DriftThresholds, compute_drift

    thresholds = thresholds or DriftThresholds()
    rows = log.height
    out: dict[str, Any] = {"current_rows": rows, "model_version": version}
    if rows < min_rows:
        return {
            **out,
            "status": NO_TRAFFIC,
            "drifted": False,
            "message": f"no served traffic: {rows} record(s) in the window, "
            f"at least {min_rows} needed",
        }
    versions = (
        log.group_by("model_version").len().sort("len", descending=True)
        if "model_version" in log.columns
        else pl.DataFrame({"model_version": [None], "len": [rows]})
    )
    levels = (
        log.group_by("churn_level").len().sort("len", descending=True)
        if "churn_level" in log.columns
        else pl.DataFrame({"churn_level": [], "len": []})
    )
    current = served_sample(log, numeric, categorical, [])
    result = compute_drift(reference, current, numeric, categorical, [], thresholds)
    own = log.filter(pl.col("model_version") == version) if "model_version" in log.columns else log
    if predictions and own.height:
        current_preds = served_sample(own, [], [], predictions)
        with_preds = compute_drift(
            reference.select(predictions),
            current_preds,
            [],
            [],
            predictions,
            thresholds,
        )
        result = _merge(result, with_preds)
    return {
        **out,
        "status": "ok",
        "result": result,
        "drifted": result.drifted,
        "prediction_rows": own.height if predictions else 0,
        "model_versions": dict(zip(*versions.select("model_version", "len"), strict=True)),
        "churn_levels": dict(zip(*levels.select("churn_level", "len"), strict=True)),
    }


def _merge(features: Any, predictions: Any) -> Any:
    """One :class:`DriftResult` of a features-only and a predictions-only result (the
    predictions were measured on fewer records: the deployed version's own)."""
    from dataclasses import replace

    prediction_drift = predictions.prediction_drift
    return replace(
        features,
        table=pl.concat([features.table, predictions.table], how="vertical_relaxed"),
        drifted=features.drifted or prediction_drift,
        drifted_columns=[*features.drifted_columns, *predictions.drifted_columns],
        prediction_drift=prediction_drift,
        distributions={**features.distributions, **predictions.distributions},
    )


def summary(out: dict[str, Any], window: ServedWindow, run_id: str, now: dt.datetime) -> dict:
    """The JSON the sidecar's served-drift gauges read (``status`` says whether there was
    traffic; the drift fields are meaningful only when it is ``ok``)."""
    base = {
        "status": out["status"],
        "drifted": bool(out.get("drifted", False)),
        "model_version": out.get("model_version"),
        "current_rows": int(out.get("current_rows", 0)),
        "window_days": window.days,
        "created_at": now.isoformat(),
        "run_id": run_id,
    }
    result = out.get("result")
    if result is not None:
        base.update(
            share_drifted=float(result.share_drifted),
            drifted_columns=list(result.drifted_columns),
            prediction_drift=bool(result.prediction_drift),
            report_url=out.get("report_url"),
        )
    else:
        base.update(share_drifted=0.0, drifted_columns=[], prediction_drift=False)
    return base


def build_served_drift_report(
    storage: Storage,
    cfg: DatasetConfig,
    window: ServedWindow,
    run_id: str,
    now: dt.datetime | None = None,
) -> dict[str, Any]:
    """Drift of the served window against the deployed reference; stores the table and the
    HTML report under ``monitoring/served_drift/<stamp>-<run>/`` and the summary at
    :data:`SERVED_SUMMARY`. Nothing deployed, or too little traffic, is a status."""
    from churn_assets.lib.drift import DriftThresholds
    from churn_assets.lib.drift_report import render_html
    from churn_assets.lib.monitoring import presentation

    now = now or dt.datetime.now(dt.UTC)
    start = now - dt.timedelta(days=window.days)
    current = dep.read_current(storage)
    if current is None:
        return {
            "status": "no_deployment",
            "drifted": False,
            "message": "nothing is deployed yet: no reference to compare with",
        }
    version = current["version"]
    manifest = dep.read_manifest(storage, version)
    ref_file = manifest.get("reference", {}).get("file", "reference.parquet")
    reference = pl.read_parquet(io.BytesIO(dep.load_pipeline_bytes(storage, manifest, ref_file)))
    feats = manifest["features"]
    numeric, categorical = list(feats["numeric"]), list(feats["categorical"])
    predictions = [p for p in PREDICTIONS if p in reference.columns]
    if "regressor" not in manifest.get("models", {}):
        predictions = [p for p in predictions if p != "expected_total_sales"]
    reference = served_sample(reference, numeric, categorical, predictions, logged=False)
    log = read_window(storage, start, now, window.max_rows)
    out = served_drift(
        reference,
        log,
        numeric,
        categorical,
        predictions,
        version,
        DriftThresholds(**cfg.drift.model_dump()),
        window.min_rows,
    )
    out.update(window_start=start.isoformat(), window_end=now.isoformat())
    if out["status"] == "ok":
        result = out["result"]
        stamp = now.strftime("%Y%m%dT%H%M%SZ")
        base = f"{REPORTS}/{stamp}-{run_id[:8]}"
        out["table_url"] = storage.write_parquet(f"{base}/drift.parquet", result.table)
        html = render_html(
            result,
            reference,
            served_sample(log, numeric, categorical, []),
            title=f"Served traffic drift — {cfg.name}",
            meta={
                "model version": version,
                "window": f"{start:%Y-%m-%d %H:%M} → {now:%Y-%m-%d %H:%M} UTC",
                "served records": log.height,
                "records of this version (predictions)": out["prediction_rows"],
                "run": run_id,
            },
        )
        out["report_url"] = storage.write_bytes(f"{base}/report.html", html.encode())
        out.update(presentation(result))
    storage.write_json(SERVED_SUMMARY, summary(out, window, run_id, now))
    return out
