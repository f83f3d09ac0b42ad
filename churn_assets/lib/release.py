"""Releasing a model version: gate the challenger against the deployed champion on the
same holdout, and write a complete, verified version before moving the pointer."""

from __future__ import annotations

import datetime as dt
import io
from typing import Any

import numpy as np
import pandas as pd
import polars as pl

from churn_assets.lib import deployment as dep
from churn_assets.lib.storage import Storage

REFERENCE_ROWS = 20_000


def _metric_on(kind: str, metric: str, pipeline: Any, frame: pd.DataFrame) -> float:
    from churn_assets.lib.models.metrics import classification_metrics, regression_metrics

    if kind == "classification":
        proba = pipeline.predict_proba(frame)[:, 1]
        return float(classification_metrics(frame["churned"].to_numpy(), proba, 0.5)[metric])
    pred = pipeline.predict(frame)
    return float(regression_metrics(frame["total_sales"].to_numpy(), pred)[metric])


def score_deployed(
    storage: Storage, holdout: pd.DataFrame, metrics: dict[str, str]
) -> tuple[str | None, dict[str, float] | None, str | None]:
    """(deployed version, its primary metrics on ``holdout``, problem) — all None if none."""
    current = dep.read_current(storage)
    if current is None:
        return None, None, None
    version = current["version"]
    try:
        manifest = dep.read_manifest(storage, version)
        models = dep.load_models(storage, manifest)
        needed = set(manifest["features"]["numeric"]) | set(manifest["features"]["categorical"])
        missing = needed - set(holdout.columns)
        if missing:
            return version, None, f"deployed model needs missing features {sorted(missing)}"
        return (
            version,
            {
                metrics["classification"]: _metric_on(
                    "classification", metrics["classification"], models["classifier"], holdout
                ),
                metrics["regression"]: _metric_on(
                    "regression", metrics["regression"], models["regressor"], holdout
                ),
            },
            None,
        )
    except Exception as e:  # a broken deployment must not block a sound challenger
        return version, None, f"deployed version unusable: {e}"


def business_rules(train: pd.DataFrame, numeric: list[str]) -> dict[str, Any]:
    """A one-feature rule for the last model-free fallback: the numeric feature most
    correlated with churn, split at its median, with churn rate and mean value per side."""
    best, best_corr = None, 0.0
    y = train["churned"].astype(float)
    for col in numeric:
        x = pd.to_numeric(train[col], errors="coerce")
        if x.nunique(dropna=True) < 2:
            continue
        corr = float(np.nan_to_num(x.corr(y)))
        if abs(corr) > abs(best_corr):
            best, best_corr = col, corr
    if best is None:
        return {}
    x = pd.to_numeric(train[best], errors="coerce")
    threshold = float(x.median())
    high = x > threshold
    return {
        "feature": best,
        "threshold": threshold,
        "churn_probability_above": float(y[high].mean()) if high.any() else float(y.mean()),
        "churn_probability_at_or_below": float(y[~high].mean())
        if (~high).any()
        else float(y.mean()),
        "expected_total_sales_above": float(train.loc[high, "total_sales"].mean())
        if high.any()
        else float(train["total_sales"].mean()),
        "expected_total_sales_at_or_below": float(train.loc[~high, "total_sales"].mean())
        if (~high).any()
        else float(train["total_sales"].mean()),
        "correlation": best_corr,
    }


def release(
    storage: Storage,
    *,
    dataset: str,
    classification: dict[str, Any],
    regression: dict[str, Any],
    training_set: pl.DataFrame,
    tolerance: float,
    lineage: dict[str, Any],
    promote_ties: bool = False,
    reference_features: pl.DataFrame | None = None,
) -> dict[str, Any]:
    """Gate and, when the challenger wins, write a new version and move the pointer.

    The drift reference stored with a version is a sample of ``reference_features`` (the
    features of every customer as of the training run) with the version's predictions, so
    later drift reports measure how the population moved since deployment; without it, the
    training split is used.

    Returns ``promoted``, ``decision`` (a :class:`GateDecision` dict), ``version`` (the
    version deployed after this call, or None) and ``manifest`` when a version was written.
    """
    from churn_assets.lib.models.persistence import loads_pipeline

    splits = {
        s: training_set.filter(pl.col("split") == s).drop("split").to_pandas()
        for s in ("train", "holdout")
    }
    holdout = splits["holdout"]
    metrics = {
        "classification": classification["primary_metric"],
        "regression": regression["primary_metric"],
    }
    challenger = {
        metrics["classification"]: float(
            classification["champion_metrics"][metrics["classification"]]
        ),
        metrics["regression"]: float(regression["champion_metrics"][metrics["regression"]]),
    }
    deployed_version, deployed, problem = score_deployed(storage, holdout, metrics)
    decision = dep.decide(
        challenger, deployed, deployed_version, tolerance=tolerance, promote_ties=promote_ties
    )
    if problem and not decision.promote:
        decision = dep.GateDecision(True, problem, deployed_version, challenger, None)
    elif problem:
        decision = dep.GateDecision(True, problem, deployed_version, challenger, deployed)
    if not decision.promote:
        return {"promoted": False, "decision": decision.to_dict(), "version": deployed_version}

    artifacts: dict[str, bytes] = {}
    models: dict[str, dict[str, Any]] = {}
    pipelines = {}
    for role, result, which in (
        ("classifier", classification, "champion"),
        ("classifier_fallback", classification, "best_simple"),
        ("regressor", regression, "champion"),
        ("regressor_fallback", regression, "best_simple"),
    ):
        f = result["files"][which]
        data = storage.read_bytes(f["path"])
        if dep.sha256(data) != f["sha256"]:
            raise dep.DeploymentError(f"{f['path']} changed since training (sha256 mismatch)")
        name = f"{role}.skops"
        artifacts[name] = data
        pipelines[role] = loads_pipeline(data)
        models[role] = {
            "file": name,
            "candidate": f["name"],
            "sha256": f["sha256"],
            "threshold": (
                result["threshold"] if which == "champion" else result.get("best_simple_threshold")
            )
            if role.startswith("classifier")
            else None,
            "mlflow_run_id": result["mlflow"]["runs"][f["name"]]["run_id"],
            "model_uri": result["mlflow"]["runs"][f["name"]]["model_uri"],
        }
    for role in ("classifier", "regressor"):
        result = classification if role == "classifier" else regression
        models[role]["registered_model"] = result["mlflow"]["registered_model"]
        models[role]["registered_version"] = result["mlflow"]["registered_version"]
        models[role]["metrics"] = result["champion_metrics"]
        models[role]["cv"] = result["champion_cv"]

    train = splits["train"]
    spec = classification["feature_spec"]
    columns = spec["numeric"] + spec["categorical"]
    source = reference_features.to_pandas() if reference_features is not None else train
    reference = source.sample(min(REFERENCE_ROWS, len(source)), random_state=0)[
        ["customer_id", *columns]
    ].copy()
    reference["churn_probability"] = pipelines["classifier"].predict_proba(reference)[:, 1]
    reference["expected_total_sales"] = np.clip(pipelines["regressor"].predict(reference), 0, None)
    buf = io.BytesIO()
    pl.from_pandas(reference).write_parquet(buf)
    artifacts["reference.parquet"] = buf.getvalue()

    version = dep.new_version(storage)
    manifest = {
        "dataset": dataset,
        "created_at": dt.datetime.now(dt.UTC).isoformat(),
        "features": spec,
        "feature_schema": classification["feature_schema"],
        "models": models,
        "gate": decision.to_dict(),
        "base_rates": {
            "churn_probability": float(train["churned"].mean()),
            "expected_total_sales": float(train["total_sales"].mean()),
        },
        "business_rules": business_rules(train, spec["numeric"]),
        "reference": {"file": "reference.parquet", "rows": len(reference)},
        "training_data": lineage,
    }
    manifest = dep.write_version(storage, version, artifacts, manifest)
    dep.set_current(storage, version, reason=decision.reason)
    return {
        "promoted": True,
        "decision": decision.to_dict(),
        "version": version,
        "manifest": manifest,
    }
