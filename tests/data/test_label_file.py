"""Snapshot labels in a file of their own (`labels.file`): joined to the customer table by
id; customers without a label row are scored, not trained on (with `allow_unlabelled`);
repeated or unmatched ids get an error that names them; a changed label file is landing
data like the customer table."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import xlsxwriter

from churn_assets.lib.datasets import DatasetConfigError, load_dataset_config
from churn_assets.lib.ingest import ingest_customers
from churn_assets.lib.landing_cursor import GENERATION
from tests.helpers import run_graph

CONFIG = """
name: members
customers:
  path: members.csv
  id_column: msno
  attributes:
    - {{name: age, source: bd, type: integer}}
    - {{name: auto_renew, source: is_auto_renew, type: integer}}
labels:
  source: columns
  file: {{path: {labels}{extra}}}
  churned_column: is_churn
  churned_positive: ["1"]
{more}
"""


def _members(root: Path, n: int = 600, labelled: float = 0.8, seed: int = 0) -> pl.DataFrame:
    """A members table and the labels of most members in their own file; with a few label
    rows for people who are not members (yet)."""
    rng = np.random.default_rng(seed)
    auto = rng.random(n) < 0.7
    churn = (rng.random(n) < np.where(auto, 0.1, 0.5)).astype(int)
    ids = [f"m{i:05d}" for i in range(n)]
    pl.DataFrame(
        {"msno": ids, "bd": rng.integers(15, 60, n), "is_auto_renew": auto.astype(int)}
    ).write_csv(root / "members.csv")
    labels = pl.DataFrame({"msno": ids, "is_churn": churn}).sample(
        fraction=labelled, seed=seed, shuffle=True
    )
    return pl.concat([labels, pl.DataFrame({"msno": ["x1", "x2"], "is_churn": [0, 1]})])


def _config(root: Path, labels: str = "train.csv", extra: str = "", more: str = "") -> Path:
    path = root / "members.yaml"
    path.write_text(CONFIG.format(labels=labels, extra=extra, more=more))
    return path


def test_labels_are_joined_by_id_and_members_without_one_are_blank(tmp_path):
    labels = _members(tmp_path)
    labels.write_csv(tmp_path / "train.csv")
    cfg = load_dataset_config(str(_config(tmp_path, more="  allow_unlabelled: true")))
    res = ingest_customers(cfg, str(tmp_path))
    assert res.files == ["members.csv", "train.csv"] and res.file_problems == []
    assert res.label_rows == (480, 482)  # the two non-members' rows are not used
    frame = res.frame
    assert frame.height == 600 and frame.columns[-2:] == ["_source_file", "_parse_errors"]
    assert frame["churned"].null_count() == 120
    expected = dict(labels.iter_rows())
    got = dict(frame.drop_nulls("churned").select("customer_id", "churned").iter_rows())
    assert got == {k: v for k, v in expected.items() if k.startswith("m")}


def test_a_workbook_label_file_with_its_own_id_column_and_a_value_label(tmp_path):
    labels = _members(tmp_path, labelled=1.0).rename({"msno": "Member"})
    book = xlsxwriter.Workbook(str(tmp_path / "outcomes.xlsx"))
    sheet = book.add_worksheet("Outcomes")
    sheet.write_row(0, 0, ["Member", "is_churn", "Revenue"])
    for i, (member, churned) in enumerate(labels.iter_rows(), start=1):
        sheet.write_row(i, 0, [member, churned, "unknown" if member == "m00007" else 10.5 * i])
    book.close()
    path = _config(tmp_path, "outcomes.xlsx", extra=", id_column: Member")
    path.write_text(path.read_text() + "  total_sales_column: Revenue\n")
    res = ingest_customers(load_dataset_config(str(path)), str(tmp_path))
    assert res.frame["churned"].null_count() == 0 and res.label_rows == (600, 602)
    # the bad value is the label file's: its row names that file, for quarantine
    assert res.parse_errors == {"total_sales": 1}
    bad = res.frame.filter(pl.col("_parse_errors").is_not_null())
    assert bad["customer_id"].to_list() == ["m00007"]
    assert bad["_source_file"].to_list() == ["outcomes.xlsx"]


def test_an_id_with_two_label_rows_is_refused_naming_it(tmp_path):
    labels = _members(tmp_path)
    pl.concat([labels, labels.head(2)]).write_csv(tmp_path / "train.csv")
    cfg = load_dataset_config(str(_config(tmp_path)))
    with pytest.raises(ValueError, match=r"train.csv: 2 customer id\(s\) have more than one"):
        ingest_customers(cfg, str(tmp_path))


def test_a_label_file_naming_no_customer_is_refused_with_examples(tmp_path):
    labels = _members(tmp_path).with_columns(("X-" + pl.col("msno")).alias("msno"))
    labels.write_csv(tmp_path / "train.csv")
    cfg = load_dataset_config(str(_config(tmp_path)))
    with pytest.raises(ValueError, match=r"none of the 482 customer ids in the label file.*'X-"):
        ingest_customers(cfg, str(tmp_path))
    # the same ids in upper case: the message names the spelling
    labels = _members(tmp_path).with_columns(pl.col("msno").str.to_uppercase())
    labels.write_csv(tmp_path / "train.csv")
    with pytest.raises(ValueError, match=r"only with another letter case \(label file: 'M0"):
        ingest_customers(cfg, str(tmp_path))


def test_label_ids_that_lost_their_leading_zeros_are_refused(tmp_path):
    """Zero-padded member ids, and a label file that went through a spreadsheet ('00042'
    became '42'): refused with an example of each spelling, instead of those members
    silently training without a label (even with allow_unlabelled)."""
    labels = _members(tmp_path)
    members = pl.read_csv(tmp_path / "members.csv").with_columns(
        ("000" + pl.int_range(pl.len()).cast(pl.String)).alias("msno")
    )
    members.write_csv(tmp_path / "members.csv")
    stripped = labels.with_row_index().select(
        pl.col("index").cast(pl.String).alias("msno"), "is_churn"
    )
    stripped.write_csv(tmp_path / "train.csv")
    cfg = load_dataset_config(str(_config(tmp_path, more="  allow_unlabelled: true")))
    with pytest.raises(ValueError, match=r"only with other leading zeros \(label file: '0'"):
        ingest_customers(cfg, str(tmp_path))
    # some ids padded and the rest not: most of the unmatched ones are the padded ones
    mixed = stripped.with_columns(
        pl.when(pl.col("msno").str.len_chars() < 3)
        .then("000" + pl.col("msno"))
        .otherwise(pl.col("msno"))
        .alias("msno")
    )
    mixed.write_csv(tmp_path / "train.csv")
    with pytest.raises(ValueError, match="leading zeros"):
        ingest_customers(cfg, str(tmp_path))


def test_a_label_file_needs_snapshot_labels(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(
        "name: c\ntransactions: {path: t.csv, customer_id: c, timestamp: t, amount: a}\n"
        "labels:\n  source: transactions\n  file: {path: train.csv}\n"
    )
    with pytest.raises(DatasetConfigError, match="labels.file needs labels.source 'columns'"):
        load_dataset_config(str(path))


def test_the_graph_trains_on_labelled_members_and_scores_all(isolated_env, tmp_path):
    _members(tmp_path, n=1500).write_csv(tmp_path / "train.csv")
    config = _config(tmp_path, labels=str(tmp_path / "train.csv"), more="  allow_unlabelled: true")
    config.write_text(config.read_text().replace("members.csv", str(tmp_path / "members.csv")))
    run = run_graph(
        str(config), ["raw_customers", "customer_features", "current_features", "training_set"]
    )
    assert run.result.success
    meta = {
        m.materialization.asset_key.to_user_string(): m.materialization.metadata
        for m in run.result.get_asset_materialization_events()
    }
    matched = meta["raw_customers"]["label_file_rows_matched"].value
    assert matched == "1,200 of 1,202 label rows name a customer of the table"
    assert meta["training_set"]["dagster/row_count"].value == 1200
    assert meta["current_features"]["dagster/row_count"].value == 1500


def test_a_changed_label_file_is_new_landing_data(isolated_env, tmp_path, monkeypatch):
    from tests.code.test_schedules_sensors import tick

    _members(tmp_path).write_csv(tmp_path / "train.csv")
    config = _config(tmp_path, labels=str(tmp_path / "train.csv"))
    config.write_text(config.read_text().replace("members.csv", str(tmp_path / "members.csv")))
    monkeypatch.setenv("CHURN_DATASET", str(config))
    result, cursor = tick(None)
    assert set(json.loads(cursor)) - {GENERATION} == {
        str(tmp_path / "members.csv"),
        str(tmp_path / "train.csv"),
    }
    (tmp_path / "o").mkdir()
    _members(tmp_path / "o", seed=1).write_csv(tmp_path / "train.csv")  # new outcomes arrive
    result, cursor = tick(cursor)
    (request,) = result.run_requests
    assert request.job_name == "customers_features_drift"
    assert request.tags["churn/new_files"] == "train.csv"


def test_draft_config_with_a_labels_file_joins_it_and_judges_leaks_across_files(tmp_path):
    from churn_assets.lib.config_draft import DraftError, draft_config

    labels = _members(tmp_path)
    labels.write_csv(tmp_path / "train.csv")
    members = pl.read_csv(tmp_path / "members.csv")
    # a column of the members file that is the outcome itself, found only through the join
    outcome = dict(labels.iter_rows())
    members.with_columns(cancelled=pl.col("msno").replace_strict(outcome, default=None)).write_csv(
        tmp_path / "members.csv"
    )
    text = draft_config(
        str(tmp_path / "members.csv"), label="is_churn", labels_file=str(tmp_path / "train.csv")
    )
    assert 'id_column: "msno"' in text  # the one column both files have
    assert "  file:\n    path: " in text and "allow_unlabelled: true   # CHECK" in text
    assert '# left out: "cancelled": CHECK: predicts the label almost perfectly alone' in text
    out = tmp_path / "draft.yaml"
    out.write_text(text)
    res = ingest_customers(load_dataset_config(str(out)), str(tmp_path))
    assert res.label_rows == (480, 482) and res.parse_errors == {}
    with pytest.raises(DraftError, match="--labels-file goes with --label"):
        draft_config(str(tmp_path / "members.csv"), timestamp="bd", labels_file="x.csv")
