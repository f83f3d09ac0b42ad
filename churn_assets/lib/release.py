"""Releasing a model version: judge each model role on its own, and write a complete,
verified version before moving the pointer.

Each role (``classifier``; ``regressor`` when the data set has a value label) is decided
separately, so a poor value model never blocks a better churn model:

1. Floors: a candidate below the floor is never deployed (churn: holdout ROC-AUC below
   ``min_roc_auc``; value: not beating the naive baseline on holdout R²). The role's
   challenger is the first candidate that passes, in the order champion, best simple
   model, naive baseline (value only; it passes by definition).
2. Gate: the challenger and the deployed model score the same holdout rows (assigned by a
   stable hash of ``customer_id``, so neither trained on them); a paired bootstrap gives
   the interval of the difference on the primary metric (F1: each model at its own stored
   threshold), and :func:`~churn_assets.lib.deployment.decide` promotes or keeps.
3. When any role is promoted, a new version is written: promoted roles bring their new
   model and fallback, kept roles are copied from the deployed version (when both versions
   have the same feature columns; otherwise the churn model's decision carries the value
   model with it). Nothing promoted: the deployed version stays, and the decision says why.
"""

from __future__ import annotations

import datetime as dt
import io
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import polars as pl

from churn_assets.lib import deployment as dep
from churn_assets.lib.storage import Storage

REFERENCE_ROWS = 20_000
ROLES = ("classifier", "regressor")
NAIVE = "naive_baseline"

#: ``register(role, model_uri, candidate, version, threshold) -> {registered_model,
#: registered_version}`` (``threshold``: the classifier's decision threshold, else None)
Register = Callable[[str, str, str, str, float | None], dict[str, str]]


@dataclass(frozen=True)
class GateSettings:
    """Floors and gate parameters (from the data set's ``models`` config)."""

    min_roc_auc: float = 0.70
    value_must_beat_naive: bool = True
    tolerance: float = 0.005
    min_margin: float = 0.0
    confidence: float = 0.9
    resamples: int = 500
    promote_ties: bool = False
    seed: int = 0

    @classmethod
    def from_models(cls, models: Any, seed: int = 0) -> GateSettings:
        """From a :class:`~churn_assets.lib.datasets.ModelsSpec`."""
        return cls(
            min_roc_auc=models.min_roc_auc,
            value_must_beat_naive=models.value_must_beat_naive,
            tolerance=models.gate_tolerance,
            min_margin=models.gate_min_margin,
            confidence=models.gate_confidence,
            resamples=models.gate_bootstrap,
            promote_ties=models.promote_ties,
            seed=seed,
        )


def passes_floor(role: str, entry: dict[str, Any], settings: GateSettings) -> tuple[bool, str]:
    """Whether a trained candidate may be served at all, and why (holdout metrics)."""
    metrics = entry.get("metrics") or {}
    if role == "classifier":
        auc = float(metrics.get("roc_auc", float("nan")))
        ok = auc >= settings.min_roc_auc
        sign = "≥" if ok else "<"
        why = f"{entry['name']} ROC-AUC {auc:.4f} {sign} floor {settings.min_roc_auc:.2f}"
        return ok, why + _holdout_interval(auc, entry.get("holdout"), settings)
    if entry["name"] == NAIVE:
        return True, "the naive baseline (the value floor itself)"
    gain = float(metrics.get("r2_gain_vs_naive", float("nan")))
    ok = gain > 0 or not settings.value_must_beat_naive
    return ok, f"{entry['name']} R² gain over naive {gain:+.4f}"


def _holdout_interval(auc: float, holdout: dict[str, int] | None, settings: GateSettings) -> str:
    """How sure the floor's verdict is: the ROC-AUC's interval on a holdout of that size,
    and a warning when the interval reaches across the floor (the verdict stays the point
    figure's; more customers would settle it)."""
    from churn_assets.lib.models.metrics import roc_auc_interval

    if not holdout or not holdout.get("rows"):
        return ""
    rows, churned = int(holdout["rows"]), int(holdout.get("churned", 0))
    low, high = roc_auc_interval(auc, churned, rows - churned, settings.confidence)
    if low != low:
        return f" ({rows:,} holdout customers, {churned:,} churned)"
    text = (
        f" ({settings.confidence:.0%} interval {low:.2f}-{high:.2f} on {rows:,} holdout "
        f"customers, {churned:,} churned"
    )
    if low < settings.min_roc_auc <= high:
        text += "; the interval reaches across the floor: too few customers to be sure"
    return text + ")"


def predict(role: str, pipeline: Any, frame: pd.DataFrame) -> np.ndarray:
    """Churn probability (classifier) or non-negative expected value (regressor)."""
    from churn_assets.lib.models._common import predict_in_chunks

    if role.startswith("classifier"):
        return predict_in_chunks(pipeline.predict_proba, frame)[:, 1].astype(float)
    return np.clip(predict_in_chunks(pipeline.predict, frame).astype(float), 0, None)


def _aligned(frame: pl.DataFrame, columns: list[str]) -> pd.DataFrame:
    from churn_assets.lib.feature_sets import align_to

    return align_to(frame, columns).to_pandas()


def _columns(spec: dict[str, Any]) -> list[str]:
    return [*spec["numeric"], *spec["categorical"]]


@dataclass
class _Deployed:
    version: str | None = None
    manifest: dict[str, Any] | None = None
    pipelines: dict[str, Any] | None = None
    problem: str | None = None

    @property
    def columns(self) -> list[str]:
        return _columns(self.manifest["features"]) if self.manifest else []


def _load_deployed(storage: Storage) -> _Deployed:
    current = dep.read_current(storage)
    if current is None:
        return _Deployed()
    version = current["version"]
    try:
        manifest = dep.read_manifest(storage, version)
        return _Deployed(version, manifest, dep.load_models(storage, manifest))
    except Exception as e:  # a broken deployment must not block a sound challenger
        return _Deployed(version, problem=f"deployed version {version} unusable: {e}")


def business_rules(train: pd.DataFrame, numeric: list[str]) -> dict[str, Any]:
    """A one-feature rule for the last model-free fallback: the numeric feature most
    correlated with churn, split at its median, with churn rate (and mean value, when the
    data set has a value label) per side."""
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
    rules: dict[str, Any] = {
        "feature": best,
        "threshold": threshold,
        "churn_probability_above": float(y[high].mean()) if high.any() else float(y.mean()),
        "churn_probability_at_or_below": float(y[~high].mean())
        if (~high).any()
        else float(y.mean()),
        "correlation": best_corr,
    }
    if "total_sales" in train.columns:
        sales = train["total_sales"].astype(float)
        rules["expected_total_sales_above"] = (
            float(sales[high].mean()) if high.any() else float(sales.mean())
        )
        rules["expected_total_sales_at_or_below"] = (
            float(sales[~high].mean()) if (~high).any() else float(sales.mean())
        )
    return rules


def _refuse_models_rolled_back_from(
    storage: Storage,
    chosen: dict[str, tuple[dict[str, Any], Any]],
    decisions: dict[str, dict[str, Any]],
) -> None:
    """Take out of ``chosen`` a challenger that is the very model (same sha256) of a version
    a rollback moved away from: deploying the same model sets again (after an unpin) served
    it again under a new version name."""
    current = dep.read_current(storage) or {}
    left = dep.rolled_back_from(current)
    if not chosen or not left:
        return
    served: dict[str, str] = {}  # sha256 -> version
    for version in sorted(left - {current.get("version")}):
        try:
            manifest = dep.read_manifest(storage, version)
        except Exception:  # removed by retention: nothing of it to compare
            continue
        for entry in manifest.get("models", {}).values():
            served.setdefault(entry.get("sha256", ""), version)
    if current.get("version"):  # the deployed version's own models: the gate judges them
        for entry in dep.read_manifest(storage, current["version"]).get("models", {}).values():
            served.pop(entry.get("sha256", ""), None)
    for role in list(chosen):
        version = served.get(chosen[role][0]["sha256"])
        if version is not None:
            del chosen[role]
            decisions[role]["promote"] = False
            decisions[role]["reason"] = (
                f"kept: the challenger ({decisions[role].get('candidate')}) is the model "
                f"{version} served, which a rollback moved away from; it is not deployed "
                "again (a retraining on new data may promote)"
            )


def _judge_role(
    role: str,
    result: dict[str, Any],
    storage: Storage,
    holdout: pl.DataFrame,
    deployed: _Deployed,
    settings: GateSettings,
) -> tuple[dict[str, Any], tuple[dict[str, Any], Any] | None]:
    """The decision for one role, and the (file entry, pipeline) to deploy if promoted."""
    from churn_assets.lib.gate import paired_bootstrap
    from churn_assets.lib.models.persistence import loads_pipeline

    metric = result["primary_metric"]
    label = "churned" if role == "classifier" else "total_sales"
    order = ["champion", "best_simple"] + (["naive"] if role == "regressor" else [])
    entries, seen = [], set()
    for which in order:
        f = result["files"].get(which)
        if f and f["name"] not in seen:
            seen.add(f["name"])
            entries.append(f)
    floors = {f["name"]: passes_floor(role, f, settings) for f in entries}
    refused = {name: why for name, (ok, why) in floors.items() if not ok}
    passing = [f for f in entries if floors[f["name"]][0]]
    base: dict[str, Any] = {"role": role, "metric": metric, "refused_by_floor": refused}
    old = deployed.pipelines.get(role) if deployed.pipelines else None
    if not passing:
        keep = "the deployed model stays" if old is not None else "nothing to deploy"
        why = "; ".join(refused.values())
        decision = {
            **base,
            "promote": False,
            "reason": f"no candidate passes the floor ({why}): {keep}",
            "candidate": None,
            "deployed_version": deployed.version,
        }
        return decision, None
    entry = passing[0]
    data = storage.read_bytes(entry["path"])
    if dep.sha256(data) != entry["sha256"]:
        raise dep.DeploymentError(f"{entry['path']} changed since training (sha256 mismatch)")
    pipeline = loads_pipeline(data)
    columns = _columns(result["feature_spec"])
    y = holdout[label].to_numpy()
    new = predict(role, pipeline, _aligned(holdout, columns))
    base.update(candidate=entry["name"], floor=floors[entry["name"]][1])
    if old is None:
        reason = deployed.problem or (
            "nothing deployed yet"
            if deployed.version is None
            else f"the deployed version {deployed.version} has no {role}"
        )
        decision = dep.GateDecision(True, reason, deployed.version, {}, None).to_dict()
        return {**base, **decision}, (entry, pipeline)
    threshold_old = deployed.manifest["models"][role].get("threshold")
    cmp = paired_bootstrap(
        y,
        new,
        predict(role, old, _aligned(holdout, deployed.columns)),
        metric,
        challenger_threshold=entry.get("threshold"),
        deployed_threshold=threshold_old,
        resamples=settings.resamples,
        confidence=settings.confidence,
        seed=settings.seed,
    )
    decision = dep.decide(
        {metric: cmp.challenger},
        {metric: cmp.deployed},
        deployed.version,
        tolerance=settings.tolerance,
        promote_ties=settings.promote_ties,
        min_margin=settings.min_margin,
        interval={metric: (cmp.low, cmp.high)},
    ).to_dict()
    out = {**base, **decision, "comparison": cmp.to_dict()}
    return out, ((entry, pipeline) if decision["promote"] else None)


def _summary(decisions: dict[str, dict[str, Any]], chosen: dict[str, Any]) -> str:
    parts = []
    for role, d in decisions.items():
        verdict = "promoted" if role in chosen else "kept" if d.get("deployed_version") else "none"
        who = f" {d['candidate']}" if d.get("candidate") and role in chosen else ""
        parts.append(f"{role}{who} {verdict}: {d['reason']}")
    return "; ".join(parts)


def release(
    storage: Storage,
    *,
    dataset: str,
    classification: dict[str, Any],
    regression: dict[str, Any] | None,
    training_set: pl.DataFrame,
    lineage: dict[str, Any],
    settings: GateSettings | None = None,
    reference_features: pl.DataFrame | None = None,
    feature_definition: dict[str, Any] | None = None,
    register: Register | None = None,
) -> dict[str, Any]:
    """Judge each role, and when any is promoted write a new version and move the pointer.

    ``regression`` may be None or ``{"applicable": False, ...}`` (no value label): the
    version then has no ``regressor`` roles. The drift reference stored with a version is a
    sample of ``reference_features`` (every customer as of the training run) with the
    version's predictions; without it, the training split is used. ``register`` is called
    for each promoted role (MLflow registry) before the manifest is written.

    Returns ``promoted`` (any role), ``decision`` (``promote``, ``reason``, ``roles`` with
    each role's decision, ``challenger`` / ``deployed`` primary metrics), ``version`` (the
    version deployed after this call, or None) and ``manifest`` when a version was written.
    """
    settings = settings or GateSettings()
    holdout = training_set.filter(pl.col("split") == "holdout").drop("split")
    train = training_set.filter(pl.col("split") == "train").drop("split").to_pandas()
    results = {"classifier": classification}
    if regression is not None and regression.get("applicable", True):
        results["regressor"] = regression
    seen = dep.read_current(storage)  # the pointer this run judges against
    deployed = _load_deployed(storage)
    pinned = dep.pinned_version(storage)
    if pinned:
        reason = (
            f"version {pinned} is pinned (a rollback): automatic promotion is off until "
            "`churn unpin` (in the UI: materialize deployed_model_version with config "
            "unpin: true)"
        )
        roles = {
            role: {
                "role": role,
                "promote": False,
                "reason": reason,
                "candidate": None,
                "deployed_version": deployed.version,
            }
            for role in results
        }
        summary = {
            "promote": False,
            "reason": reason,
            "deployed_version": deployed.version,
            "challenger": {},
            "deployed": None,
            "roles": roles,
            "pinned": pinned,
        }
        return {"promoted": False, "decision": summary, "version": deployed.version}

    decisions: dict[str, dict[str, Any]] = {}
    chosen: dict[str, tuple[dict[str, Any], Any]] = {}
    for role, result in results.items():
        decisions[role], pick = _judge_role(role, result, storage, holdout, deployed, settings)
        if pick is not None:
            chosen[role] = pick

    _refuse_models_rolled_back_from(storage, chosen, decisions)
    new_columns = _columns(classification["feature_spec"])
    same_columns = deployed.manifest is not None and set(deployed.columns) == set(new_columns)
    if deployed.pipelines and not same_columns and "regressor" in results:
        # a kept model cannot be mixed with a new one trained on other columns
        if "classifier" in chosen and "regressor" not in chosen:
            d = decisions["regressor"]
            entry = next(
                (
                    regression["files"][w]
                    for w in ("champion", "best_simple", "naive")
                    if w in regression["files"]
                    and passes_floor("regressor", regression["files"][w], settings)[0]
                ),
                None,
            )
            if entry is not None:
                from churn_assets.lib.models.persistence import loads_pipeline

                chosen["regressor"] = (entry, loads_pipeline(storage.read_bytes(entry["path"])))
                d["promote"] = True
                d["candidate"] = entry["name"]
                d["reason"] += (
                    "; replaced all the same: the new churn model's feature columns differ "
                    "from the deployed value model's"
                )
        elif "classifier" not in chosen and "regressor" in chosen:
            del chosen["regressor"]
            decisions["regressor"]["promote"] = False
            decisions["regressor"]["reason"] += (
                "; kept with the deployed churn model, whose feature columns differ"
            )

    metric_of = {role: r["primary_metric"] for role, r in results.items()}
    challenger = {
        metric_of[r]: d["challenger"][metric_of[r]]
        for r, d in decisions.items()
        if d.get("challenger")
    }
    deployed_metrics = {
        metric_of[r]: d["deployed"][metric_of[r]] for r, d in decisions.items() if d.get("deployed")
    }
    summary = {
        "promote": bool(chosen),
        "reason": _summary(decisions, chosen),
        "deployed_version": deployed.version,
        "challenger": challenger,
        "deployed": deployed_metrics or None,
        "roles": decisions,
    }
    can_serve_churn = "classifier" in chosen or (
        deployed.pipelines is not None and "classifier" in deployed.pipelines
    )
    if not chosen or not can_serve_churn:
        if chosen and not can_serve_churn:  # a value model alone is not a version
            summary["reason"] = (
                "nothing deployed: a version needs a churn model and none passes the floor; "
                + summary["reason"].replace(" promoted: ", " would be promoted: ")
            )
            summary["promote"] = False
            for role in chosen:
                decisions[role]["promote"] = False
        return {"promoted": False, "decision": summary, "version": deployed.version}

    version = dep.new_version(storage)
    artifacts: dict[str, bytes] = {}
    models: dict[str, dict[str, Any]] = {}
    pipelines: dict[str, Any] = {}
    for role, result in results.items():
        fallback = f"{role}_fallback"
        if role in chosen:
            entry, pipeline = chosen[role]
            fb_entry = result["files"]["best_simple"]
            for r, e in ((role, entry), (fallback, fb_entry)):
                data = storage.read_bytes(e["path"])
                if dep.sha256(data) != e["sha256"]:
                    raise dep.DeploymentError(f"{e['path']} changed since training")
                artifacts[f"{r}.skops"] = data
                run = result["mlflow"]["runs"].get(e["name"], {})
                models[r] = {
                    "file": f"{r}.skops",
                    "candidate": e["name"],
                    "sha256": e["sha256"],
                    "threshold": e.get("threshold") if role == "classifier" else None,
                    "mlflow_run_id": run.get("run_id"),
                    "model_uri": run.get("model_uri"),
                    "metrics": e.get("metrics") or {},
                    **({"holdout": e["holdout"]} if e.get("holdout") else {}),
                    "from_version": version,
                }
            models[role]["cv"] = (
                result["champion_cv"] if entry["name"] == result["champion"] else {}
            )
            if register is not None and models[role]["model_uri"]:
                models[role].update(
                    register(
                        role,
                        models[role]["model_uri"],
                        entry["name"],
                        version,
                        models[role]["threshold"],
                    )
                )
            pipelines[role] = pipeline
        elif deployed.pipelines and role in deployed.pipelines:
            for r in (role, fallback):
                old = deployed.manifest["models"].get(r)
                if old is None:
                    continue
                artifacts[old["file"]] = dep.load_pipeline_bytes(
                    storage, deployed.manifest, old["file"]
                )
                models[r] = {**old, "from_version": old.get("from_version", deployed.version)}
            pipelines[role] = deployed.pipelines[role]

    new_features = "classifier" in chosen
    spec = classification["feature_spec"] if new_features else deployed.manifest["features"]
    columns = _columns(spec)
    schema = (
        classification["feature_schema"]
        if new_features
        else deployed.manifest.get("feature_schema", {})
    )
    definition = (
        feature_definition if new_features else deployed.manifest.get("feature_definition")
    ) or {"columns": columns}

    source = reference_features if reference_features is not None else pl.from_pandas(train)
    reference = _aligned(source, columns)
    reference = reference.sample(min(REFERENCE_ROWS, len(reference)), random_state=0)
    reference["churn_probability"] = predict("classifier", pipelines["classifier"], reference)
    if "regressor" in pipelines:
        reference["expected_total_sales"] = predict("regressor", pipelines["regressor"], reference)
    buf = io.BytesIO()
    pl.from_pandas(reference).write_parquet(buf)
    artifacts["reference.parquet"] = buf.getvalue()

    # ONNX graph of every model, verified against its pipeline (see onnx_export)
    from churn_assets.lib.onnx_export import export_version

    onnx_artifacts, onnx_entries = export_version(
        artifacts, models, pipelines, spec, reference, schema
    )
    artifacts.update(onnx_artifacts)
    for role, entry in onnx_entries.items():
        models[role]["onnx"] = entry

    base_rates = {"churn_probability": float(train["churned"].mean())}
    if "regressor" in pipelines and "total_sales" in train.columns:
        base_rates["expected_total_sales"] = float(train["total_sales"].mean())
    manifest = {
        "dataset": dataset,
        "created_at": dt.datetime.now(dt.UTC).isoformat(),
        "features": {"numeric": list(spec["numeric"]), "categorical": list(spec["categorical"])},
        "feature_schema": schema,
        "feature_definition": definition,
        "models": models,
        "has_value_model": "regressor" in pipelines,
        "gate": summary,
        "base_rates": base_rates,
        "business_rules": business_rules(train, list(spec["numeric"])),
        "reference": {"file": "reference.parquet", "rows": len(reference)},
        "training_data": lineage,
    }
    manifest = dep.write_version(storage, version, artifacts, manifest)
    try:
        dep.set_current(storage, version, reason=summary["reason"], expected=seen)
    except dep.PointerMoved as moved:  # an operator's rollback or pin wins over this run
        _not_deployed(summary, version, seen, moved.pointer)
        now = moved.pointer["version"] if moved.pointer else None
        return {"promoted": False, "decision": summary, "version": now, "manifest": manifest}
    return {"promoted": True, "decision": summary, "version": version, "manifest": manifest}


def _not_deployed(
    summary: dict[str, Any],
    version: str,
    seen: dict[str, Any] | None,
    now: dict[str, Any] | None,
) -> None:
    """Rewrite ``summary`` for a version written but not deployed: the pointer moved while
    its models were judged against the one it named then."""
    before = seen["version"] if seen else "nothing deployed"
    if now is None:
        change = "the deployment was removed"
    else:
        change = f"now {now['version']} ({now.get('reason', '')}"
        change += f"; pinned {now['pinned']})" if now.get("pinned") else ")"
    said = (
        f"{version} written but not deployed: the deployed version changed while this run "
        f"judged its models against {before} ({change}), and that change stays. "
        f"`churn rollback --to {version} --no-pin` deploys it; the next retraining judges "
        "against what is deployed now"
    )
    summary["promote"] = False
    summary["not_deployed"] = version
    summary["reason"] = f"{said}; the judgement was: {summary['reason']}"
    for decision in summary["roles"].values():
        if decision.get("promote"):
            decision["promote"] = False
            decision["reason"] = f"not deployed ({version}: the pointer moved): " + str(
                decision.get("reason", "")
            )
