import datetime as dt
from collections.abc import Callable
from typing import Any

import dagster as dg

from churn_assets import scope
from churn_assets.automation import SCORES_CONDITION
from churn_assets.freshness import RETRAINING_FRESHNESS
from churn_assets.io_managers import lazy_input
from churn_assets.metadata import table_metadata
from churn_assets.resources import ChurnPlatform
from churn_assets.retries import STORAGE_RETRY, fail_fast_unless_transient


class DeploymentConfig(dg.Config):
    """Launchpad options: ``rollback_to`` a version name (or ``previous``) rolls back and
    pins instead of judging the new models; ``unpin`` turns automatic promotion back on
    first."""

    rollback_to: str = ""
    unpin: bool = False


def refuse_unknown_rollback(context: dg.AssetExecutionContext, platform: ChurnPlatform) -> None:
    """Fail at once when this run's ``deployed_model_version`` config asks for a rollback to
    a version that does not exist, or sets both ``unpin`` and ``rollback_to``: a run that
    also trains (the retraining job's launchpad) would otherwise train for minutes before
    the deployment step refused it."""
    op = scope.key("deployed_model_version").to_python_identifier()
    ops = (context.run.run_config or {}).get("ops") or {}
    config = (ops.get(op) or {}).get("config") or {}
    to = str(config.get("rollback_to") or "").strip()
    if to and config.get("unpin"):
        raise ValueError(
            "deployed_model_version's config sets both unpin and rollback_to: a rollback pins "
            "the version it goes to, so the unpin would be undone at once; set one of them "
            "(nothing was trained)"
        )
    if not to or to == "previous":
        return
    from churn_assets.lib.deployment import list_versions, not_stored

    storage = platform.storage()
    if to not in list_versions(storage):
        raise ValueError(
            f"deployed_model_version's config rolls back to {to!r}: "
            f"{not_stored(storage, to)}; nothing was trained"
        )


def _rollback(context: dg.AssetExecutionContext, platform: ChurnPlatform, to: str) -> dict:
    from churn_assets.jobs import launch_time
    from churn_assets.lib.rollback import aliases_problem, rollback_deployment

    pointer = rollback_deployment(
        platform.storage(),
        platform.settings(),
        platform.dataset_config().name,
        None if to == "previous" else to,
        launched_at=launch_time(context),
    )
    reason = f"{pointer['reason']} (pinned: automatic promotion is off until unpinned)"
    context.log.info(f"deployed version is now {pointer['version']}: {reason}")
    problem = aliases_problem(pointer)
    if problem:
        context.log.warning(problem)
        reason += f"; {problem}"
    return {
        "promoted": False,
        "rolled_back": True,
        "version": pointer["version"],
        "decision": {
            "promote": False,
            "reason": reason,
            "roles": {},
            "challenger": {},
            "deployed": None,
            "pinned": pointer["pinned"],
        },
    }


@dg.asset(
    retry_policy=STORAGE_RETRY,
    group_name="deployment",
    kinds={"s3", "mlflow"},
    pool=scope.pool("retraining"),
    freshness_policy=RETRAINING_FRESHNESS,
    ins={"raw_transactions": lazy_input()},
)
def deployed_model_version(
    context: dg.AssetExecutionContext,
    config: DeploymentConfig,
    platform: ChurnPlatform,
    classification_models: dict[str, Any],
    regression_models: dict[str, Any],
    training_set,
    current_features,
    raw_transactions,
) -> dg.Output[dict[str, Any]]:
    """The deployed model version. The churn and value models are judged separately: a
    candidate below its floor is never deployed (churn ROC-AUC floor; value must beat the
    naive baseline), and each role's challenger is compared with the deployed model on
    the same holdout rows with a paired bootstrap. A promoted role writes a new version
    ``vYYYYMMDD-HHMMSS/`` (models, fallbacks, reference sample, feature definition,
    manifest with sha256 of every artifact) and then moves the ``current.json`` pointer,
    last and atomically; the promoted model is registered in MLflow under the data set's
    name with alias ``challenger``, and ``champion`` once the pointer has moved. Otherwise
    the deployed version is kept, and the metadata says why, role by role. Data sets
    without a value label deploy the churn model alone. Config ``rollback_to`` (a version,
    or ``previous``) rolls back instead and pins that version: automatic promotion stays
    off until ``unpin``."""
    from churn_assets.lib.feature_sets import feature_definition, usable
    from churn_assets.lib.release import GateSettings, release
    from churn_assets.lib.tracking import TrackingConfig, register_promoted

    with fail_fast_unless_transient():
        if config.unpin and config.rollback_to:
            raise ValueError(
                "config sets both unpin and rollback_to: a rollback pins the version it goes "
                "to, so the unpin would be undone at once; set one of them"
            )
        cfg = platform.dataset_config()
        storage = platform.storage()
        if config.unpin:
            from churn_assets.lib.deployment import unpin

            unpin(storage)
            context.log.info("unpinned: automatic promotion is on again")
        if config.rollback_to:
            value = _rollback(context, platform, config.rollback_to)
            return dg.Output(
                value,
                metadata={
                    "version": dg.MetadataValue.text(value["version"]),
                    "promoted": dg.MetadataValue.bool(False),
                    "decision": dg.MetadataValue.text(value["decision"]["reason"]),
                    "pinned": dg.MetadataValue.text(str(value["decision"]["pinned"])),
                },
            )
        tracking = TrackingConfig.from_settings(platform.settings(), cfg.name)
        _unregister(context, tracking, lambda: _left_by_stopped_runs(storage, tracking, cfg.name))
        registered: list[tuple[str, str, str]] = []  # (model, its version, deployment version)

        def register(
            role: str, model_uri: str, candidate: str, version: str, threshold: float | None
        ) -> dict:
            out = register_promoted(
                tracking,
                dataset=cfg.name,
                role=role,
                model_uri=model_uri,
                candidate=candidate,
                version=version,
                threshold=threshold,
                storage_url=storage.url(),
            )
            registered.append((out["registered_model"], out["registered_version"], version))
            return out

        transactions = usable(raw_transactions)[0] if cfg.transactions is not None else None
        spec = classification_models["feature_spec"]
        try:
            out = release(
                storage,
                dataset=cfg.name,
                classification=classification_models,
                regression=regression_models,
                training_set=training_set,
                settings=GateSettings.from_models(cfg.models, seed=cfg.seed),
                reference_features=current_features,
                feature_definition=feature_definition(
                    cfg,
                    transactions,
                    [*spec["numeric"], *spec["categorical"]],
                    customers=_snapshot_customers(cfg, storage, spec["numeric"]),
                ),
                register=register,
                lineage={
                    "dagster_run_id": context.run.run_id,
                    "training_set_rows": training_set.height,
                    "features": storage.url("assets/customer_features.parquet"),
                },
            )
        except BaseException:  # terminated or failed after registering: no orphan left
            if registered:
                _unregister(context, tracking, lambda: _not_written(storage, registered))
            raise
    decision = out["decision"]
    aliases = None
    if out["promoted"]:
        context.log.info(f"promoted {out['version']}: {decision['reason']}")
        # champion moves only now that serving follows the version (see register_promoted)
        from churn_assets.lib.rollback import aliases_problem, sync_champion_aliases

        aliases = sync_champion_aliases(storage, platform.settings(), cfg.name, out["version"])
        problem = aliases_problem({"version": out["version"], "mlflow_aliases": aliases})
        if problem:
            context.log.warning(problem)
    else:
        context.log.info(f"kept {out['version']}: {decision['reason']}")
        from churn_assets.lib.rollback import repair_champion_aliases

        repaired = repair_champion_aliases(storage, platform.settings(), cfg.name)
        if repaired:
            context.log.info(repaired)
    value = {k: v for k, v in out.items() if k != "manifest"}
    registered = {  # the MLflow model versions this run registered (promoted roles only)
        role: {k: m[k] for k in ("registered_model", "registered_version")}
        for role, m in ((out.get("manifest") or {}).get("models") or {}).items()
        if m.get("registered_version") and m.get("from_version") == out["version"]
    }
    if registered:
        value["registered"] = registered
    roles = {
        role: {
            "promoted": bool(d.get("promote")),
            "candidate": d.get("candidate"),
            "reason": d.get("reason"),
            **({"interval": d["interval"]} if d.get("interval") else {}),
        }
        for role, d in decision["roles"].items()
    }
    metadata: dict[str, Any] = {
        "version": dg.MetadataValue.text(str(out["version"])),
        "promoted": dg.MetadataValue.bool(out["promoted"]),
        "decision": dg.MetadataValue.text(decision["reason"]),
        "roles": dg.MetadataValue.json(roles),
        "challenger": dg.MetadataValue.json(decision["challenger"]),
        "deployed_before": dg.MetadataValue.json(decision["deployed"] or {}),
        "pointer": dg.MetadataValue.path(storage.url("deployments/current.json")),
        "pinned": dg.MetadataValue.text(str(decision.get("pinned"))),
        **({"registered": dg.MetadataValue.json(registered)} if registered else {}),
        **({"mlflow_aliases": dg.MetadataValue.text(aliases)} if aliases else {}),
    }
    for role, d in decision["roles"].items():
        comparison = d.get("comparison")
        if comparison:
            metadata[f"{role}_diff_{comparison['metric']}"] = dg.MetadataValue.float(
                float(comparison["diff"])
            )
    return dg.Output(value, metadata=metadata)


def _left_by_stopped_runs(storage: Any, tracking: Any, dataset: str) -> list[tuple[str, str]]:
    from churn_assets.lib.deployment import recorded_versions
    from churn_assets.lib.tracking import unrecorded_registrations

    return unrecorded_registrations(tracking, dataset, recorded_versions(storage), storage.url())


def _not_written(storage: Any, registered: list[tuple[str, str, str]]) -> list[tuple[str, str]]:
    from churn_assets.lib.deployment import list_versions

    written = set(list_versions(storage))
    return [(name, mv) for name, mv, version in registered if version not in written]


def _unregister(
    context: dg.AssetExecutionContext,
    tracking: Any,
    find: Callable[[], list[tuple[str, str]]],
) -> None:
    """Delete the MLflow model versions ``find`` names (registered for a deployment version
    that was never written), and say so; an unreachable MLflow only warns (serving follows
    storage, not the registry)."""
    from churn_assets.lib.tracking import unregister

    try:
        deleted = unregister(tracking, find())
    except Exception as e:  # noqa: BLE001 - the deployment does not depend on it
        context.log.warning(
            "could not delete registered model versions of a deployment that was never "
            f"written: {type(e).__name__}: {e}"
        )
        return
    if deleted:
        context.log.warning(
            f"deleted {len(deleted)} registered model version(s) of a deployment that was "
            "never written (its run stopped between registering the models and writing the "
            f"version): {', '.join(deleted)}; challenger names the newest one left"
        )


def _snapshot_customers(cfg: Any, storage: Any, numeric: list[str]) -> Any:
    """A snapshot data set's usable customer table when a date attribute is a feature
    (its "now" is then stored with the version, for the sidecar to count dates to)."""
    from churn_assets.lib.feature_sets import date_features, usable

    if cfg.transactions is not None or not date_features(cfg, numeric):
        return None
    table = storage.read_asset("raw_customers")
    return None if table is None else usable(table)[0]


def _scoring_cutoff(context: dg.AssetExecutionContext, platform: ChurnPlatform) -> dt.date | None:
    """The cut-off the scored features are as of: the ``as_of`` of the latest
    ``current_features`` materialization, else the day after the last usable stored raw
    transaction (where current_features places it); None for snapshot data sets."""
    from churn_assets.lib.realized import stored_scoring_cutoff

    if platform.dataset_config().transactions is None:
        return None
    event = context.instance.get_latest_materialization_event(scope.key("current_features"))
    mat = event.asset_materialization if event else None
    as_of = mat.metadata.get("as_of") if mat else None
    if as_of is not None:
        try:
            return dt.date.fromisoformat(str(as_of.value))
        except ValueError:
            pass
    return stored_scoring_cutoff(platform.storage())


@dg.asset(
    retry_policy=STORAGE_RETRY,
    group_name="deployment",
    kinds={"polars", "parquet"},
    freshness_policy=RETRAINING_FRESHNESS,
    automation_condition=SCORES_CONDITION,
)
def churn_scores(
    context: dg.AssetExecutionContext,
    platform: ChurnPlatform,
    current_features,
    deployed_model_version: dict,
) -> dg.Output:
    """Batch scores of every customer with the deployed version: churn probability, churn
    label at the stored threshold, expected total sales (null for data sets without a
    value label) and the model version. The features are aligned to the version's own
    feature columns, so new top categories in later data do not break scoring. Each run's
    scores are also kept as a snapshot ``scores/<version>/<cut-off>.parquet`` (with the
    cut-off, threshold and horizon), which ``realized_performance`` compares with what the
    customers did once the horizon has passed (not for snapshot data sets: no time axis)."""
    from churn_assets.lib.realized import write_snapshot
    from churn_assets.lib.scoring import load_deployed, score_frame

    with fail_fast_unless_transient():
        storage = platform.storage()
        deployed = load_deployed(storage)
        scores = score_frame(deployed, current_features)
        cutoff = _scoring_cutoff(context, platform)
        snapshot = None
        if cutoff is not None:
            snapshot = write_snapshot(
                storage,
                scores,
                version=deployed.version,
                cutoff=cutoff,
                threshold=deployed.threshold,
                horizon_days=platform.dataset_config().labels.horizon_days,
            )
    metadata = {
        **table_metadata(scores),
        "model_version": dg.MetadataValue.text(deployed.version),
        "threshold": dg.MetadataValue.float(deployed.threshold),
        "predicted_churn_rate": dg.MetadataValue.float(float(scores["churn_label"].mean())),
        "cutoff": dg.MetadataValue.text(cutoff.isoformat() if cutoff else "n/a (snapshot)"),
        "snapshot": (
            dg.MetadataValue.path(snapshot)
            if snapshot
            else dg.MetadataValue.text("none: a snapshot data set has no time axis")
        ),
    }
    gone = [
        c
        for c in deployed.columns
        if c not in current_features.columns and not c.startswith("cat_share_")
    ]
    if gone:  # scored as missing: say so, where the scores are
        metadata["features_missing"] = dg.MetadataValue.json(gone)
        context.log.warning(
            f"current_features lacks {len(gone)} feature(s) the deployed version "
            f"{deployed.version} uses ({', '.join(gone[:10])}): they were scored as missing "
            "for every customer. The data set's config no longer reads them, or the source "
            "stopped sending them; put them back, or let a retraining deploy a version "
            "without them (the drift report counts them as drift)"
        )
    if deployed.has_value_model:
        metadata["expected_total_sales_sum"] = dg.MetadataValue.float(
            float(scores["expected_total_sales"].sum())
        )
    else:
        metadata["expected_total_sales"] = dg.MetadataValue.text("no value model (no value label)")
    return dg.Output(scores, metadata=metadata)
