"""raw_transactions has one partition per landing file: each file is checked on its own,
written once, and a landing run ingests only the files that are new."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from tests.data.test_bad_input import TRANSACTIONS, quarantined_files, setup_landing

SELECTION = [
    dg.AssetKey(k)
    for k in ("raw_customers", "raw_transactions", "customer_features", "current_features")
]
LATE = "invoice_id,customer_id,timestamp,amount\nI20,C2,2024-03-20 10:00:00,70.0\n"


def graph(config: str):
    from churn_assets.definitions import build_definitions
    from churn_assets.io_managers import ChurnIOManager
    from churn_assets.resources import ChurnPlatform

    platform = ChurnPlatform(dataset=config)
    defs = build_definitions(platform, ChurnIOManager(dataset=config))
    return defs.resolve_implicit_global_asset_job_def(), platform


def run(config: str, instance: dg.DagsterInstance, **kwargs):
    from churn_assets.partitions import run_in_process

    job, platform = graph(config)
    return run_in_process(job, instance, platform, SELECTION, **kwargs)


def partitions_materialized(result) -> list[str]:
    return [
        m.materialization.partition
        for m in result.get_asset_materialization_events()
        if m.materialization.asset_key == dg.AssetKey("raw_transactions")
    ]


def failed_checks(result) -> dict[str, str | None]:
    """Partition → description of each failed raw_transactions check of ``result``."""
    return {
        e.partition: e.description
        for e in result.get_asset_check_evaluations()
        if e.asset_key == dg.AssetKey("raw_transactions") and not e.passed
    }


def usable_lines(storage: Path) -> pl.DataFrame:
    """Every stored raw_transactions line not in quarantine (each counted once)."""
    parts = storage / "mini" / "assets" / "raw_transactions"
    return pl.concat([pl.read_parquet(p) for p in parts.glob("*.parquet")]).filter(
        ~pl.col("_quarantined")
    )


def test_each_file_is_its_own_partition_with_its_own_checks(isolated_env: Path, tmp_path):
    bad = "invoice_id,customer_id,timestamp,amount\nI9,C1,2024-01-05 10:00:00,9e9\n"
    config = setup_landing(isolated_env, tmp_path, extra={"transactions/b.csv": bad})
    instance = dg.DagsterInstance.ephemeral()

    first = run(config, instance)

    assert instance.get_dynamic_partitions("transaction_files") == ["a.csv", "b.csv"]
    suite = {
        e.partition: e.passed
        for e in first.get_asset_check_evaluations()
        if e.asset_key == dg.AssetKey("raw_transactions") and e.check_name == "expectations_met"
    }
    assert suite == {"a.csv": True, "b.csv": False}
    assert not first.success
    # a failed file blocks what reads the transactions; the customers are still ingested
    done = {
        m.materialization.asset_key.to_user_string()
        for m in first.get_asset_materialization_events()
    }
    assert "customer_features" not in done and "raw_customers" in done
    landing = isolated_env / "landing" / "mini" / "transactions"
    assert sorted(p.name for p in landing.iterdir()) == ["a.csv"]
    parts = isolated_env / "mini" / "assets" / "raw_transactions"
    assert sorted(p.name for p in parts.iterdir()) == ["a.csv.parquet", "b.csv.parquet"]
    # the partition of a file moved to quarantine keeps its lines, none of them usable
    kept = pl.read_parquet(parts / "b.csv.parquet")
    assert kept.height == 1 and kept["_quarantined"].all()
    written = {
        m.partition: m.materialization.metadata["path"].value
        for m in first.get_asset_materialization_events()
        if m.materialization.asset_key == dg.AssetKey("raw_transactions")
    }
    assert written == {k: str(parts / f"{k}.parquet") for k in ("a.csv", "b.csv")}

    second = run(config, instance)  # b.csv is in quarantine: the rest goes through
    assert second.success
    features = second.output_for_node("customer_features")
    assert features.height == 4
    assert "I9" not in second.output_for_node("raw_transactions")["invoice_id"].to_list()


def test_a_landing_run_ingests_only_the_new_file(isolated_env: Path, tmp_path):
    config = setup_landing(isolated_env, tmp_path)
    instance = dg.DagsterInstance.ephemeral()
    first = run(config, instance)
    assert first.success and partitions_materialized(first) == ["a.csv"]
    written = (isolated_env / "mini" / "assets" / "raw_transactions" / "a.csv.parquet").stat()

    (isolated_env / "landing" / "mini" / "transactions" / "c.csv").write_text(LATE)
    later = run(config, instance, only_new=True)

    assert later.success
    assert partitions_materialized(later) == ["c.csv"]  # a.csv is not read again
    again = (isolated_env / "mini" / "assets" / "raw_transactions" / "a.csv.parquet").stat()
    assert again.st_mtime_ns == written.st_mtime_ns
    # what reads the transactions sees both files
    current = later.output_for_node("current_features")
    lines = TRANSACTIONS.count("\n") - 1 + 1
    meta = next(
        m.materialization.metadata
        for m in later.get_asset_materialization_events()
        if m.materialization.asset_key == dg.AssetKey("current_features")
    )
    assert meta["incremental"].value["files_added"] == 1
    assert current.height == 4
    stacked = pl.concat(
        [
            pl.read_parquet(p)
            for p in sorted(
                (isolated_env / "mini" / "assets" / "raw_transactions").glob("*.parquet")
            )
        ]
    )
    assert stacked.height == lines
    assert_same_as_built_from_every_line(config, later)

    # a file landed again with other lines: its partition is written again, and read again
    (isolated_env / "landing" / "mini" / "transactions" / "c.csv").write_text(
        LATE.replace("70.0", "7.0")
    )
    rewritten = run(config, instance, only_new=False)
    assert rewritten.success
    meta = next(
        m.materialization.metadata
        for m in rewritten.get_asset_materialization_events()
        if m.materialization.asset_key == dg.AssetKey("current_features")
    )
    assert meta["incremental"].value["rebuilt"] is True
    assert_same_as_built_from_every_line(config, rewritten)


def test_a_later_file_writing_the_customer_ids_anew_is_refused(isolated_env: Path, tmp_path):
    """After the first files, an export writes the same customers' ids in lower case: its
    lines were ingested for ids no customer has (the landing run succeeded, the features
    silently lost those purchases, and only the next retraining failed on it, with the file
    already stored). It is refused by name and kept in quarantine; a file naming a new
    customer still lands."""
    config = setup_landing(isolated_env, tmp_path)
    instance = dg.DagsterInstance.ephemeral()
    assert run(config, instance).success
    landing = isolated_env / "landing" / "mini" / "transactions"

    (landing / "c.csv").write_text(LATE.replace(",C2,", ",c2,"))
    later = run(config, instance, only_new=True)

    assert not later.success
    assert failed_checks(later)["c.csv"].startswith(
        "c.csv: 1 of the 1 customer ids in this file are in the customer table only with "
        "another letter case (file: 'c2'; customers: 'C2')"
    )
    assert sorted(p.name for p in landing.iterdir()) == ["a.csv"]
    assert quarantined_files(isolated_env, "raw_transactions") == ["c.csv"]
    assert "c2" not in usable_lines(isolated_env)["customer_id"].to_list()

    (landing / "d.csv").write_text(LATE.replace(",C2,", ",C9,").replace("I20", "I21"))
    assert run(config, instance, only_new=True).success
    assert "C9" in usable_lines(isolated_env)["customer_id"].to_list()


def test_ids_of_a_file_spelled_with_other_leading_zeros_are_named():
    from churn_assets.lib.ingest import file_id_spelling_problem

    known = pl.Series(["123", "456", "789"])
    padded = pl.Series(["000123", "000456", "000456", None])
    assert file_id_spelling_problem(padded, known).startswith(
        "2 of the 2 customer ids in this file are in the customer table only with other "
        "leading zeros (file: '000123'; customers: '123')"
    )
    assert file_id_spelling_problem(pl.Series(["123", "999"]), known) is None  # a new one


def test_a_bad_redelivery_of_an_ingested_file_keeps_its_good_lines(isolated_env: Path, tmp_path):
    """c.csv ingested, then landed again without a column its checks need: the new version
    goes to quarantine, the run fails, and the lines of the good version stay in its
    partition (it was overwritten with no usable line, and every feature computed from the
    file changed at the next refresh). A fixed version then replaces them."""
    config = setup_landing(isolated_env, tmp_path, extra={"transactions/c.csv": LATE})
    instance = dg.DagsterInstance.ephemeral()
    assert run(config, instance).success
    part = isolated_env / "mini" / "assets" / "raw_transactions" / "c.csv.parquet"
    good = part.read_bytes()

    landing = isolated_env / "landing" / "mini" / "transactions"
    (landing / "c.csv").write_text(LATE.replace("amount", "total"))  # no amount column
    broken = run(config, instance, only_new=False)

    assert not broken.success
    assert part.read_bytes() == good  # not written: the good lines stay
    assert "c.csv" not in partitions_materialized(broken)
    assert not (landing / "c.csv").exists()  # the bad version is in quarantine
    checks = {
        (e.partition, e.check_name): e.passed
        for e in broken.get_asset_check_evaluations()
        if e.asset_key == dg.AssetKey("raw_transactions")
    }
    assert checks[("c.csv", "files_readable")] is False
    said = [r.user_message for x in instance.get_runs(limit=3) for r in instance.all_logs(x.run_id)]
    assert any("the 1 usable line(s) ingested from its earlier version stay" in m for m in said)

    (landing / "c.csv").write_text(LATE.replace("70.0", "7.0"))  # fixed: replaces them
    fixed = run(config, instance, only_new=False)
    assert fixed.success and "c.csv" in partitions_materialized(fixed)
    assert pl.read_parquet(part)["amount"].to_list() == [7.0]


def _customers_stored(
    isolated_env: Path, tmp_path: Path
) -> tuple[str, dg.DagsterInstance, Path, Path]:
    """The small data set ingested once: its config, instance, stored customer table and
    customer landing folder."""
    config = setup_landing(isolated_env, tmp_path)
    instance = dg.DagsterInstance.ephemeral()
    assert run(config, instance).success
    stored = isolated_env / "mini" / "assets" / "raw_customers.parquet"
    return config, instance, stored, isolated_env / "landing" / "mini" / "customers"


def test_a_bad_new_version_of_the_customer_table_keeps_the_stored_one(isolated_env: Path, tmp_path):
    """The customer table landed again in an encoding its config does not read: the run
    fails and the file goes to quarantine, as before, but the stored table is no longer
    overwritten with zero usable rows (every hourly retraining then failed on an empty
    feature table, and the good version was kept nowhere). A fixed version replaces it."""
    from tests.data.test_bad_input import CUSTOMERS

    config, instance, stored, landing = _customers_stored(isolated_env, tmp_path)
    good = stored.read_bytes()
    (landing / "a.csv").write_bytes(CUSTOMERS.replace("monthly", "Überweisung").encode("cp1252"))

    broken = run(config, instance)

    assert not broken.success
    assert stored.read_bytes() == good  # not written: the good table stays
    assert not (landing / "a.csv").exists()  # the bad version is in quarantine
    assert dg.AssetKey("raw_customers") not in {
        m.materialization.asset_key for m in broken.get_asset_materialization_events()
    }
    said = [r.user_message for x in instance.get_runs(limit=3) for r in instance.all_logs(x.run_id)]
    assert any("the 4 usable row(s) ingested from its earlier version stay" in m for m in said)

    (landing / "a.csv").write_text(CUSTOMERS.replace(",34,", ",35,"))  # fixed
    assert run(config, instance).success
    assert 35 in pl.read_parquet(stored)["age"].to_list()


def test_customers_gone_from_a_new_customer_table_are_counted_and_named(
    isolated_env: Path, tmp_path
):
    """The customer export stops listing a customer (one who left): the new table replaces
    the stored one, so that customer left the scores, the sidecar (404) and the training
    set while the landing run said nothing of it. It still does, but says so by count and
    example, with ``customers_gone`` in its metadata."""
    from tests.data.test_bad_input import CUSTOMERS

    config = setup_landing(isolated_env, tmp_path)
    instance = dg.DagsterInstance.ephemeral()
    assert run(config, instance).success
    landing = isolated_env / "landing" / "mini" / "customers"
    (landing / "a.csv").write_text(CUSTOMERS.replace("C4,2023-04-20,two_year,61,12.0\n", ""))

    later = run(config, instance)

    assert later.success
    customers = next(
        m.materialization.metadata
        for m in later.get_asset_materialization_events()
        if m.materialization.asset_key == dg.AssetKey("raw_customers")
    )
    assert customers["customers_gone"].value == 1
    said = [r.user_message for r in instance.all_logs(later.run_id)]
    assert any(
        "raw_customers: 1 of the 4 customers stored before are in none of the customer files "
        "now (e.g. 'C4')" in m
        for m in said
    )


def test_a_customer_table_exported_anew_with_respelled_ids_keeps_the_stored_one(
    isolated_env: Path, tmp_path
):
    """The customer export starts lower-casing the ids: the new table replaced the stored
    one, every customer became a new one without purchases (the stored lines name the old
    ids), and churn_scores, drift and the sidecar followed at once while only the next
    retraining failed. It is refused by name instead, and the stored table stays."""
    from tests.data.test_bad_input import CUSTOMERS

    config, instance, stored, landing = _customers_stored(isolated_env, tmp_path)
    good = stored.read_bytes()
    (landing / "a.csv").write_text(CUSTOMERS.replace("C", "c"))
    (landing / "b.csv").write_text(
        "customer_id,signup_date,plan,age,monthly_fee\nC9,2023-05-01,monthly,40,10.0\n"
    )

    later = run(config, instance)

    assert not later.success
    refused = {
        e.check_name: e.description
        for e in later.get_asset_check_evaluations()
        if e.asset_key == dg.AssetKey("raw_customers") and not e.passed
    }
    assert refused["files_readable"].startswith(
        "a.csv: 4 of the 4 customer ids in this file are in the customer table only with "
        "another letter case (file: 'c1'; customers: 'C1')"
    )
    assert stored.read_bytes() == good
    assert quarantined_files(isolated_env, "raw_customers") == ["a.csv"]
    assert sorted(p.name for p in landing.iterdir()) == ["b.csv"]


def test_customers_of_a_refused_customer_file_stay_when_another_file_lands(
    isolated_env: Path, tmp_path
):
    """a.csv landed again in an encoding the config does not read: refused, the stored table
    kept. Then b.csv lands with one new customer: the table was read from b.csv alone, so
    the customers of a.csv (its good version stored, its bad one in quarantine) all left the
    features, the scores and the sidecar. They stay until a fixed a.csv lands."""
    from tests.data.test_bad_input import CUSTOMERS

    config = setup_landing(isolated_env, tmp_path)
    instance = dg.DagsterInstance.ephemeral()
    assert run(config, instance).success
    landing = isolated_env / "landing" / "mini" / "customers"
    (landing / "a.csv").write_bytes(CUSTOMERS.replace("monthly", "Überweisung").encode("cp1252"))
    assert not run(config, instance).success
    new = "customer_id,signup_date,plan,age,monthly_fee\nC9,2023-05-01,monthly,40,10.0\n"
    (landing / "b.csv").write_text(new)

    later = run(config, instance)

    assert later.success
    stored = pl.read_parquet(isolated_env / "mini" / "assets" / "raw_customers.parquet")
    assert sorted(stored["customer_id"]) == ["C1", "C2", "C3", "C4", "C9"]
    assert later.output_for_node("current_features").height == 5
    said = [r.user_message for r in instance.all_logs(later.run_id)]
    assert any("raw_customers: 4 stored customer(s) of a.csv stay" in m for m in said)

    (landing / "a.csv").write_text(CUSTOMERS.replace("C4,2023-04-20,two_year,61,12.0\n", ""))
    fixed = run(config, instance)  # the fixed version replaces them: C4 is gone now
    assert fixed.success
    stored = pl.read_parquet(isolated_env / "mini" / "assets" / "raw_customers.parquet")
    assert sorted(stored["customer_id"]) == ["C1", "C2", "C3", "C9"]


def test_a_renamed_ingested_file_is_set_aside_as_a_copy(isolated_env: Path, tmp_path):
    """c.csv ingested, then renamed d.csv (its original gone from the landing zone): d.csv
    is the same bytes as a file whose lines count, so it is set aside as a copy beside its
    original would be; its lines counted twice before (monetary totals doubled)."""
    config = setup_landing(isolated_env, tmp_path, extra={"transactions/c.csv": LATE})
    instance = dg.DagsterInstance.ephemeral()
    assert run(config, instance).success
    landing = isolated_env / "landing" / "mini" / "transactions"
    (landing / "c.csv").rename(landing / "d.csv")

    renamed = run(config, instance, only_new=False)

    assert not renamed.success
    failed = failed_checks(renamed)
    assert "the same bytes as landing file 'c.csv', ingested earlier (partition 'c.csv')" in (
        failed["d.csv"] or ""
    )
    assert not (landing / "d.csv").exists()  # set aside, in quarantine
    assert usable_lines(isolated_env).filter(pl.col("invoice_id") == "I20").height == 1
    # new lines under a new name are no copy
    (landing / "e.csv").write_text(LATE.replace("I20", "I21"))
    assert run(config, instance, only_new=True).success


def test_the_same_lines_exported_again_are_set_aside_as_a_copy(isolated_env: Path, tmp_path):
    """c.csv ingested, then its lines re-sent as d.csv.gz with Windows line ends and every
    field quoted (other bytes, the same lines): set aside as a copy, found by the sha256 of
    its typed lines; they counted twice before. One changed amount makes a file no copy."""
    import gzip

    config = setup_landing(isolated_env, tmp_path, extra={"transactions/c.csv": LATE})
    instance = dg.DagsterInstance.ephemeral()
    assert run(config, instance).success
    landing = isolated_env / "landing" / "mini" / "transactions"
    quoted = "\r\n".join(",".join(f'"{v}"' for v in line.split(",")) for line in LATE.splitlines())
    (landing / "d.csv.gz").write_bytes(gzip.compress(quoted.encode() + b"\r\n"))

    again = run(config, instance, only_new=True)

    assert not again.success
    failed = failed_checks(again)
    assert "the same lines as landing file 'c.csv', ingested earlier (partition 'c.csv')" in (
        failed["d.csv.gz"] or ""
    )
    assert usable_lines(isolated_env).filter(pl.col("invoice_id") == "I20").height == 1
    (landing / "e.csv").write_text(LATE.replace("70.0", "70.5"))  # other lines: no copy
    assert run(config, instance, only_new=True).success


def test_a_copy_set_aside_materializes_nothing_and_refreshes_no_features(
    isolated_env: Path, tmp_path
):
    """d.csv lands with the bytes of the ingested c.csv: set aside as a copy. Its empty
    partition was materialized (no usable line), which the landing sensor took for an
    ingested file the features were behind, and asked for a refresh of current features and
    drift (then the scores). Now nothing is materialized: an observation of its partition
    names the file it copies, and "Materialize all" over every partition goes on past it."""
    from churn_assets.sensors import _refresh_behind_features

    config = setup_landing(isolated_env, tmp_path, extra={"transactions/c.csv": LATE})
    instance = dg.DagsterInstance.ephemeral()
    assert run(config, instance).success
    landing = isolated_env / "landing" / "mini" / "transactions"
    (landing / "d.csv").write_text(LATE)

    copied = run(config, instance, only_new=True)

    assert not copied.success
    assert "the same bytes as landing file 'c.csv', whose lines count" in (
        failed_checks(copied)["d.csv"] or ""
    )
    assert partitions_materialized(copied) == []
    assert "d.csv" not in instance.get_materialized_partitions(dg.AssetKey("raw_transactions"))
    (seen,) = instance.fetch_observations(
        dg.AssetRecordsFilter(
            asset_key=dg.AssetKey("raw_transactions"), asset_partitions=["d.csv"]
        ),
        limit=5,
    ).records
    assert seen.asset_observation.metadata["copy_of"].value == "c.csv"
    assert seen.asset_observation.metadata["usable_rows"].value == 0
    assert _refresh_behind_features(instance) is None  # no refresh asked for
    assert not (isolated_env / "mini" / "assets" / "raw_transactions" / "d.csv.parquet").exists()

    job, _ = graph(config)
    again = job.execute_in_process(
        instance=instance,
        asset_selection=[dg.AssetKey("raw_transactions")],
        partition_key="d.csv",
        raise_on_error=False,
    )
    assert again.success and partitions_materialized(again) == []
    checks = again.get_asset_check_evaluations()
    assert len(checks) == 3
    assert all("was set aside as a copy of 'c.csv'" in (c.description or "") for c in checks)


def test_a_copy_set_aside_is_not_named_as_a_partition_left_out(isolated_env: Path, tmp_path):
    """A copy set aside materializes no partition, by design (its twin's lines count). Every
    later run reading raw_transactions warned "1 partition(s) not materialized, left out",
    as for a file whose run failed, on every step of every landing and retraining run from
    then on; the set-aside copy is no longer named, a partition that lacks its table is."""
    config = setup_landing(isolated_env, tmp_path, extra={"transactions/c.csv": LATE})
    instance = dg.DagsterInstance.ephemeral()
    assert run(config, instance).success
    landing = isolated_env / "landing" / "mini" / "transactions"
    (landing / "d.csv").write_text(LATE)
    assert not run(config, instance, only_new=True).success  # d.csv set aside

    def left_out(result) -> list[str]:
        return [
            e.user_message
            for e in instance.all_logs(result.run_id)
            if "not materialized, left out" in e.user_message
        ]

    job, _ = graph(config)
    features = dg.AssetKey("current_features")
    again = job.execute_in_process(instance=instance, asset_selection=[features])
    assert again.success
    assert left_out(again) == []
    # a partition the instance knows whose table is missing is still named
    (isolated_env / "mini" / "assets" / "raw_transactions" / "c.csv.parquet").unlink()
    again = job.execute_in_process(instance=instance, asset_selection=[features])
    assert [m.split(": ", 1)[1] for m in left_out(again)] == [
        "1 partition(s) not materialized, left out: c.csv"
    ]


def test_a_partition_whose_file_left_the_landing_zone_keeps_its_stored_lines(
    isolated_env: Path, tmp_path
):
    """c.csv ingested, then cleared from the landing zone (retention; a quarantined or
    set-aside file alike): materializing its partition again (the UI's "Materialize all"
    over every partition, a backfill) failed, and so did every asset after it. It now
    gives the stored lines unchanged, its checks saying why they were not run again; a key
    that never had a file or stored lines fails, saying so."""
    from churn_assets.partitions import TRANSACTION_FILES

    config = setup_landing(isolated_env, tmp_path, extra={"transactions/c.csv": LATE})
    instance = dg.DagsterInstance.ephemeral()
    assert run(config, instance).success
    part = isolated_env / "mini" / "assets" / "raw_transactions" / "c.csv.parquet"
    before = pl.read_parquet(part)
    (isolated_env / "landing" / "mini" / "transactions" / "c.csv").unlink()
    job, _ = graph(config)

    def materialize(key: str):
        return job.execute_in_process(
            instance=instance,
            asset_selection=[dg.AssetKey("raw_transactions")],
            partition_key=key,
            raise_on_error=False,
        )

    again = materialize("c.csv")
    assert again.success and partitions_materialized(again) == ["c.csv"]
    assert pl.read_parquet(part).equals(before)
    checks = again.get_asset_check_evaluations()
    assert len(checks) == 3 and all(c.passed for c in checks)
    assert all("not checked again: landing file 'c.csv' has left" in c.description for c in checks)

    # a file refused whole when ingested (every stored line quarantined): re-executing its
    # failed run turned its three blocking checks green; they stay failed, as warnings
    before.with_columns(pl.lit(True).alias("_quarantined")).write_parquet(part)
    refused = materialize("c.csv")
    assert refused.success  # nothing downstream is blocked by a warning
    checks = refused.get_asset_check_evaluations()
    assert len(checks) == 3 and not any(c.passed for c in checks)
    assert all(c.severity == dg.AssetCheckSeverity.WARN for c in checks)
    assert all("the file was refused then" in c.description for c in checks)

    instance.add_dynamic_partitions(TRANSACTION_FILES.name, ["never.csv"])
    never = materialize("never.csv")
    assert not never.success
    (failure,) = [e for e in never.all_events if e.event_type_value == "STEP_FAILURE"]
    assert "no landing file 'never.csv'" in failure.event_specific_data.error.cause.message
    assert "nothing stored for it" in failure.event_specific_data.error.cause.message


def assert_same_as_built_from_every_line(config: str, result) -> None:
    """current_features equals the table built from every stored line at once, with the
    category columns chosen from every line."""
    import datetime as dt

    from churn_assets.lib.datasets import load_dataset_config
    from churn_assets.lib.feature_sets import features_at, reference_categories, usable

    cfg = load_dataset_config(config)
    raw = pl.concat(
        [pl.read_parquet(p) for p in sorted(Path(result_storage(config)).glob("*.parquet"))]
    )
    lines, _ = usable(raw)
    customers, _ = usable(result.output_for_node("raw_customers"))
    cutoff = lines["timestamp"].max().date() + dt.timedelta(days=1)
    expected = features_at(
        cfg,
        customers,
        lines,
        cutoff,
        with_labels=False,
        categories=reference_categories(cfg, lines),
    )
    got = result.output_for_node("current_features")
    assert got.sort("customer_id").equals(expected.sort("customer_id"))


def result_storage(config: str) -> str:
    from churn_assets.lib.settings import ChurnSettings

    return f"{ChurnSettings().resolved_storage_url}/mini/assets/raw_transactions"


def test_a_date_range_backfill_names_the_files_with_a_line_in_it(isolated_env: Path, tmp_path):
    """`churn backfill --since --until` re-ingests a date range: every written partition
    (landing file) with a line on one of those days, from the partitions' own timestamps."""
    import json

    from click.testing import CliRunner

    from churn_assets.cli import main

    config = setup_landing(isolated_env, tmp_path, extra={"transactions/late.csv": LATE})
    assert run(config, dg.DagsterInstance.ephemeral()).success  # a.csv: Jan 2 - Mar 12

    def dry_run(since: str, until: str):
        return CliRunner().invoke(
            main,
            ["backfill", "--since", since, "--until", until, "--dataset", config]
            + ["--dry-run", "--json"],
        )

    def keys(since: str, until: str) -> list[str]:
        out = dry_run(since, until)
        assert out.exit_code == 0, out.output
        report = json.loads(out.output)
        assert report["launched"] is False and report["location"] == "mini"
        return [f["key"] for f in report["files"]]

    assert keys("2024-03-15", "2024-03-31") == ["late.csv"]
    assert keys("2024-03-12", "2024-03-20") == ["a.csv", "late.csv"]  # both ends inclusive
    assert keys("2024-01-01", "2024-01-02") == ["a.csv"]
    (a,) = json.loads(dry_run("2024-01-01", "2024-01-02").output)["files"]
    assert a["lines"] == 8 and a["first"].startswith("2024-01-02")
    empty = dry_run("2025-01-01", "2025-12-31")
    assert empty.exit_code == 1
    assert "no ingested file of mini has a line from 2025-01-01 to 2025-12-31" in empty.output
    backwards = dry_run("2024-03-01", "2024-02-01")
    assert backwards.exit_code == 2 and "is before --since" in backwards.output

    # a file no longer in the landing zone (removed, or in quarantine) cannot be ingested
    # again: named, not queued (its run failed on every backfill)
    (isolated_env / "landing" / "mini" / "transactions" / "late.csv").unlink()
    report = json.loads(dry_run("2024-03-12", "2024-03-20").output)
    assert [f["key"] for f in report["files"]] == ["a.csv"]
    assert report["not_in_landing_zone"] == ["late.csv"]
    text = CliRunner().invoke(
        main,
        ["backfill", "--since", "2024-03-12", "--until", "2024-03-20", "--dataset", config]
        + ["--dry-run"],
    )
    assert "left out, no longer in the landing zone (removed, or in quarantine): late.csv" in (
        text.output
    )
    only_gone = dry_run("2024-03-15", "2024-03-31")
    assert only_gone.exit_code == 1 and "gone: late.csv" in only_gone.output

    # a snapshot data set has no files to re-ingest by date: said so, not "no ingested
    # file has a line" as if the dates were wrong
    snapshot = CliRunner().invoke(
        main, ["backfill", "--since", "2024-01-01", "--until", "2024-01-02", "--dataset", "telco"]
    )
    assert snapshot.exit_code == 1 and "has no transaction files (a snapshot)" in snapshot.output


def test_backfill_finds_the_workspace_of_the_compose_image_layout(tmp_path, monkeypatch):
    """`churn backfill` run in the compose image: DAGSTER_HOME /opt/dagster/home holds only
    dagster.yaml, the working directory no workspace.yaml; the workspace is beside the home.
    Without any, the error names where it looked and the option."""
    import click
    import pytest

    from churn_assets.cli import _workspace_file

    home = tmp_path / "opt" / "dagster" / "home"
    home.mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(click.ClickException, match="no workspace.yaml found .* --workspace"):
        _workspace_file(home)
    beside = home.parent / "workspace.yaml"
    beside.write_text("load_from: []\n")
    assert _workspace_file(home) == beside
    (tmp_path / "workspace.yaml").write_text("load_from: []\n")  # a checkout: its own first
    assert _workspace_file(home) == Path("workspace.yaml")
    (home / "workspace.yaml").write_text("load_from: []\n")  # written by `churn dev`
    assert _workspace_file(home) == home / "workspace.yaml"


def test_raw_transactions_without_a_partition_says_to_pick_one(isolated_env: Path, tmp_path):
    """Launched without a partition (a job run from the launchpad), the step failed with
    Dagster's "Cannot access partition_key for a non-partitioned run"."""
    config = setup_landing(isolated_env, tmp_path)
    job, _ = graph(config)
    result = job.execute_in_process(
        instance=dg.DagsterInstance.ephemeral(),
        asset_selection=[dg.AssetKey("raw_transactions")],
        raise_on_error=False,
    )
    assert not result.success
    (failure,) = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    said = failure.event_specific_data.error.to_string()
    assert "has one partition per landing file: launch it with a partition" in said


def test_partitions_read_with_an_earlier_transactions_config_are_named(
    isolated_env: Path, tmp_path
):
    """amount_scale added to the config while files were ingested: a partition is written
    once, so the earlier files kept their reading and the history mixed two units without a
    word. The features now name those partitions and say how to re-ingest them; once
    re-ingested, nothing is said."""
    config = setup_landing(isolated_env, tmp_path, extra={"transactions/c.csv": LATE})
    instance = dg.DagsterInstance.ephemeral()
    assert run(config, instance).success
    path = Path(config)
    path.write_text(
        path.read_text().replace("transactions:\n", "transactions:\n  amount_scale: 0.01\n", 1)
    )
    landing = isolated_env / "landing" / "mini" / "transactions"
    (landing / "e.csv").write_text(LATE.replace("I20", "I21"))

    mixed = run(config, instance, only_new=True)

    assert mixed.success
    assert features_metadata(mixed)["partitions_of_an_earlier_config"].value == ["a.csv", "c.csv"]
    said = [r.user_message for r in instance.all_logs(mixed.run_id)]
    assert any("2 transaction partition(s) were read with an earlier" in m for m in said)

    again = run(config, instance, only_new=False)  # every file read again with the edit
    assert "partitions_of_an_earlier_config" not in features_metadata(again)


def features_metadata(result) -> dict:
    """The metadata of the run's current_features materialization."""
    (event,) = [
        m
        for m in result.get_asset_materialization_events()
        if m.materialization.asset_key == dg.AssetKey("current_features")
    ]
    return event.materialization.metadata


def test_an_interrupted_ingestion_stops_before_the_next_file(
    isolated_env: Path, tmp_path, monkeypatch
):
    """Ctrl-C (or SIGTERM) during `churn demo` failed the file being ingested and the loop
    went on with the next ones, one run each: 2,001 files kept it busy for minutes after
    the signal. The first interrupted run now stops the rest."""
    from dagster._core.errors import DagsterExecutionInterruptedError

    import churn_assets.partitions as partitions

    @dg.op
    def stopped() -> None:
        raise DagsterExecutionInterruptedError()

    @dg.job
    def job() -> None:
        stopped()

    assert partitions.interrupted(job.execute_in_process(raise_on_error=False))
    assert not partitions.interrupted(dg.materialize([dg.asset(lambda: 1, name="fine")]))

    config = setup_landing(isolated_env, tmp_path, extra={"transactions/c.csv": LATE})
    monkeypatch.setattr(partitions, "interrupted", lambda result: True)  # the first is stopped
    instance = dg.DagsterInstance.ephemeral()
    with pytest.raises(KeyboardInterrupt, match="interrupted while ingesting a.csv"):
        run(config, instance)
    assert len(instance.get_runs()) == 1  # c.csv was not started


def test_files_ingested_again_unchanged_are_no_new_data_for_retraining(
    isolated_env: Path, tmp_path
):
    """Landing files moved away and landed again as they were (or asked for again by an
    instance that lost its history) are ingested again: the same tables are written, with
    the metadata ``unchanged``, and the hourly schedule retrains nothing on them. Before, a
    rewrite of the same lines counted as new data and started a retraining on data the
    deployed version was trained on. A file with other lines is new data."""
    from churn_assets.partitions import run_in_process
    from tests.code.test_schedules_sensors import land, schedule_tick

    raw = [dg.AssetKey("raw_customers"), dg.AssetKey("raw_transactions")]
    config = setup_landing(isolated_env, tmp_path)
    job, platform = graph(config)
    with dg.instance_for_test() as instance:
        assert run_in_process(job, instance, platform, raw).success
        land(instance, "training_set", "deployed_model_version")  # a completed retraining

        again = run_in_process(job, instance, platform, raw, only_new=False)

        assert again.success and partitions_materialized(again) == ["a.csv"]
        flags = {
            m.materialization.asset_key.to_user_string(): m.materialization.metadata.get(
                "unchanged"
            )
            for m in again.get_asset_materialization_events()
        }
        assert {k: getattr(v, "value", None) for k, v in flags.items()} == {
            "raw_customers": True,
            "raw_transactions": True,
        }
        tick = schedule_tick(instance, 12)
        assert not tick.run_requests
        assert tick.skip_message.startswith("no new data since the last completed training")

        (isolated_env / "landing" / "mini" / "transactions" / "a.csv").write_text(
            TRANSACTIONS.replace("2024-01", "2024-02", 1)
        )
        changed = run_in_process(job, instance, platform, raw, only_new=False)
        assert changed.success
        (request,) = schedule_tick(instance, 13).run_requests
        assert request.tags["churn/reason"] == "new data since the last training: raw_transactions"
