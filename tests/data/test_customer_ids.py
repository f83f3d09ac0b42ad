"""Transactions whose customer ids the customer table does not have: counted in
customer_features' metadata, and refused by name when none matches (the two files write ids
differently), instead of every customer silently looking like one who never bought."""

from __future__ import annotations

import polars as pl
import pytest

from churn_assets.lib.feature_sets import customer_id_match
from tests.data.test_bad_input import TRANSACTIONS, run_graph, setup_landing


def test_matched_ids_are_counted():
    customers = pl.DataFrame({"customer_id": ["C1", "C2", "C3"]})
    tx = pl.DataFrame({"customer_id": ["C1", "C1", "C2", "X9", None]})
    assert customer_id_match(customers, tx.lazy()) == (2, 3)


def test_no_matching_id_names_examples_of_both():
    customers = pl.DataFrame({"customer_id": ["C001", "C002"]})
    tx = pl.DataFrame({"customer_id": ["1", "2", "2"]})
    with pytest.raises(ValueError) as err:
        customer_id_match(customers, tx)
    assert str(err.value).startswith(
        "none of the 2 customer ids in the transactions is in the customer table "
        "(transactions: '1', '2'; customers: 'C001', 'C002')"
    )


def test_ids_that_match_only_with_other_leading_zeros_are_refused_by_example():
    """'0123' in the customer table, '123' in the transactions: a partial match would leave
    those customers without purchases; refused with an example of each spelling."""
    customers = pl.DataFrame({"customer_id": ["1000", "1001", "0123", "0456"]})
    tx = pl.DataFrame({"customer_id": ["1000", "123", "456", "456"]})
    with pytest.raises(ValueError) as err:
        customer_id_match(customers, tx)
    assert str(err.value).startswith(
        "2 of the 3 customer ids in the transactions are in the customer table only with "
        "other leading zeros (transactions: '123'; customers: '0123')"
    )
    unrelated = pl.DataFrame({"customer_id": ["1000", "1000", "1001", "999"]})
    assert customer_id_match(customers, unrelated) == (2, 3)


def test_ids_that_match_only_in_another_letter_case_are_refused_by_example():
    """E-mail ids written 'Anna@Example.com' in the members file and lower-cased in the
    payments: 39% of the customers silently counted as never having paid (and nothing
    deployed); refused with an example of each spelling."""
    customers = pl.DataFrame(
        {"customer_id": ["anna@example.com", "Bob@Example.com", "Cy@X.org", "dee@x.org"]}
    )
    tx = pl.DataFrame({"customer_id": ["anna@example.com", "bob@example.com", "cy@x.org"]})
    with pytest.raises(ValueError) as err:
        customer_id_match(customers, tx)
    assert str(err.value).startswith(
        "2 of the 3 customer ids in the transactions are in the customer table only with "
        "another letter case (transactions: 'bob@example.com'; customers: 'Bob@Example.com')"
    )
    # a few ids of other customers, in whatever case, are no spelling problem
    others = pl.DataFrame({"customer_id": ["anna@example.com", "dee@x.org", "zed@x.org"]})
    assert customer_id_match(customers, others) == (2, 3)


def test_the_graph_reports_the_match_and_refuses_none(isolated_env, tmp_path):
    config = setup_landing(isolated_env, tmp_path)
    run = run_graph(config)
    assert run.result.success
    features = [
        m.materialization
        for m in run.result.get_asset_materialization_events()
        if m.materialization.asset_key.to_user_string() == "customer_features"
    ][0]
    assert features.metadata["transaction_customers_in_customer_table"].value == "4 of 4"

    lowered = TRANSACTIONS.replace(",C", ",c")  # the same customers, written in lower case
    (tmp_path / "b").mkdir()
    config = setup_landing(isolated_env, tmp_path / "b", transactions=lowered)
    run = run_graph(config)
    assert not run.result.success
    assert "customer_features" not in {
        m.materialization.asset_key.to_user_string()
        for m in run.result.get_asset_materialization_events()
    }
    # the customer table stored by the first run already names them: the file is refused
    # as it lands (on a first ingestion, customer_features refuses the same in its words)
    refused = [e for e in run.result.get_asset_check_evaluations() if not e.passed]
    assert any(
        "4 of the 4 customer ids in this file are in the customer table only with "
        "another letter case" in (e.description or "")
        for e in refused
    )


def test_row_ids_number_the_rows_over_the_files_in_name_order(tmp_path):
    """A table without an id column (``row_ids: true``): the ids are the row numbers, over
    the files in name order."""
    from churn_assets.lib.datasets import load_dataset_config
    from churn_assets.lib.ingest import ingest_customers

    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "b.csv").write_text("plan,churn\npro,1\nbasic,0\n")
    (tmp_path / "c" / "a.csv").write_text("plan,churn\nbasic,0\npro,1\n")
    config = tmp_path / "x.yaml"
    config.write_text(
        "name: x\ncustomers:\n  path: c/\n  row_ids: true\n  attributes:\n"
        "    - {name: plan, type: categorical}\n"
        "labels: {source: columns, churned_column: churn}\n"
    )
    res = ingest_customers(load_dataset_config(str(config)), str(tmp_path))
    frame = res.frame
    assert frame["customer_id"].to_list() == ["1", "2", "3", "4"]
    assert frame["plan"].to_list() == ["basic", "pro", "pro", "basic"]
    assert frame["_source_file"].to_list() == ["a.csv", "a.csv", "b.csv", "b.csv"]


def test_no_matching_id_because_of_leading_zeros_says_so():
    """Every customer-table id zero-padded, no transaction id padded: the error names the
    leading zeros, not only 'none matches'."""
    customers = pl.DataFrame({"customer_id": ["000048", "100139"]})
    tx = pl.DataFrame({"customer_id": ["48", "48"]})
    with pytest.raises(ValueError, match=r"only with other leading zeros \(transactions: '48'"):
        customer_id_match(customers, tx)


def test_a_parquet_table_with_integer_ids_and_a_text_column_is_read(tmp_path):
    """Typed files keep their id type: the totals-row search once ran a text match on an
    integer id column ('expected String type, got: i64') and the run failed, naming
    nothing."""
    from churn_assets.lib.datasets import load_dataset_config
    from churn_assets.lib.ingest import ingest_customers

    pl.DataFrame(
        {
            "customer_id": [101, 102, 103, None],
            "plan": ["basic", "pro", None, None],
            "x": [1.0, 2.0, 3.0, None],
            "churn": ["Yes", "No", "No", None],
        }
    ).write_parquet(tmp_path / "members.parquet")
    (tmp_path / "members.yaml").write_text(
        "name: intids\n"
        "customers:\n  path: members.parquet\n  format: parquet\n  id_column: customer_id\n"
        "  attributes:\n    - {name: plan, type: categorical}\n    - {name: x, type: numeric}\n"
        'labels:\n  source: columns\n  churned_column: churn\n  churned_positive: ["Yes"]\n'
    )
    res = ingest_customers(load_dataset_config(str(tmp_path / "members.yaml")), str(tmp_path))
    assert res.frame["customer_id"].to_list() == ["101", "102", "103"]
    assert res.empty_rows == 1


def test_lines_of_customers_missing_from_the_customer_table_are_counted(isolated_env, tmp_path):
    """Two lines of a customer the customer table lacks (C9): not in any feature, so counted
    in customer_features' metadata and said in a warning (they were dropped without a word
    unless fewer than half the customers matched); current_features, which the landing runs
    build, counts them in the files it reads."""
    unknown = TRANSACTIONS + "I9,C9,2024-02-01 10:00:00,70.0\nI10,C9,2024-02-02 10:00:00,5.0\n"
    config = setup_landing(isolated_env, tmp_path, transactions=unknown)
    run = run_graph(config)
    assert run.result.success
    meta = [
        m.materialization.metadata
        for m in run.result.get_asset_materialization_events()
        if m.materialization.asset_key.to_user_string() == "customer_features"
    ][0]
    assert meta["transaction_customers_in_customer_table"].value == "4 of 5"
    assert meta["transaction_lines_of_unknown_customers"].value == 2
    # the landing runs' current_features say it too, of the files they read
    landing = [
        m.materialization.metadata
        for m in run.result.get_asset_materialization_events()
        if m.materialization.asset_key.to_user_string() == "current_features"
    ][0]
    assert landing["transaction_lines_of_unknown_customers"].value == 2
