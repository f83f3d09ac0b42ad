"""Data set configs: built-ins load, and a bad config names the field that is wrong."""

from __future__ import annotations

import pytest

from churn_assets.lib.datasets import (
    BUILTIN_DIR,
    DatasetConfigError,
    builtin_names,
    known_names,
    load_dataset_config,
)


def test_builtins_load():
    assert builtin_names() == ["online_retail", "synthetic", "telco"]
    assert load_dataset_config("telco").is_snapshot
    retail = load_dataset_config("online_retail")
    assert retail.labels.horizon_days == 91 and str(retail.labels.cutoff) == "2011-09-09"


def test_real_data_dir_is_expanded(tmp_path):
    cfg = load_dataset_config("telco", env={"CHURN_REAL_DATA_DIR": str(tmp_path)})
    assert cfg.customers.path == f"{tmp_path}/telco_customer_churn.csv"


@pytest.mark.parametrize(
    ("yaml_text", "field"),
    [
        (
            "name: x\nlabels: {source: transactions}\ntransactions:\n  path: t/\n"
            "  customer_id: id\n  timestamp: ts\n",
            "transactions",
        ),
        (
            "name: x\nlabels: {source: columns, churned_column: c, horizon_days: soon}\n"
            "customers: {path: c/, id_column: id}\n",
            "labels.horizon_days",
        ),
        (
            "name: x\nlabels: {source: columns, churned_column: c}\n"
            "customers: {path: c/, id_column: id, attributes: [{name: a, type: money}]}\n",
            "customers.attributes.0.type",
        ),
        (
            "name: x\nlabels: {source: columns, churned_column: c}\n"
            "customers: {path: c/, id_colum: id}\n",
            "customers.id_colum",
        ),
    ],
)
def test_bad_config_names_the_field(tmp_path, yaml_text, field):
    p = tmp_path / "x.yaml"
    p.write_text(yaml_text)
    with pytest.raises(DatasetConfigError) as e:
        load_dataset_config(str(p))
    assert f"field '{field}" in str(e.value)


@pytest.mark.parametrize(
    ("models", "message"),
    [
        (
            "{classification_candidates: [lightgbm, catboost]}",
            "classification_candidates: unknown classification candidate(s) ['catboost']; "
            "known: logistic_regression, random_forest",
        ),
        (
            "{classification_candidates: [ensemble]}",
            "classification_candidates: needs at least one candidate besides 'ensemble'",
        ),
        (
            "{regression_candidates: [naive_baseline]}",
            "regression_candidates: needs at least one candidate besides 'naive_baseline'",
        ),
        ("{cv_folds: 1}", "cv_folds: 1 fold is no cross-validation: use 0 (off) or 2 or more"),
    ],
)
def test_model_settings_that_cannot_train_are_refused_when_the_config_loads(
    tmp_path, models, message
):
    """Not after ingestion and the other model set (which trained and logged to MLflow)."""
    p = tmp_path / "x.yaml"
    p.write_text(
        "name: x\nlabels: {source: columns, churned_column: c}\n"
        f"customers: {{path: c/, id_column: id}}\nmodels: {models}\n"
    )
    with pytest.raises(DatasetConfigError) as e:
        load_dataset_config(str(p))
    assert "field 'models'" in str(e.value) and message in str(e.value)


def test_unknown_name_lists_builtins():
    with pytest.raises(DatasetConfigError, match="built-in ones are"):
        load_dataset_config("nope")


def test_own_configs_folder_is_looked_up_by_name_before_the_builtins(tmp_path):
    """CHURN_DATASETS_DIR holds a user's configs: a name found there wins over a built-in
    one; a name found nowhere names the folder it was looked for in."""
    builtin = (BUILTIN_DIR / "telco.yaml").read_text()
    (tmp_path / "telco.yaml").write_text(builtin.replace("name: telco", "name: telco_copy"))
    env = {"CHURN_DATASETS_DIR": str(tmp_path)}
    assert load_dataset_config("telco", env=env).name == "telco_copy"
    assert load_dataset_config("synthetic", env=env).name == "synthetic"
    with pytest.raises(DatasetConfigError, match=f"no mine.yaml in {tmp_path}"):
        load_dataset_config("mine", env=env)
    # what the sidecar looks through for deployed data sets
    assert known_names(env) == builtin_names()  # telco.yaml shadows the built-in one
    (tmp_path / "shop_eu.yaml").write_text(builtin.replace("name: telco", "name: shop_eu"))
    assert known_names(env) == sorted([*builtin_names(), "shop_eu"])
    assert known_names({}) == builtin_names()


def test_missing_env_var(tmp_path):
    p = tmp_path / "x.yaml"
    p.write_text(
        "name: x\ncustomers: {path: '${NOT_SET_ANYWHERE}/c.csv', id_column: id}\n"
        "labels: {source: columns, churned_column: c}\n"
    )
    with pytest.raises(DatasetConfigError, match="NOT_SET_ANYWHERE"):
        load_dataset_config(str(p), env={})


@pytest.mark.parametrize(
    ("attributes", "transactions", "message"),
    [
        ("[{name: age}, {name: age, source: Age2}]", False, "attribute name 'age' is given twice"),
        ("[{name: split, source: Region}]", False, "'split' is a column the platform adds"),
        ("[{name: churned, source: Flag}]", False, "'churned' is a column the platform adds"),
        ("[{name: recency_days}]", True, "'recency_days' is a feature built from the transactions"),
        ("[{name: sales_30d}]", True, "'sales_30d' is a feature built from the transactions"),
    ],
)
def test_attribute_names_that_would_clash_are_refused(tmp_path, attributes, transactions, message):
    tx = "transactions: {path: t/, customer_id: id, timestamp: ts, amount: a}\n"
    labels = (
        "labels: {source: transactions}\n"
        if transactions
        else ("labels: {source: columns, churned_column: c}\n")
    )
    p = tmp_path / "x.yaml"
    p.write_text(
        f"name: x\ncustomers: {{path: c/, id_column: id, attributes: {attributes}}}\n"
        + (tx if transactions else "")
        + labels
    )
    with pytest.raises(DatasetConfigError, match=message):
        load_dataset_config(str(p))


def test_a_snapshot_may_name_an_attribute_like_a_transaction_feature(tmp_path):
    p = tmp_path / "x.yaml"
    p.write_text(
        "name: x\ncustomers: {path: c/, id_column: id, attributes: [{name: recency_days}]}\n"
        "labels: {source: columns, churned_column: c}\n"
    )
    assert load_dataset_config(str(p)).customers.attributes[0].name == "recency_days"


@pytest.mark.parametrize(
    ("money", "message"),
    [
        ("", "give 'amount', or both 'quantity' and 'unit_price'; for events without money"),
        ("quantity: q, ", "for events without money .*set 'activity_only: true'"),
        ("amount: a, activity_only: true, ", "activity_only lines have no amount: drop amount"),
        ("amount: a, exit_events: [Cancel], ", "exit_events are values of the category column"),
    ],
)
def test_transactions_need_money_or_say_they_are_activity_events(tmp_path, money, message):
    p = tmp_path / "x.yaml"
    p.write_text(
        f"name: x\ntransactions: {{path: t/, customer_id: id, timestamp: ts, {money}}}\n"
        "labels: {source: transactions}\n"
    )
    with pytest.raises(DatasetConfigError, match=message):
        load_dataset_config(str(p))
    p.write_text(
        "name: x\ntransactions: {path: t/, customer_id: id, timestamp: ts, activity_only: true}\n"
        "labels: {source: transactions}\n"
    )
    assert not load_dataset_config(str(p)).has_value_label


@pytest.mark.parametrize(
    ("customers", "extra", "message"),
    [
        ("{path: c/}", "", "give 'id_column' .*or 'row_ids: true' for a table without one"),
        (
            "{path: c/, id_column: id, row_ids: true}",
            "",
            "give 'id_column' or 'row_ids: true', not",
        ),
        (
            "{path: c/, row_ids: true}",
            "transactions: {path: t/, customer_id: id, timestamp: ts, amount: a}\n",
            "the transactions name customers by id",
        ),
    ],
)
def test_a_customer_table_names_its_ids_or_numbers_its_rows(tmp_path, customers, extra, message):
    p = tmp_path / "x.yaml"
    p.write_text(
        f"name: x\ncustomers: {customers}\n{extra}labels: {{source: columns, churned_column: c}}\n"
    )
    with pytest.raises(DatasetConfigError, match=message):
        load_dataset_config(str(p))
