"""Sensors: new landing files → ingestion run; drift or degraded realized performance →
retraining run; failures recorded."""

import hashlib
import json
from typing import Any

import dagster as dg

from churn_assets import scope
from churn_assets.jobs import (
    LANDING_JOB_NAMES,
    customers_landing_job,
    monitoring_job,
    retraining_job,
    transactions_landing_job,
)
from churn_assets.lib.landing_cursor import LandingCursor
from churn_assets.lib.settings import landing_sensor_seconds, landing_settle_seconds
from churn_assets.resources import ChurnPlatform
from churn_assets.tick_errors import posting_errors
from churn_assets.training_state import (
    PENDING,
    failed_on_its_input,
    landing_on_its_way,
    retraining_on_its_way,
)

#: Longest reason carried in a run tag (the whole reason is in the check's description).
REASON_TAG_CHARS = 200


def _age_seconds(stamp: object) -> float | None:
    """Seconds since a file listing's modification time (None when it does not say)."""
    import datetime as dt
    import time

    if isinstance(stamp, int | float):
        return time.time() - float(stamp)
    if isinstance(stamp, dt.datetime):
        when = stamp if stamp.tzinfo else stamp.replace(tzinfo=dt.UTC)
        return (dt.datetime.now(dt.UTC) - when).total_seconds()
    return None


def _watched(platform: ChurnPlatform) -> str:
    """The sources the landing sensor lists, as the config gives them (a file path watches
    that one file, not the folder it is in)."""
    from churn_assets.lib.ingest import resolve_source

    cfg = platform.dataset_config()
    landing = platform.landing_url_for_dataset()
    specs = (cfg.customers, cfg.transactions, cfg.labels.file)
    return ", ".join(resolve_source(s, landing) for s in specs if s is not None)[:300]


def _landing_listing(
    platform: ChurnPlatform, ages: dict[str, float | None] | None = None
) -> dict[str, str]:
    """Every source file of the data set: URL → 'size:modified' (changes mean new data);
    ``ages`` gets each file's seconds since its last modification."""
    import fsspec

    from churn_assets.lib.ingest import IngestError, list_source_files, resolve_source
    from churn_assets.lib.storage import info_stamp

    cfg = platform.dataset_config()
    landing = platform.landing_url_for_dataset()
    opts = platform.landing_storage_options()
    listing: dict[str, str] = {}
    for spec in (cfg.customers, cfg.transactions, cfg.labels.file):
        if spec is None:
            continue
        source = resolve_source(spec, landing)
        try:
            files = list_source_files(source, opts)
        except IngestError:
            _refuse_missing_bucket(source, opts)
            continue
        for url in files:
            fs, path = fsspec.core.url_to_fs(url, **opts)
            info = fs.info(path)
            listing[url] = info_stamp(info)
            if ages is not None:
                ages[url] = _age_seconds(info.get("mtime") or info.get("LastModified"))
    return listing


class LandingUnreadableError(RuntimeError):
    """The landing zone cannot be listed at all (not "no files yet"): its bucket is missing."""


def _refuse_missing_bucket(source: str, opts: dict) -> None:
    """Raise :class:`LandingUnreadableError` when ``source`` (an ``s3://`` URL that lists
    nothing) names a bucket the endpoint does not have: a bucket not created yet, or a
    storage URL or endpoint pointing elsewhere, which a "no new files" skip would hide."""
    import fsspec

    if not source.startswith("s3://"):
        return
    bucket = source.split("://", 1)[1].split("/", 1)[0]
    fs, _ = fsspec.core.url_to_fs(source, **opts)
    try:
        fs.invalidate_cache(bucket)
        if fs.exists(bucket):
            return
    except Exception:  # noqa: BLE001 - unreachable or forbidden: the listing's own errors say it
        return
    endpoint = (opts.get("client_kwargs") or {}).get("endpoint_url") or "AWS S3"
    raise LandingUnreadableError(
        f"the landing zone {source} cannot be read: the endpoint {endpoint} has no bucket "
        f"{bucket!r} (create it, or fix CHURN_STORAGE_URL / CHURN_LANDING_URL / "
        "CHURN_S3_ENDPOINT_URL)"
    ) from None


@dg.sensor(
    jobs=[monitoring_job, customers_landing_job, transactions_landing_job],
    minimum_interval_seconds=landing_sensor_seconds(),
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Watches the landing zone (cursor over file names, sizes and modification "
    "times; a file changed in the last CHURN_LANDING_SETTLE_SECONDS, default 10, is still "
    "being written and waits for a later tick). Each new or changed transaction file gets "
    "its raw_transactions partition (added here) and is ingested once; the run of the last "
    "of them also refreshes current features and the drift report over every file "
    "(ingest_features_drift when customer files changed too, else "
    "transactions_features_drift, which does not read the customer table again). "
    "Changed customer files alone start customers_features_drift. The runs queue one after "
    "the other (pool 'ingest'). A bad file is moved to quarantine by its run, so it is never "
    "retried.",
)
@posting_errors("landing_zone_sensor", "nothing it watches is picked up")
def landing_zone_sensor(context: dg.SensorEvaluationContext, platform: ChurnPlatform):
    from churn_assets.partitions import (
        RAW_TRANSACTIONS,
        TRANSACTION_FILES,
        landing_transaction_files,
    )

    root = platform.landing_url_for_dataset().rstrip("/") + "/"
    seen = LandingCursor.read(context.cursor, root)
    before = seen.generation
    ages: dict[str, float | None] = {}
    listing = _landing_listing(platform, ages)
    changed = sorted(url for url, sig in listing.items() if not seen.unchanged(url, sig))
    # a file still being written is left for a later tick: not in the cursor yet
    settle = landing_settle_seconds()
    # modified further in the future than the settle time: a clock (this machine's or the
    # writer's, an S3 server's) is off, so its age says nothing; held back, one dated 2099
    # would never land. Taken as written (ingestion leaves a file that changes while read).
    skewed = [u for u in changed if (age := ages.get(u)) is not None and age <= -settle]
    writing = [u for u in changed if (age := ages.get(u)) is not None and -settle < age < settle]
    if skewed:
        context.log.warning(
            f"{len(skewed)} file(s) modified in the future by this machine's clock (it or "
            "the writer's clock is off), taken as written: "
            + ", ".join(u.rsplit("/", 1)[-1] for u in skewed)[:300]
        )
    new = [u for u in changed if u not in writing]
    for url in writing:  # as seen before, if its signature was kept; else seen anew
        if url in seen.recent:
            listing[url] = seen.recent[url]
        else:
            del listing[url]
    if not new:
        context.update_cursor(LandingCursor.encode(listing, ages, before, root))
        again = _landed_not_ingested(context, platform, listing, seen)
        if again:
            return dg.SensorResult(run_requests=again)
        customers = _customers_not_ingested(context.instance, context.log)
        if customers is not None:
            return dg.SensorResult(run_requests=[customers])
        refresh = _refresh_behind_features(context.instance)
        if refresh is not None:
            return refresh
        if writing:
            return dg.SkipReason(
                f"{len(writing)} file(s) changed in the last {settle:g} s, left until "
                f"they are written: {', '.join(u.rsplit('/', 1)[-1] for u in writing)[:200]}"
            )
        return dg.SkipReason(
            f"no new files among {len(listing)} in the landing zone (watching {_watched(platform)})"
        )
    # by URL: a customer file may have the same name as a transaction file
    key_of = {url: key for key, url in landing_transaction_files(platform).items()}
    tx = [u for u in new if u in key_of]
    keys = list(dict.fromkeys(key_of[u] for u in tx))
    known = set(context.instance.get_dynamic_partitions(TRANSACTION_FILES.name))
    added = [k for k in keys if k not in known]

    # the tick's number in the cursor: a file restored as it was first landed (same name,
    # size and time, after a bad version) gets a run key of its own, where Dagster skipped
    # the key it had used for that file and the restored lines were never ingested; a tick
    # evaluated again before its cursor was saved asks for the same keys (no double run)
    generation = before + 1

    def run_key(*parts: str) -> str:
        digest = "\n".join([str(generation), *(f"{u}={listing[u]}" for u in parts)])
        return "landing-" + hashlib.sha1(digest.encode()).hexdigest()

    names = [u.rsplit("/", 1)[-1] for u in new]
    tags = {
        "churn/trigger": "landing",
        "churn/new_files": ",".join(names)[:200],
        **scope.dataset_tags(),
    }
    requests = [
        dg.RunRequest(
            run_key=run_key(url),
            job_name=monitoring_job.name,
            asset_selection=[RAW_TRANSACTIONS],
            partition_key=key_of[url],
            tags=tags,
        )
        for url in tx[:-1]
    ]
    if tx:  # the last file's run also runs what reads every file
        # the customer table is read again only when one of its files changed, or when
        # storage has none yet: a data set without a customer table (its raw_customers is
        # an empty table) had it written by no run, and every landing run failed
        read_customers = len(tx) < len(new) or not platform.storage().exists(
            "assets/raw_customers.parquet"
        )
        requests.append(
            dg.RunRequest(
                run_key=run_key(*new),
                job_name=(monitoring_job if read_customers else transactions_landing_job).name,
                partition_key=keys[-1],
                tags=tags,
            )
        )
    else:  # customer files only: no transaction partition to ingest
        requests.append(
            dg.RunRequest(run_key=run_key(*new), job_name=customers_landing_job.name, tags=tags)
        )
    context.update_cursor(LandingCursor.encode(listing, ages, generation, root))
    return dg.SensorResult(
        run_requests=requests,
        dynamic_partitions_requests=[TRANSACTION_FILES.build_add_request(added)] if added else [],
    )


def _landed_not_ingested(
    context: dg.SensorEvaluationContext,
    platform: ChurnPlatform,
    listing: dict[str, str],
    seen: LandingCursor,
) -> list[dg.RunRequest]:
    """Runs for the transaction files a tick has seen that are still in the landing zone
    with no stored partition and no run on its way: their runs were cancelled, or failed
    without moving the file out (its retries used up; a failed run the daemon is about to
    retry, tagged ``dagster/will_retry`` with no retry run yet, is on its way). The cursor
    had them, so nothing asked again and their lines were missing without a word. Each
    version of a file is asked for once (the run key), the features refreshed after them as
    after any ingestion (:func:`_refresh_behind_features`); not when its last run failed on
    the file itself or its checks (it would fail the same way)."""
    from churn_assets.partitions import RAW_TRANSACTIONS, landing_transaction_files

    ended = context.instance.get_runs(  # cheapest first: most ticks stop here
        filters=dg.RunsFilter(
            statuses=[dg.DagsterRunStatus.CANCELED, dg.DagsterRunStatus.FAILURE],
            tags=scope.dataset_tags(),
        ),
        limit=1000,
    )
    # a run failed by an interruption (PostgreSQL or its code server away) that the daemon
    # is about to run again is on its way too: asking here as well ingested the file twice
    retrying = {
        key
        for r in ended
        if r.is_complete_and_waiting_to_retry and (key := r.tags.get("dagster/partition"))
    }
    stopped = {key for r in ended if (key := r.tags.get("dagster/partition"))} - retrying
    if not stopped:
        return []
    storage = platform.storage()
    missing = {
        url: key
        for key, url in landing_transaction_files(platform).items()
        if key in stopped
        and url in listing
        and seen.unchanged(url, listing[url])
        and not storage.exists(f"assets/raw_transactions/{key}.parquet")
    }
    if not missing:
        return []
    pending = context.instance.get_runs(filters=dg.RunsFilter(statuses=list(PENDING)))
    waiting = {r.tags.get("dagster/partition") for r in pending}
    missing = {url: key for url, key in missing.items() if key not in waiting}
    # a file whose last run failed on the file itself or its checks (not an outage, not a
    # kill) fails the same way again: asking for it only repeats the failure and its alert
    last_run: dict[str, dg.DagsterRun] = {}
    for r in ended:  # newest first
        if (key := r.tags.get("dagster/partition")) in stopped:
            last_run.setdefault(key, r)
    missing = {
        url: key
        for url, key in missing.items()
        if not failed_on_its_input(context.instance, last_run[key])
    }
    if not missing:
        return []
    names = sorted(u.rsplit("/", 1)[-1] for u in missing)
    context.log.warning(
        f"{len(missing)} landed file(s) have no ingested lines and no run on its way (their "
        f"runs were cancelled or failed): asking for them again: {', '.join(names)[:300]}"
    )
    tags = {
        "churn/trigger": "landing",
        "churn/refresh": "a landed file whose run was cancelled or failed",
        **scope.dataset_tags(),
    }
    return [
        dg.RunRequest(
            run_key="not-ingested-" + hashlib.sha1(f"{url}={listing[url]}".encode()).hexdigest(),
            job_name=monitoring_job.name,
            asset_selection=[RAW_TRANSACTIONS],
            partition_key=key,
            tags={**tags, "churn/new_files": url.rsplit("/", 1)[-1][:200]},
        )
        for url, key in sorted(missing.items(), key=lambda item: item[1])
    ]


#: The tag of a run asking again for customer files whose landing run ended without them.
CUSTOMERS_AGAIN = "customer files whose run was cancelled or failed"


def _reads_customers(run: dg.DagsterRun) -> bool:
    """True for a landing run that was to read the customer files (raw_customers)."""
    if run.job_name not in (monitoring_job.name, customers_landing_job.name):
        return False
    return run.asset_selection is None or scope.key("raw_customers") in run.asset_selection


def _customers_not_ingested(instance: dg.DagsterInstance, log: Any) -> dg.RunRequest | None:
    """A run reading the customer files again when the last landing run that was to read
    them ended failed or cancelled (its retries used up, none coming) and nothing wrote
    raw_customers since: the cursor had the files, transaction-only runs do not read them
    (and :func:`_landed_not_ingested` asks for the transaction partition alone), so new
    customers stayed out of the tables until another customer file landed. Asked once per
    such run, and not for a run that was itself such a request (no loop on a file that
    keeps failing), nor for one that failed on the file itself or its blocking checks (the
    same file fails the same way: its alert has named it)."""
    records = instance.get_run_records(
        filters=dg.RunsFilter(
            statuses=[
                dg.DagsterRunStatus.FAILURE,
                dg.DagsterRunStatus.CANCELED,
                dg.DagsterRunStatus.SUCCESS,
            ],
            tags=scope.dataset_tags(),
        ),
        limit=50,
    )
    last = next((r for r in records if _reads_customers(r.dagster_run)), None)
    if last is None or last.dagster_run.status == dg.DagsterRunStatus.SUCCESS:
        return None
    run = last.dagster_run
    if run.is_complete_and_waiting_to_retry or run.tags.get("churn/refresh") == CUSTOMERS_AGAIN:
        return None
    if failed_on_its_input(instance, run):  # the file or its checks: it would fail again
        return None
    written = instance.get_latest_materialization_event(scope.key("raw_customers"))
    if written is not None and written.timestamp >= last.create_timestamp.timestamp():
        return None
    pending = instance.get_runs(filters=dg.RunsFilter(statuses=list(PENDING)), limit=100)
    if any(_reads_customers(r) and scope.dataset_tags().items() <= r.tags.items() for r in pending):
        return None
    log.warning(
        f"the customer files of run {run.run_id} ({run.status.value.lower()}) were not "
        "ingested and no run is on its way to read them: asking for them again"
    )
    return dg.RunRequest(
        run_key=f"customers-not-ingested-{run.run_id}",
        job_name=customers_landing_job.name,
        tags={
            "churn/trigger": "landing",
            "churn/refresh": CUSTOMERS_AGAIN,
            "churn/new_files": run.tags.get("churn/new_files", "")[:200],
            **scope.dataset_tags(),
        },
    )


def _refresh_behind_features(instance: dg.DagsterInstance) -> dg.RunRequest | None:
    """A run that refreshes current features and drift when a transaction file was
    ingested after their last materialization and no landing run (nor another run
    materializing current_features) is still on its way: the
    run that was to refresh them (a batch's last file's) failed on its own file, so the
    good files of the batch would otherwise wait for the next landing. Once per ingestion."""
    raw = instance.get_latest_materialization_event(scope.key("raw_transactions"))
    if raw is None:
        return None
    features = instance.get_latest_materialization_event(scope.key("current_features"))
    if features is not None and features.timestamp >= raw.timestamp:
        return None
    if features is not None and not _usable_lines_since(instance, features.timestamp):
        return None  # only refused files since (every line quarantined): nothing new to read
    landing = set(LANDING_JOB_NAMES)
    ours = scope.dataset_tags().items()
    features_key = scope.key("current_features")
    pending = instance.get_runs(filters=dg.RunsFilter(statuses=list(PENDING)), limit=100)
    for r in pending:
        if r.job_name in landing and ours <= r.tags.items():
            return None
        # a run materializing current_features on its way (a backfill or a materialization
        # from the UI, which carry no data set tag) refreshes them too
        if features_key in (r.asset_selection or ()):
            return None
    return dg.RunRequest(
        run_key=f"refresh-features-{raw.run_id}-{raw.timestamp:.3f}",
        job_name=customers_landing_job.name,
        asset_selection=[scope.key("current_features"), scope.key("drift_report")],
        tags={
            "churn/trigger": "landing",
            "churn/refresh": "features behind the last ingested file",
            **scope.dataset_tags(),
        },
    )


def _usable_lines_since(instance: dg.DagsterInstance, timestamp: float) -> bool:
    """Whether a ``raw_transactions`` partition written after ``timestamp`` holds a usable
    line: a file refused by its checks is written with every line quarantined, and features
    refreshed for it alone come out as they were. A long list (100 writes) counts as yes."""
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=scope.key("raw_transactions"), after_timestamp=timestamp),
        limit=100,
    ).records
    if len(records) >= 100:
        return True
    for record in records:
        usable = (record.asset_materialization.metadata or {}).get("usable_rows")
        if usable is None or usable.value:
            return True
    return False


@dg.sensor(
    target=dg.AssetSelection.assets(scope.key("churn_scores")),
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Keeps churn_scores on the deployed version: when the deployment pointer "
    "names another version than the latest scores (a rollback from the CLI or the rollback "
    "job, which move the pointer outside any asset), requests one churn_scores run per "
    "pointer move. When deployed_model_version has no materialization (wiped in the UI) "
    "while a version is deployed, reports one naming the pointer's version, so that "
    "churn_scores' automation stops waiting for it. churn_automation's eager condition "
    "cannot see such a move (and misses an update landing in the tick of the scores it "
    "made).",
)
@posting_errors("scores_follow_deployment", "churn_scores may not follow the deployed version")
def scores_follow_deployment(context: dg.SensorEvaluationContext, platform: ChurnPlatform):
    from churn_assets.lib import deployment as dep

    storage = platform.storage()
    pointer = dep.read_current(storage)
    if pointer is None or not pointer.get("version"):
        return dg.SkipReason("nothing is deployed")
    instance = context.instance
    deployed = scope.key("deployed_model_version")
    if instance.get_latest_materialization_event(deployed) is None:
        # wiped in the UI (or an instance newer than the storage): churn_scores' automation
        # condition waited for a missing parent until the next retraining. Not while a run
        # deploys: its pointer is written before its materialization is recorded.
        run = _run_materializing(context, deployed)
        if run is not None:
            return dg.SkipReason(
                f"run {run.run_id} materializing {deployed.path[-1]} is on its way"
            )
        return dg.SensorResult(
            asset_events=[restored_deployment(pointer, storage.url(dep.POINTER))],
            skip_reason=f"{deployed.to_user_string()} had no materialization: recorded "
            f"{pointer['version']} from the deployment pointer",
        )
    if instance.get_latest_materialization_event(scope.key("current_features")) is None:
        return dg.SkipReason("no current_features to score yet")
    event = instance.get_latest_materialization_event(scope.key("churn_scores"))
    meta = event.asset_materialization.metadata if event and event.asset_materialization else {}
    scored = meta.get("model_version")
    scored = scored.value if scored is not None else None
    version = pointer["version"]
    if scored == version:
        return dg.SkipReason(f"churn_scores are of the deployed version {version}")
    run = _run_materializing(context, scope.key("churn_scores"))
    if run is not None:
        return dg.SkipReason(f"run {run.run_id} materializing churn_scores is on its way")
    return dg.RunRequest(
        run_key=f"rescore-{version}-{pointer.get('updated_at')}",
        tags={
            "churn/trigger": "deployment",
            "churn/reason": f"scores of {scored or 'no version'}, deployed {version}",
            **scope.dataset_tags(),
        },
    )


def restored_deployment(pointer: dict[str, Any], url: str) -> dg.AssetMaterialization:
    """A materialization of ``deployed_model_version`` reporting what the deployment pointer
    names, for an event log that lost (or never had) its materializations."""
    version = str(pointer["version"])
    return dg.AssetMaterialization(
        asset_key=scope.key("deployed_model_version"),
        description=f"{version} is deployed per {url}: this asset's materializations were "
        "wiped (or predate this Dagster instance); recorded again from the pointer, nothing "
        "was trained or judged",
        metadata={
            "version": dg.MetadataValue.text(version),
            "pointer": dg.MetadataValue.path(url),
            "deployed_at": dg.MetadataValue.text(str(pointer.get("updated_at"))),
            "pinned": dg.MetadataValue.text(str(pointer.get("pinned"))),
            "restored": dg.MetadataValue.text(
                "from the deployment pointer: the event log had no materialization"
            ),
        },
    )


def _run_materializing(context: dg.SensorEvaluationContext, key: dg.AssetKey) -> Any:
    """A queued or in-progress run that materializes ``key`` (see :func:`_materializes`),
    or None."""
    runs = context.instance.get_runs(filters=dg.RunsFilter(statuses=list(PENDING)), limit=100)
    return next((run for run in runs if _materializes(context, run, key)), None)


def _materializes(context: dg.SensorEvaluationContext, run: Any, key: dg.AssetKey) -> bool:
    """Whether ``run`` (queued or in progress) materializes ``key``: its asset selection,
    or, for a whole asset job of this code location, the job's assets (a job of the same
    name in another data set's location carries that data set's tag, not this one's)."""
    if run.asset_selection is not None:
        return key in run.asset_selection
    if not scope.dataset_tags().items() <= run.tags.items():
        return False
    repo = getattr(context, "repository_def", None)
    if repo is None or not repo.has_job(run.job_name):
        return False
    return key in repo.get_job(run.job_name).asset_layer.executable_asset_keys


#: Run tags of a drift-triggered retraining: the reference it drifted from and the columns.
DRIFT_REFERENCE_TAG = "churn/drift_reference"
DRIFTED_COLUMNS_TAG = "churn/drifted_columns"


def _drift_requests_against(instance: dg.DagsterInstance, reference: str) -> list[list[str]]:
    """Drifted columns of each earlier drift-triggered retraining against ``reference``."""
    tags = {DRIFT_REFERENCE_TAG: reference, **scope.dataset_tags()}  # versions of two data
    runs = instance.get_runs(filters=dg.RunsFilter(tags=tags), limit=50)  # sets may share names
    return [json.loads(run.tags.get(DRIFTED_COLUMNS_TAG) or "[]") for run in runs]


@dg.asset_sensor(
    asset_key=scope.key("drift_report"),
    job=retraining_job,
    default_status=dg.DefaultSensorStatus.RUNNING,
    # one event-log read per tick: cheap enough to react within seconds, not half a minute
    minimum_interval_seconds=10,
    description="Requests a retraining run when a new drift report says drift, once per "
    "drift episode (a deployed reference and the columns drifted against it: while the "
    "challenger trained for it was refused or is queued, later reports with the same "
    "drifted columns start nothing; the hourly schedule picks up new data), or when it says "
    "nothing is deployed yet (the first model deploys itself). Runs queue one at a time "
    "(pool 'retraining').",
)
@posting_errors("drift_sensor", "drift reports start no retraining")
def drift_sensor(context: dg.SensorEvaluationContext, asset_event: dg.EventLogEntry):
    from churn_assets.lib.retraining_policy import drift_episode

    waiting = _backfill_runs_left(context.instance, asset_event.run_id)
    if waiting:
        return dg.SkipReason(waiting)
    landing = landing_on_its_way(context.instance, LANDING_JOB_NAMES, besides=asset_event.run_id)
    if landing:  # its files change the data: the drift report after them is judged instead
        return dg.SkipReason(f"{landing}; the drift report after it is judged instead")
    mat = asset_event.asset_materialization
    meta = mat.metadata if mat else {}
    status = meta.get("status")
    if status is not None and status.value == "no_deployment":
        busy = retraining_on_its_way(context.instance, retraining_job.name)
        if busy:  # the first version is already being trained (e.g. by the schedule)
            return dg.SkipReason(busy)
        return dg.RunRequest(
            run_key=f"bootstrap-{asset_event.run_id}",
            tags={
                "churn/trigger": "bootstrap",
                "churn/drift_run": asset_event.run_id,
                **scope.dataset_tags(),
            },
        )
    drifted = meta.get("drifted")
    if not (drifted and drifted.value):
        return dg.SkipReason("latest drift report shows no drift")
    reference = str(meta["model_version"].value) if "model_version" in meta else ""
    columns = sorted(meta["drifted_columns"].value) if "drifted_columns" in meta else []
    verdict = drift_episode(
        reference, columns, _drift_requests_against(context.instance, reference)
    )
    if not verdict.due:
        return dg.SkipReason(verdict.reason)
    return dg.RunRequest(
        run_key=f"drift-{asset_event.run_id}",
        tags={
            "churn/trigger": "drift",
            "churn/drift_run": asset_event.run_id,
            "churn/reason": verdict.reason[:REASON_TAG_CHARS],
            DRIFT_REFERENCE_TAG: reference,
            DRIFTED_COLUMNS_TAG: json.dumps(columns),
            **scope.dataset_tags(),
        },
    )


def _backfill_runs_left(instance: dg.DagsterInstance, run_id: str) -> str | None:
    """Why a drift report of a backfill's run is not judged yet (its other runs are queued or
    running: each re-ingests one more file, so a report in between sees half the history
    re-ingested and would start a retraining per file), or None."""
    run = instance.get_run_by_id(run_id)
    backfill = (run.tags if run else {}).get("dagster/backfill")
    if not backfill:
        return None
    left = [
        r.run_id
        for r in instance.get_runs(
            filters=dg.RunsFilter(
                tags={"dagster/backfill": backfill},
                statuses=[
                    dg.DagsterRunStatus.QUEUED,
                    dg.DagsterRunStatus.NOT_STARTED,
                    dg.DagsterRunStatus.STARTING,
                    dg.DagsterRunStatus.STARTED,
                ],
            )
        )
        if r.run_id != run_id
    ]
    if not left:
        return None
    return (
        f"drift report of a run of backfill {backfill}, whose {len(left)} other run(s) are "
        "queued or running: drift is judged on the report of its last run"
    )


@dg.asset_sensor(
    asset_key=scope.key("realized_performance"),
    job=retraining_job,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Requests a retraining run when realized_performance's check "
    "realized_roc_auc_holds fails for the deployed version (realized ROC-AUC below the floor "
    "or more than CHURN_REALIZED_MARGIN below the deployment-time figure); the run's "
    "'churn/reason' tag says why. One request per evaluated snapshot (version and cut-off); "
    "none while a landing run of the data set is writing (the verdict after it is judged) "
    "or a retraining is already on its way.",
)
@posting_errors("realized_performance_sensor", "degraded realized performance starts no retraining")
def realized_performance_sensor(
    context: dg.SensorEvaluationContext, asset_event: dg.EventLogEntry
) -> dg.RunRequest | dg.SkipReason:
    mat = asset_event.asset_materialization
    meta = mat.metadata if mat else {}

    def text(key: str) -> str:
        value = meta.get(key)
        return "" if value is None else str(value.value)

    requested = meta.get("retraining_requested")
    if not (requested and requested.value):
        verdict = text("verdict") or text("status") or "no verdict"
        return dg.SkipReason(f"latest realized performance: {verdict}; no retraining needed")
    busy = landing_on_its_way(
        context.instance, LANDING_JOB_NAMES, besides=asset_event.run_id
    ) or retraining_on_its_way(context.instance, retraining_job.name)
    if busy:  # the verdict after that run is judged instead (the request's key stays unused)
        return dg.SkipReason(busy)
    version, cutoff = text("model_version"), text("cutoff")
    reason = f"realized performance of {version} at {cutoff}: {text('verdict_reason')}"
    return dg.RunRequest(
        run_key=f"realized-{version}-{cutoff}",
        tags={
            "churn/trigger": "realized_performance",
            "churn/realized_run": asset_event.run_id,
            "churn/reason": reason[:REASON_TAG_CHARS],
            **scope.dataset_tags(),
        },
    )


@dg.run_failure_sensor(
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Records every failed run (job, step errors) under "
    "<storage>/<data set>/monitoring/failures/ and in the sensor's log.",
)
@posting_errors("run_failure_recorder", "failed runs are not recorded")
def run_failure_recorder(context: dg.RunFailureSensorContext, platform: ChurnPlatform):
    import datetime as dt

    from churn_assets.demo import root_cause_text

    run = context.dagster_run
    steps = [
        {
            "step": e.step_key,
            "root_cause": root_cause_text(e.event_specific_data.error)[:2000],
            "error": e.event_specific_data.error.message.strip()[:2000],
        }
        for e in context.get_step_failure_events()
        if e.event_specific_data and e.event_specific_data.error
    ]
    from churn_assets.alert_sensors import failed_checks

    checks = [  # a blocking check's step failure names the check, not what it found
        {
            "asset": e.dagster_event.asset_check_evaluation_data.asset_key.to_user_string(),
            "check": e.dagster_event.asset_check_evaluation_data.check_name,
            "description": (e.dagster_event.asset_check_evaluation_data.description or "")[:2000],
        }
        for e in failed_checks(context.instance, run.run_id)
    ]
    record = {
        "run_id": run.run_id,
        "job": run.job_name,
        "tags": dict(run.tags),
        "message": context.failure_event.message,
        "steps": steps,
        "failed_checks": checks,
        "recorded_at": dt.datetime.now(dt.UTC).isoformat(),
    }
    url = platform.storage().write_json(f"monitoring/failures/{run.run_id}.json", record)
    causes = (
        "; ".join(
            [
                *(f"{s['step']}: {s['root_cause']}" for s in steps),
                *(
                    f"check {c['check']}: {c['description'][:300]}"
                    for c in checks
                    if c["description"]
                ),
            ]
        )
        or "no step failed"
    )
    context.log.warning(f"run {run.run_id} ({run.job_name}) failed ({causes}): recorded at {url}")
