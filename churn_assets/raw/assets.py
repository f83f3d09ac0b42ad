"""Raw tables ingested from the landing zone: typed, screened, with bad input quarantined."""

from collections.abc import Callable, Iterator
from typing import Any

import dagster as dg

from churn_assets.freshness import DATA_FRESHNESS
from churn_assets.metadata import table_metadata
from churn_assets.partitions import (
    INGEST_POOL,
    TRANSACTION_FILES,
    copies_set_aside,
    landing_transaction_files,
)
from churn_assets.raw.checks import files_check, parse_check, raw_check_specs, suite_check
from churn_assets.resources import ChurnPlatform
from churn_assets.retries import retry_on_connection_errors

#: Where the customer table is stored, under the data set's storage.
STORED_CUSTOMERS = "assets/raw_customers.parquet"

#: A share of blank value labels above this is worth a warning (Telco's 11 of 7,043
#: brand-new customers are not).
ZERO_VALUE_WARNING = 0.01


def _screen_and_report(
    context: dg.AssetExecutionContext,
    platform: ChurnPlatform,
    asset: str,
    res: Any,
    rules: list,
    note: str | None = None,
    copy_of: str | None = None,
    stored_rows: Callable[[], int] | None = None,
    stored: str | None = None,
) -> Iterator[dg.Output | dg.AssetObservation | dg.AssetCheckResult]:
    """Screen, validate and quarantine ``res``; yield the table and its three checks. A
    table equal to the one stored at ``stored`` (a file ingested again: landed anew after
    it was moved away, or asked for by an instance that lost its history) has the metadata
    ``unchanged``: it is no new data for the retraining schedule. When
    ``stored_rows()`` (asked only of a version stopped by its checks) finds usable lines
    this partition holds from an earlier version of its file, that version writes nothing:
    those lines stay, and so does everything computed from them. A file set aside as a copy
    (``copy_of``) writes nothing either: an observation names the file it copies."""
    from churn_assets.lib.feature_sets import INTERNAL
    from churn_assets.lib.quality import validate
    from churn_assets.lib.quarantine import (
        changed_since_read,
        quarantine,
        release_landing_files,
        screen,
    )

    frame, bad = screen(res.frame, rules)
    public = frame.drop(list(INTERNAL))
    report = validate(public, rules, asset)
    changed = changed_since_read(res, platform.landing_storage_options())
    if changed:  # what was read is not what is there: judge nothing, write nothing
        yield from _changed_while_read(context, platform, asset, changed, stored)
        return
    q = quarantine(platform.storage(), res, bad, context.run.run_id)
    where = q.get("location")
    blocked = bool(res.file_problems or res.parse_errors or not report.blocking_success)
    moved = release_landing_files(
        res,
        bad,
        blocked,
        platform.landing_url_for_dataset(),
        platform.landing_storage_options(),
        str(where) if where else None,
    )
    if moved:  # a file moved to quarantine is not used until it lands again, fixed
        import polars as pl

        frame = frame.with_columns(
            (pl.col("_quarantined") | pl.col("_source_file").is_in(moved)).alias("_quarantined")
        )
    if where:
        context.log.warning(
            f"{asset}: {q['rows']} row(s) and {q['files']} unreadable file(s) quarantined at "
            f"{where}"
            + (
                f"; stopped by a blocking check, moved out of the landing zone whole (into "
                f"files/ there): {', '.join(moved)}"
                if moved
                else ""
            )
        )
    if res.changed_since_read:  # seen changing only now: what this run wrote of it goes
        if where:
            storage = platform.storage()
            gone = [f"{q['path']}/files/{n}" for n in res.changed_since_read]
            for rel in [str(q["path"])] if not moved else gone:
                if storage.exists(rel):
                    storage.delete(rel, recursive=True)
        yield from _changed_while_read(context, platform, asset, res.changed_since_read, stored)
        return
    metadata = {
        **table_metadata(public),
        "source_files": dg.MetadataValue.json(res.files),
        "quarantined_rows": dg.MetadataValue.int(int(q["rows"])),
        "quarantined_files": dg.MetadataValue.int(int(q["files"])),
        "usable_rows": dg.MetadataValue.int(frame.height - int(frame["_quarantined"].sum())),
        "files_moved_to_quarantine": dg.MetadataValue.json(moved),
    }
    if where:
        metadata["quarantine"] = dg.MetadataValue.path(str(where))
    if res.earlier_rows:
        metadata["earlier_rows_left_out"] = dg.MetadataValue.int(res.earlier_rows)
    if res.absent_columns:
        from churn_assets.raw.checks import absent_columns_text

        metadata["columns_absent_from_files"] = dg.MetadataValue.json(res.absent_columns)
        context.log.warning(f"{asset}: {absent_columns_text(res)}")
    if asset == "raw_transactions":
        repeated = sum(res.repeated_lines.values())
        metadata["repeated_lines"] = dg.MetadataValue.int(repeated)
        if repeated:
            where = ", ".join(f"{n:,} in {f}" for f, n in res.repeated_lines.items() if n)
            context.log.warning(
                f"{asset}: {repeated:,} line(s) repeat an earlier line of their file byte "
                f"for byte ({where}); each is counted as a purchase of its own. If the "
                "export wrote them twice, remove the copies at the source and land the file "
                "again"
            )
    if res.zero_value_labels:
        share = res.zero_value_labels / max(frame.height, 1)
        metadata["value_labels_blank_read_as_zero"] = dg.MetadataValue.int(res.zero_value_labels)
        if share >= ZERO_VALUE_WARNING:
            context.log.warning(
                f"{asset}: {res.zero_value_labels:,} customer(s) ({share:.1%}) have no value "
                "label and count as 0 sales (a customer who has bought nothing yet); if the "
                "value is unknown for them instead, fill it in or leave the value label out"
            )
    if res.label_rows is not None:
        named, rows = res.label_rows
        metadata["label_file_rows_matched"] = dg.MetadataValue.text(
            f"{named:,} of {rows:,} label rows name a customer of the table"
        )
        if named < rows:
            context.log.warning(
                f"{asset}: {rows - named:,} of {rows:,} rows of the label file name no customer "
                "of the customer table; they are not used"
            )
    if note:
        metadata["note"] = dg.MetadataValue.text(note)
    if copy_of:  # refused as a file landed twice: its twin's lines count instead
        metadata["copy_of"] = dg.MetadataValue.text(copy_of)
    kept = stored_rows() if blocked and stored_rows is not None else 0
    if kept:
        context.log.warning(
            f"{asset}: this version of {', '.join(res.files) or 'the file'} is stopped by its "
            f"checks; the {kept:,} usable {'row' if asset == 'raw_customers' else 'line'}(s) "
            "ingested from its earlier version stay, and nothing computed from them changes. "
            "Land it again, fixed"
        )
    elif copy_of:  # no data: a materialization refreshed the features and looked like new data
        context.log.warning(
            f"{asset}: {', '.join(res.files)} set aside as a copy of landing file {copy_of!r} "
            "(in quarantine): nothing materialized, nothing after it refreshed"
        )
        yield dg.AssetObservation(
            asset_key=context.asset_key,
            partition=context.partition_key if context.has_partition_key else None,
            metadata=metadata,
        )
    else:
        if stored is not None and _same_as_stored(platform.storage(), stored, frame):
            metadata["unchanged"] = dg.MetadataValue.bool(True)
            context.log.info(
                f"{asset}: the same lines as already stored ({stored}): written again, no "
                "new data for retraining"
            )
        yield dg.Output(frame, metadata=metadata)
    yield files_check(asset, res, where)
    yield parse_check(asset, res, where)
    yield suite_check(asset, report, where)


@dg.asset(
    group_name="raw",
    check_specs=raw_check_specs("raw_customers"),
    kinds={"polars", "parquet"},
    pool=INGEST_POOL,
    output_required=False,  # a new version stopped by its checks keeps the stored table
)
def raw_customers(
    context: dg.AssetExecutionContext, platform: ChurnPlatform
) -> Iterator[dg.Output | dg.AssetCheckResult]:
    """Customers of the data set, one row each: id, optional signup date, static attributes
    and, for snapshot data, the label columns (from the table itself, or from
    ``labels.file`` joined by customer id). Read from the landing zone and typed per the
    data set config; rows failing a rule are flagged ``_quarantined`` and copied to
    quarantine. A new version stopped by its checks writes nothing: the stored table (and
    everything computed from it) stays until a fixed version lands. Data sets without a
    customer table give an empty table (customers are then derived from transactions)."""
    import polars as pl

    from churn_assets.lib.ingest import (
        FileProblem,
        IngestResult,
        customers_gone_warning,
        ingest_customers,
        respelled_files,
        rows_of_refused_files,
    )
    from churn_assets.lib.rules import customer_rules

    cfg = platform.dataset_config()
    if cfg.customers is None:
        empty = IngestResult(
            "raw_customers",
            pl.DataFrame(
                schema={
                    "customer_id": pl.String,
                    "_source_file": pl.String,
                    "_parse_errors": pl.String,
                }
            ),
            [],
        )
        yield from _screen_and_report(
            context,
            platform,
            "raw_customers",
            empty,
            [],
            note=f"data set '{cfg.name}' has no customer table: customers come from "
            "raw_transactions",
        )
        return
    with retry_on_connection_errors(context):
        res = ingest_customers(
            cfg, platform.landing_url_for_dataset(), platform.landing_storage_options()
        )
    storage = platform.storage()
    with retry_on_connection_errors(context):
        before = _stored_customer_ids(storage)
        refused = {
            rel.rsplit("/", 1)[-1]
            for rel in storage.list_files("quarantine/raw_customers", "*/files/*")
        } - {"_reasons.json"}
        if before is not None and refused - set(res.files):
            kept = rows_of_refused_files(
                storage.read_parquet(STORED_CUSTOMERS), res.frame, res.files, refused
            )
            if kept.height:
                res.frame = pl.concat([res.frame, kept])
                context.log.warning(
                    f"raw_customers: {kept.height:,} stored customer(s) of "
                    f"{', '.join(kept['_source_file'].unique().sort())} stay: the last version "
                    "of that file was refused (it is in quarantine) and no fixed one has "
                    "landed yet"
                )
    if before is not None and not cfg.customers.row_ids:
        for name, problem in respelled_files(res.frame, before).items():
            res.file_problems.append(
                FileProblem(
                    name,
                    problem,
                    column=cfg.customers.id_column,
                    hint="the file is set aside and the stored customer table stays; land it "
                    "again with the ids written as before",
                )
            )
    for event in _screen_and_report(
        context,
        platform,
        "raw_customers",
        res,
        customer_rules(cfg),
        stored_rows=lambda: _stored_usable_rows(storage, STORED_CUSTOMERS),
        stored=STORED_CUSTOMERS,
    ):
        if isinstance(event, dg.Output) and before is not None:
            gone, said = customers_gone_warning(before, event.value["customer_id"])
            if said:
                context.log.warning(f"raw_customers: {said}")
            event = dg.Output(
                event.value,
                metadata={**event.metadata, "customers_gone": dg.MetadataValue.int(gone)},
            )
        yield event


def _landed_twin(
    context: dg.AssetExecutionContext, platform: ChurnPlatform, key: str, files: dict[str, str]
) -> str | None:
    """Another landing file with the bytes of this partition's file that counts instead of
    it: one ingested as itself (not refused as a copy), else one not ingested yet that comes
    earlier by key. Of a file landed twice, the lines count once, whichever order the runs
    take."""
    from churn_assets.lib.ingest import identical_files

    twins = identical_files(
        files[key], [u for k, u in files.items() if k != key], platform.landing_storage_options()
    )
    key_of = {url: k for k, url in files.items()}
    waiting = []
    for twin in sorted(twins, key=lambda u: key_of[u]):
        records = context.instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=context.asset_key, asset_partitions=[key_of[twin]]),
            limit=1,
        ).records
        if not records:
            waiting.append(twin)
        elif "copy_of" not in (records[0].asset_materialization.metadata or {}):
            return twin
    return next((t for t in waiting if key_of[t] < key), None)


@dg.asset(
    group_name="raw",
    check_specs=raw_check_specs("raw_transactions", TRANSACTION_FILES),
    kinds={"polars", "parquet"},
    freshness_policy=DATA_FRESHNESS,
    partitions_def=TRANSACTION_FILES,
    pool=INGEST_POOL,
    output_required=False,  # a re-delivered file stopped by its checks keeps the stored lines
)
def raw_transactions(
    context: dg.AssetExecutionContext, platform: ChurnPlatform
) -> Iterator[dg.Output | dg.AssetObservation | dg.AssetCheckResult]:
    """Transactions of the data set, one partition per landing file (the key is the file's
    name): customer id, timestamp, amount (returns negative), invoice id, category, country
    and an ``is_return`` flag, typed per the data set config. Each file is read, checked and
    written once; rows failing a rule are flagged ``_quarantined`` and copied to quarantine,
    and a file stopped by its checks is moved out of the landing zone. Downstream assets read
    every partition. Snapshot data sets (labels in columns, no transactions) have no
    partitions."""
    from churn_assets.lib.ingest import (
        FileProblem,
        IngestError,
        file_id_spelling_problem,
        ingest_transactions,
        lines_sha256,
    )
    from churn_assets.lib.landed_sources import (
        LandedFile,
        config_digest,
        forget_source,
        ingested_copy,
        record_source,
    )
    from churn_assets.lib.rules import transaction_rules

    cfg = platform.dataset_config()
    if cfg.transactions is None:
        raise IngestError(
            f"data set '{cfg.name}' is a customer snapshot: it has no transaction files to "
            "ingest (its features come from raw_customers alone)"
        )
    if not context.has_partition_key:
        raise IngestError(
            "raw_transactions has one partition per landing file: launch it with a "
            "partition (in the UI, pick one or several files, or all, in the Materialize "
            "dialog; `churn backfill` for a range), or launch the assets after it alone: "
            "they read every partition already written"
        )
    key = context.partition_key
    with retry_on_connection_errors(context):
        files = landing_transaction_files(platform)
        url = files.get(key)
        stored = _stored_partition(platform.storage(), key) if url is None else None
    if url is None:
        if stored is None and (
            copy := copies_set_aside(context.instance, context.asset_key, [key]).get(key)
        ):
            yield from _still_set_aside(context, key, copy)
            return
        if stored is None:
            raise IngestError(
                f"no landing file {key!r} in {platform.landing_url_for_dataset()} and "
                "nothing stored for it: it was removed or moved to quarantine before it was "
                "ingested, or never landed; land it (fixed) to ingest it"
            )
        yield from _stored_unchanged(context, key, stored)
        return
    with retry_on_connection_errors(context):
        options = platform.landing_storage_options()
        res = ingest_transactions(cfg, platform.landing_url_for_dataset(), options, [url])
        twin = _landed_twin(context, platform, key, files)
        storage = platform.storage()
        landed = LandedFile(  # hashed at most once
            url, options, lines=lines_sha256(res.frame), config=config_digest(cfg)
        )
        earlier = None if twin is not None else ingested_copy(storage, key, landed)
        known = _stored_customer_ids(storage)
    name = url.rsplit("/", 1)[-1]
    if known is not None and (
        spelling := file_id_spelling_problem(res.frame["customer_id"], known)
    ):
        res.file_problems.append(
            FileProblem(
                name,
                spelling,
                column=cfg.transactions.customer_id,
                hint="the file is set aside; land it again with the ids written as before",
            )
        )
    copy_of = None
    if twin is not None:
        copy_of = twin.rsplit("/", 1)[-1]
        reason = f"the same bytes as landing file {copy_of!r}, whose lines count"
    elif earlier is not None:  # its original has left the landing zone: a rename, a re-send
        copy_of = earlier[1]
        reason = (
            f"the same {earlier[2]} as landing file {copy_of!r}, ingested earlier (partition "
            f"{earlier[0]!r}), whose lines count"
        )
    if copy_of is not None:
        res.file_problems.append(
            FileProblem(
                name,
                f"{reason}: a file landed twice (renamed, or exported again) counts them twice",
                hint="this copy is set aside; land new lines under a new name",
            )
        )
    for event in _screen_and_report(
        context,
        platform,
        "raw_transactions",
        res,
        transaction_rules(cfg),
        copy_of=copy_of,
        stored_rows=lambda: _stored_usable_rows(storage, f"assets/raw_transactions/{key}.parquet"),
        stored=f"assets/raw_transactions/{key}.parquet",
    ):
        yield event
        if isinstance(event, dg.Output):  # written: record what its lines came from
            usable = event.value.height - int(event.value["_quarantined"].sum())
            with retry_on_connection_errors(context):
                if usable and copy_of is None:
                    record_source(storage, key, landed)
                else:
                    forget_source(storage, key)


def _changed_while_read(
    context: dg.AssetExecutionContext,
    platform: ChurnPlatform,
    asset: str,
    changed: list[str],
    stored: str | None,
) -> Iterator[dg.AssetCheckResult]:
    """No table for files that changed while they were read (rewritten in place, or still
    being written): their checks warn that they were not judged, nothing of them is
    quarantined or moved, and the landing sensor sees the change and has them read again
    whole. Steps after this one have nothing new to read; the run succeeds."""
    from churn_assets.raw.checks import FILES, PARSE, SUITE

    names = ", ".join(changed)
    kept = bool(stored) and platform.storage().exists(str(stored))
    said = (
        f"not judged: {names} changed while this run read it (rewritten in place, or still "
        "being written): what was read is not what is there. Nothing was written"
        + (" (what was stored before stays)" if kept else "")
        + " and nothing of it was quarantined; the file stays in the landing zone and the next "
        "landing tick reads it again whole. A writer that takes longer than "
        "CHURN_LANDING_SETTLE_SECONDS should write under a hidden name (.name) or a .part "
        "suffix and rename it when done"
    )
    context.log.warning(f"{asset}: {said}")
    for check in (FILES, PARSE, SUITE):
        yield dg.AssetCheckResult(
            check_name=check,
            asset_key=context.asset_key,
            passed=False,
            severity=dg.AssetCheckSeverity.WARN,
            description=said,
            metadata={"changed_while_read": dg.MetadataValue.json(changed)},
        )


def _still_set_aside(
    context: dg.AssetExecutionContext, key: str, copy_of: str
) -> Iterator[dg.AssetCheckResult]:
    """No table for a partition whose file was set aside as a copy ("Materialize all" over
    every partition goes on): its checks say so again, as a warning."""
    from churn_assets.raw.checks import FILES, PARSE, SUITE

    said = (
        f"landing file {key!r} was set aside as a copy of {copy_of!r} when it landed: "
        "nothing stored for it, nothing to materialize"
    )
    context.log.info(f"raw_transactions {key}: {said}")
    for check in (FILES, PARSE, SUITE):
        yield dg.AssetCheckResult(
            check_name=check,
            asset_key=context.asset_key,
            passed=check != FILES,
            severity=dg.AssetCheckSeverity.WARN,
            description=said,
        )


def _stored_partition(storage: Any, key: str) -> Any:
    """The stored ``raw_transactions`` partition ``key`` (a polars frame), or None."""
    rel = f"assets/raw_transactions/{key}.parquet"
    return storage.read_parquet(rel) if storage.exists(rel) else None


def _stored_unchanged(
    context: dg.AssetExecutionContext, key: str, stored: Any
) -> Iterator[dg.Output | dg.AssetCheckResult]:
    """The stored partition again, unchanged, for a file that has left the landing zone
    (retention, a quarantined or set-aside file, a removed one): "Materialize all" with every
    partition, or a backfill, then goes on to the features instead of failing every asset
    after it. Its checks say they were run when the file was ingested, and stay failed (a
    warning) for a file refused then."""
    from churn_assets.raw.checks import FILES, PARSE, SUITE

    usable = stored.height - int(stored["_quarantined"].fill_null(False).sum())
    said = (
        f"not checked again: landing file {key!r} has left the landing zone; the "
        f"{stored.height:,} line(s) stored when it was ingested stay as they are ({usable:,} "
        "usable, the rest quarantined then)"
    )
    context.log.info(f"raw_transactions {key}: {said}")
    yield dg.Output(
        stored,
        metadata={
            "usable_rows": dg.MetadataValue.int(usable),
            "note": dg.MetadataValue.text(said),
        },
    )
    # a file refused whole (no usable line) stays failed, as a warning that blocks nothing:
    # re-executing its run "from failure" turned its three blocking checks green
    refused = usable == 0
    for check in (FILES, PARSE, SUITE):
        yield dg.AssetCheckResult(
            check_name=check,
            asset_key=context.asset_key,
            passed=not refused,
            severity=dg.AssetCheckSeverity.WARN,
            description=said
            + ("; the file was refused then (its reason is in the quarantine)" if refused else ""),
        )


def _stored_customer_ids(storage: Any) -> Any:
    """The customer ids of the stored ``raw_customers`` (a polars Series), or None when
    none is stored or it is empty (a data set without a customer table: nothing to compare
    a file's ids with)."""
    if not storage.exists(STORED_CUSTOMERS):
        return None
    ids = storage.read_parquet(STORED_CUSTOMERS, columns=["customer_id"])["customer_id"]
    return ids if ids.len() else None


def _same_as_stored(storage: Any, rel: str, frame: Any) -> bool:
    """True when the table stored at ``rel`` holds exactly ``frame`` (rows, order, types)."""
    if not storage.exists(rel):
        return False
    if storage.read_parquet(rel, columns=["_quarantined"]).height != frame.height:
        return False
    return storage.read_parquet(rel).equals(frame)


def _stored_usable_rows(storage: Any, rel: str) -> int:
    """Usable rows of the stored table at ``rel`` (0: none stored)."""
    if not storage.exists(rel):
        return 0
    flags = storage.read_parquet(rel, columns=["_quarantined"])["_quarantined"]
    return int((~flags.fill_null(False)).sum())
