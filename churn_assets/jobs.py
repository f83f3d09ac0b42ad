"""Jobs: named selections of the asset graph, and the rollback job."""

import dagster as dg

from churn_assets import scope
from churn_assets.resources import ChurnPlatform

#: Runs of the landing and retraining jobs that were interrupted (a killed platform or code
#: server: failed by ``churn dev``, the compose code location or run monitoring, not by a
#: step) are run again by the daemon's run retries (``run_retries`` in dagster.yaml), twice
#: at most; a step that failed (a data-quality check, a bad config) is not retried.
INTERRUPTED_RUN_RETRIES = {"dagster/max_retries": "2"}

ingest_and_features_job = dg.define_asset_job(
    "ingest_and_features",
    selection=dg.AssetSelection.groups("raw", "features"),
    description="Ingest a landing file (a raw_transactions partition) and rebuild the "
    "point-in-time customer features.",
    # light steps in one process: no per-step process start and library imports
    executor_def=dg.in_process_executor,
    tags={**INTERRUPTED_RUN_RETRIES, **scope.dataset_tags()},
)

RETRAINING_TAG = "churn/retraining"
RETRAINING_POOL = scope.pool("retraining")

#: What a landing batch refreshes: ingestion → current features → drift report. Not the
#: labelled training table ``customer_features``, which is built from the whole history: the
#: retraining run builds it. (The served-traffic drift reads days of inference log: it has
#: its own daily schedule.)
MONITORING_SELECTION = dg.AssetSelection.groups(
    "raw", "features", "monitoring"
) - dg.AssetSelection.assets(scope.key("served_drift_report"), scope.key("customer_features"))

monitoring_job = dg.define_asset_job(
    "ingest_features_drift",
    selection=MONITORING_SELECTION,
    description="What the landing sensor runs: ingestion of a landing file (a "
    "raw_transactions partition) → current features → drift report.",
    executor_def=dg.in_process_executor,
    tags={**INTERRUPTED_RUN_RETRIES, **scope.dataset_tags()},
)

transactions_landing_job = dg.define_asset_job(
    "transactions_features_drift",
    selection=MONITORING_SELECTION - dg.AssetSelection.assets(scope.key("raw_customers")),
    description="What the landing sensor runs when only transaction files changed: the "
    "file's raw_transactions partition → current features → drift report (the customer "
    "table, unchanged, is not read again).",
    executor_def=dg.in_process_executor,
    tags={**INTERRUPTED_RUN_RETRIES, **scope.dataset_tags()},
)

customers_landing_job = dg.define_asset_job(
    "customers_features_drift",
    selection=MONITORING_SELECTION - dg.AssetSelection.assets(scope.key("raw_transactions")),
    description="What the landing sensor runs when only customer files changed: "
    "raw_customers → current features → drift report, over every transaction partition.",
    executor_def=dg.in_process_executor,
    tags={**INTERRUPTED_RUN_RETRIES, **scope.dataset_tags()},
)

#: The landing jobs: the landing sensor's runs, which write the raw tables (the last file's
#: run also refreshes the features over every file).
LANDING_JOBS = (monitoring_job, transactions_landing_job, customers_landing_job)
LANDING_JOB_NAMES = tuple(job.name for job in LANDING_JOBS)

#: What every retraining step imports (model sets, MLflow, model files). The
#: retraining job's steps fork from a server process that imported them once per run, instead
#: of each step process importing them again (seconds per step on 2 cores).
RETRAINING_PRELOAD = (
    "churn_assets.definitions",
    "churn_assets.lib.models.classification",
    "churn_assets.lib.models.regression",
    "churn_assets.lib.tracking",
    "churn_assets.lib.release",
    "churn_assets.lib.scoring",
    "mlflow",
    "skops.io",
)

#: The default executor of every other multi-process run (e.g. "Materialize all" in the UI):
#: steps fork from a server that loaded the code location once per run.
forkserver_executor = dg.multiprocess_executor.configured(
    {"start_method": {"forkserver": {"preload_modules": ["churn_assets.definitions"]}}},
    name="forkserver_executor",
)

retraining_executor = dg.multiprocess_executor.configured(
    {"start_method": {"forkserver": {"preload_modules": list(RETRAINING_PRELOAD)}}},
    name="retraining_executor",
)

retraining_job = dg.define_asset_job(
    "retraining",
    selection=dg.AssetSelection.groups("models", "deployment")
    | dg.AssetSelection.assets(scope.key("customer_features")),
    description="Build the labelled training table from the whole history, train both model "
    "sets, gate the challenger and deploy it when better; "
    "one retraining run of this data set at a time (its pool 'retraining'), at most two of "
    "all data sets (dagster.yaml tag concurrency limit on churn/retraining).",
    tags={RETRAINING_TAG: "true", **INTERRUPTED_RUN_RETRIES, **scope.dataset_tags()},
    executor_def=retraining_executor,
)


class RollbackConfig(dg.Config):
    """``to``: a version name (vYYYYMMDD-HHMMSS); empty means the previous version."""

    to: str = ""


#: Where the rollback and retention ops' results go: kept in memory for the run (the
#: default IO manager would write each under ``assets/<run id>/`` in storage, one folder a
#: day for the nightly retention, never pruned); their metadata carries them to the UI.
OP_RESULTS = "op_results_io_manager"


def launch_time(context: dg.OpExecutionContext | dg.AssetExecutionContext) -> float:
    """When this run was launched (created: queued runs wait after it), epoch seconds."""
    record = context.instance.get_run_record_by_id(context.run_id)
    return record.create_timestamp.timestamp() if record else 0.0


@dg.op(
    description="Move the deployment pointer and the MLflow champion aliases back.",
    pool=RETRAINING_POOL,
    out=dg.Out(io_manager_key=OP_RESULTS),
)
def rollback_op(
    context: dg.OpExecutionContext, config: RollbackConfig, platform: ChurnPlatform
) -> str:
    """Roll back (``churn_scores`` follows through ``scores_follow_deployment``)."""
    from churn_assets.lib.rollback import aliases_problem, rollback_deployment

    pointer = rollback_deployment(
        platform.storage(),
        platform.settings(),
        platform.dataset_config().name,
        config.to or None,
        launched_at=launch_time(context),
    )
    context.log.info(f"deployed version is now {pointer['version']}")
    context.add_output_metadata(
        {"version": pointer["version"], "reason": pointer["reason"], "pinned": pointer["pinned"]}
    )
    # the pointer moves outside the asset: its page showed the version rolled back from,
    # served no more; an observation there names the one served now
    context.log_event(
        dg.AssetObservation(
            asset_key=scope.key("deployed_model_version"),
            description=f"rolled back by {context.job_name}: {pointer['version']} is deployed",
            metadata={
                "version": dg.MetadataValue.text(pointer["version"]),
                "rolled_back": True,
                "reason": dg.MetadataValue.text(pointer["reason"]),
                "pinned": dg.MetadataValue.text(str(pointer["pinned"])),
            },
        )
    )
    problem = aliases_problem(pointer)
    if problem:  # a registry that names another champion than what is served: fail loudly
        raise dg.Failure(description=problem, allow_retries=False)
    return pointer["version"]


@dg.job(
    description="Roll the deployed model version back (default: to the previous one).",
    tags=scope.dataset_tags(),
    executor_def=dg.in_process_executor,  # one op; its result stays in memory
)
def rollback_deployment_job():
    rollback_op()


class RetentionConfig(dg.Config):
    """``dry_run``: list what would be deleted without deleting it."""

    dry_run: bool = False


@dg.op(
    description="Delete old versions, model-set files, drift reports, quarantine "
    "batches, inference-log days, settled scoring snapshots and MLflow runs beyond the "
    "retention counts.",
    pool=RETRAINING_POOL,
    out=dg.Out(io_manager_key=OP_RESULTS),
)
def retention_op(
    context: dg.OpExecutionContext, config: RetentionConfig, platform: ChurnPlatform
) -> dict:
    from churn_assets.lib.retention import RetentionPolicy, prune, prune_mlflow
    from churn_assets.lib.tracking import TrackingConfig

    policy = RetentionPolicy.from_env()
    storage = platform.storage()
    horizon = platform.dataset_config().labels.horizon_days
    report = prune(storage, policy, dry_run=config.dry_run, horizon_days=horizon)
    tracking = TrackingConfig.from_settings(platform.settings(), platform.dataset_config().name)
    report["mlflow"] = prune_mlflow(tracking, storage, policy, dry_run=config.dry_run)
    verb = "would delete" if config.dry_run else "deleted"
    context.log.info(f"retention {verb}: {report['deleted']}, mlflow {report['mlflow']}")
    if report["mlflow"].get("not_pruned"):
        context.log.warning(f"MLflow runs not pruned: {report['mlflow']['not_pruned']}")
    if report["mlflow"].get("runs_kept_files_not_deletable"):
        mlflow = report["mlflow"]
        context.log.warning(
            f"{mlflow['runs_kept_files_not_deletable']} MLflow run(s) kept: the artifact "
            f"store refused to delete their files ({mlflow['artifact_store_error']}); give "
            "this process delete permission on the artifact store, and the next retention "
            "run prunes them"
        )
    context.add_output_metadata(
        {
            "deleted": dg.MetadataValue.json(report["deleted"]),
            "mlflow": dg.MetadataValue.json(report["mlflow"]),
            "protected_versions": dg.MetadataValue.json(report["protected_versions"]),
            "policy": dg.MetadataValue.json(report["policy"]),
        }
    )
    return report


@dg.job(
    description="Retention: keep the last N versions, model-set files, drift reports, "
    "quarantine batches, inference-log days, scoring snapshots whose horizon has passed and "
    "MLflow model-set runs (CHURN_RETENTION_*); "
    "never the deployed version, a pinned one or the rollback target.",
    tags=scope.dataset_tags(),
    executor_def=dg.in_process_executor,  # one op; its result stays in memory
)
def retention_job():
    retention_op()
