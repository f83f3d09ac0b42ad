"""Exports mark a missing number or date with text ("N/A", "NA", "-", "?", "#N/A"): in a
number, date or flag column that is a missing value, not a parse failure that quarantines
the row; in a text column it is a value like any other ("NA" may be Namibia); anything
else that does not parse still fails."""

from __future__ import annotations

import polars as pl
import yaml

from churn_assets.lib.config_draft import draft_config
from churn_assets.lib.datasets import load_dataset_config
from churn_assets.lib.ingest import MISSING_TOKENS, ingest_customers

CSV = (
    "id,country,fee,joined,active,churn\n"
    "a,NA,10.5,2024-01-02,yes,1\n"
    "b,DE,N/A,2024-01-03,no,0\n"
    "c,NA,-,n/a,?,0\n"
    "d,FR,#N/A,NULL,None,1\n"
    "e,DE,?,2024-01-05,yes,0\n"
    "f,FR,nan,2024-01-06,NA,1\n"
)


def _config(tmp_path, fee_type: str = "numeric"):
    (tmp_path / "customers").mkdir()
    (tmp_path / "customers" / "c.csv").write_text(CSV)
    path = tmp_path / "x.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "name": "x",
                "customers": {
                    "path": "customers/",
                    "id_column": "id",
                    "signup_date": {"name": "signup_date", "source": "joined", "type": "date"},
                    "attributes": [
                        {"name": "country", "type": "categorical"},
                        {"name": "fee", "type": fee_type},
                        {"name": "active", "type": "boolean"},
                    ],
                },
                "labels": {"source": "columns", "churned_column": "churn"},
            }
        )
    )
    return load_dataset_config(str(path))


def test_missing_markers_are_missing_values_not_failures(tmp_path):
    res = ingest_customers(_config(tmp_path), str(tmp_path))
    assert res.parse_errors == {}
    f = res.frame.sort("customer_id")
    assert f["_parse_errors"].null_count() == f.height
    assert f["fee"].to_list()[:5] == [10.5, None, None, None, None]
    assert f["signup_date"].null_count() == 2 and f["active"].null_count() == 3
    assert f["country"].to_list() == ["NA", "DE", "NA", "FR", "DE", "FR"]  # text stays text


def test_text_that_is_no_marker_still_fails(tmp_path):
    cfg = _config(tmp_path)
    (tmp_path / "customers" / "c.csv").write_text(CSV.replace("10.5", "ten"))
    res = ingest_customers(cfg, str(tmp_path))
    assert res.parse_errors == {"fee": 1}
    assert res.frame.filter(pl.col("customer_id") == "a")["_parse_errors"][0] == "fee"
    assert {"N/A", "n/a", "NA", "#N/A", "-", "?", "NULL", "None"} <= MISSING_TOKENS


def test_a_draft_types_a_number_column_with_markers_as_numeric(tmp_path):
    _config(tmp_path)
    text = draft_config(str(tmp_path / "customers" / "c.csv"), label="churn")
    types = {a["name"]: a["type"] for a in yaml.safe_load(text)["customers"]["attributes"]}
    assert types["fee"] == "numeric"


def test_missing_value_labels_count_as_zero_and_are_counted(tmp_path):
    """A value label blank or "N/A" is 0 sales (a customer who has bought nothing yet, as
    Telco's blank TotalCharges): counted, so that raw_customers can say how many (an export
    whose "N/A" means "unknown" trained on zeros without a word)."""
    (tmp_path / "c.csv").write_text(
        "id,revenue,churn\na,10.5,1\nb,N/A,0\nc,,0\nd,-,\ne,7,1\n"  # d has no churn label
    )
    (tmp_path / "c.yaml").write_text(
        "name: v\ncustomers:\n  path: c.csv\n  id_column: id\n  attributes: []\n"
        "labels:\n  source: columns\n  churned_column: churn\n  churned_positive: ['1']\n"
        "  total_sales_column: revenue\n"
    )
    res = ingest_customers(load_dataset_config(str(tmp_path / "c.yaml")), str(tmp_path))
    assert res.parse_errors == {}
    got = dict(res.frame.select("customer_id", "total_sales").iter_rows())
    assert got == {"a": 10.5, "b": 0.0, "c": 0.0, "d": 0.0, "e": 7.0}
    assert res.zero_value_labels == 2  # b and c: d is no labelled customer
