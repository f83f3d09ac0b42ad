"""Partitions of the graph: ``raw_transactions`` has one partition per landing file.

A landing file is validated, quarantined and written once, as its own partition
(``<storage>/<data set>/assets/raw_transactions/<file>.parquet``), with its own check
results. The landing sensor adds the partition of every new file; assets downstream are
unpartitioned and read every partition. Dynamic partitions rather than daily ones: a landing
file is the unit that arrives, is checked and may be quarantined, and its lines may span
several days (a late file, a backfilled month). The partition key is the file's name.

Runs made in this process (``churn demo``, tests) go through :func:`execute_in_process`,
which registers the landing files as partitions and runs one partition per run before the
rest of the selection, as the landing sensor and the daemon do.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import dagster as dg

from churn_assets import scope

if TYPE_CHECKING:
    from churn_assets.demo import GraphResult

#: One partition per landing file of the data set's transactions (key: the file's name).
TRANSACTION_FILES = dg.DynamicPartitionsDefinition(name=scope.partitions_name("transaction_files"))

RAW_TRANSACTIONS = scope.key("raw_transactions")


def copies_set_aside(
    instance: dg.DagsterInstance, asset_key: dg.AssetKey, keys: list[str]
) -> dict[str, str]:
    """The partitions among ``keys`` whose landing file was set aside as a copy of another
    one, with the file each copies: their run materialized nothing and recorded an
    observation naming it (``copy_of``, see ``raw_transactions``)."""
    records = instance.fetch_observations(
        dg.AssetRecordsFilter(asset_key=asset_key, asset_partitions=keys),
        limit=4 * len(keys) + 100,
    ).records
    found: dict[str, str] = {}
    for r in records:  # newest first
        copy_of = (r.asset_observation.metadata or {}).get("copy_of")
        if r.partition_key and copy_of is not None:
            found.setdefault(r.partition_key, str(copy_of.value))
    return found


#: The pool of every step that writes the raw tables or the incremental feature state: with
#: run granularity (dagster.yaml), ingestion runs queue one after the other, in order.
INGEST_POOL = scope.pool("ingest")


#: Runs still to end: queued, starting or going.
UNFINISHED = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
]


def runs_ingesting(
    instance: dg.DagsterInstance, keys: list[str], dataset: str
) -> dict[str, dg.DagsterRun]:
    """The unfinished run of each partition among ``keys`` that has one (a landing run
    queued or going, a backfill's run) of data set ``dataset``."""
    found: dict[str, dg.DagsterRun] = {}
    for key in keys:
        for record in instance.get_run_records(
            dg.RunsFilter(statuses=UNFINISHED, tags={"dagster/partition": key}), limit=20
        ):
            if record.dagster_run.tags.get(scope.DATASET_TAG, dataset) == dataset:
                found[key] = record.dagster_run
                break
    return found


def landing_transaction_files(platform: Any) -> dict[str, str]:
    """Partition key → URL of every transaction file in the data set's landing zone."""
    from churn_assets.lib.ingest import transaction_files

    return transaction_files(
        platform.dataset_config(),
        platform.landing_url_for_dataset(),
        platform.landing_storage_options(),
    )


def register_transaction_files(instance: dg.DagsterInstance, platform: Any) -> list[str]:
    """Add a partition for every landing file without one; returns every file's key."""
    keys = list(landing_transaction_files(platform))
    known = set(instance.get_dynamic_partitions(TRANSACTION_FILES.name))
    new = [k for k in keys if k not in known]
    if new:
        instance.add_dynamic_partitions(TRANSACTION_FILES.name, new)
    return keys


def execute_in_process(
    job: dg.JobDefinition,
    instance: dg.DagsterInstance,
    platform: Any,
    selection: list[dg.AssetKey] | None = None,
    *,
    only_new: bool = False,
    partition_keys: list[str] | None = None,
    **kwargs: Any,
) -> list[dg.ExecuteInProcessResult]:
    """Materialize ``selection`` (default: every asset of ``job``) in this process.

    ``raw_transactions`` runs once per landing file (every file, or with ``only_new`` the
    files without a materialized partition on ``instance``, or ``partition_keys``), each its
    own run; then the rest of the selection runs as one run reading every partition (every
    partition written to storage). When a file's run failed (a
    blocking check: its file is in quarantine), what reads the transactions does not run,
    as in one run where that check blocks it; the rest (e.g. ``raw_customers``) does.
    Returns the results, in order."""
    keys = set(selection) if selection is not None else set(job.asset_layer.executable_asset_keys)
    results: list[dg.ExecuteInProcessResult] = []
    if RAW_TRANSACTIONS in keys:
        keys.discard(RAW_TRANSACTIONS)
        files = register_transaction_files(instance, platform)
        if only_new:
            done = instance.get_materialized_partitions(RAW_TRANSACTIONS)
            files = [k for k in files if k not in done]
        if partition_keys is not None:
            files = [k for k in files if k in partition_keys]
        for key in files:
            results.append(
                job.execute_in_process(
                    instance=instance,
                    asset_selection=[RAW_TRANSACTIONS],
                    partition_key=key,
                    raise_on_error=False,
                    **kwargs,
                )
            )
            if interrupted(results[-1]):  # Ctrl-C or SIGTERM: the other files wait too
                raise KeyboardInterrupt(f"interrupted while ingesting {key}")
        if not all(r.success for r in results):
            graph = job.asset_layer.asset_graph
            keys -= _downstream(graph, RAW_TRANSACTIONS)
    if keys:
        results.append(
            job.execute_in_process(
                instance=instance, asset_selection=sorted(keys), raise_on_error=False, **kwargs
            )
        )
    return results


def interrupted(result: dg.ExecuteInProcessResult) -> bool:
    """Whether a run made in this process was stopped by Ctrl-C or SIGTERM (Dagster turns
    them into a failed step): the files after it must not be ingested, one run each, as if
    nothing had been asked."""
    return any(
        e.event_type_value == "STEP_FAILURE"
        and e.event_specific_data.error is not None
        and e.event_specific_data.error.cls_name == "DagsterExecutionInterruptedError"
        for e in result.all_events
    )


def _downstream(graph: Any, key: dg.AssetKey) -> set[dg.AssetKey]:
    """Every asset that reads ``key``, directly or not."""
    out: set[dg.AssetKey] = set()
    todo = [key]
    while todo:
        for child in graph.get(todo.pop()).child_keys:
            if child not in out:
                out.add(child)
                todo.append(child)
    return out


def run_in_process(
    job: dg.JobDefinition,
    instance: dg.DagsterInstance,
    platform: Any,
    selection: list[dg.AssetKey] | None = None,
    **kwargs: Any,
) -> GraphResult:
    """:func:`execute_in_process`, its runs read as one."""
    from churn_assets.demo import GraphResult

    return GraphResult(execute_in_process(job, instance, platform, selection, **kwargs))
