"""Unit tests of the sidecar's parts: validation, fallback chain, ONNX Runtime, inference log."""

from __future__ import annotations

import copy
import datetime as dt
import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest

from churn_assets.lib.storage import Storage
from churn_serving.inference_log import InferenceLogger
from churn_serving.model import LEVELS, CustomerTable, FallbackStats, ModelBundle
from churn_serving.onnx_predictor import OnnxPredictor
from churn_serving.schema import (
    MISSING_CATEGORY,
    FeatureSchema,
    RequestError,
    accepted_range,
    frame_to_arrays,
    parse_request,
)
from churn_serving.settings import ServingSettings

MANIFEST: dict[str, Any] = {
    "version": "v1",
    "features": {"numeric": ["age", "spend", "score"], "categorical": ["plan", "country"]},
    "feature_schema": {
        "age": {"type": "numeric", "min": 18.0, "max": 90.0, "nullable": False},
        "spend": {"type": "numeric", "min": -100.0, "max": 1000.0, "nullable": True},
        "score": {"type": "numeric", "min": 0.5, "max": 0.5, "nullable": False},
        "plan": {"type": "categorical", "categories": ["a", "b"], "nullable": False},
        "country": {"type": "categorical", "categories": ["DE", "US"], "nullable": True},
    },
    "models": {
        "classifier": {"threshold": 0.4, "candidate": "stub"},
        "classifier_fallback": {"threshold": 0.6, "candidate": "stub"},
        "regressor": {"candidate": "stub"},
        "regressor_fallback": {"candidate": "stub"},
    },
    "business_rules": {
        "feature": "spend",
        "threshold": 100.0,
        "churn_probability_above": 0.1,
        "churn_probability_at_or_below": 0.7,
        "expected_total_sales_above": 500.0,
        "expected_total_sales_at_or_below": 50.0,
    },
    "base_rates": {"churn_probability": 0.2, "expected_total_sales": 123.0},
}


def record(**changes: Any) -> dict[str, Any]:
    rec = {"age": 40, "spend": 250.5, "score": 0.5, "plan": "a", "country": "DE"}
    rec.update(changes)
    return {k: v for k, v in rec.items() if v != "<drop>"}


def errors_of(exc: pytest.ExceptionInfo[RequestError]) -> list[tuple[str, str]]:
    return [(e.get("field"), e["type"]) for e in exc.value.detail]


# ----------------------------------------------------------------------------- schema


def test_accepted_range_rule():
    assert accepted_range(18, 90, 1.0) == (0.0, 162.0)  # min >= 0: never negative
    assert accepted_range(18, 90, 10.0) == (0.0, 810.0)
    assert accepted_range(-100, 1000, 1.0) == (-1200.0, 2100.0)
    assert accepted_range(0.5, 0.5, 1.0) == (0.0, 1.5)  # constant column: width max(|max|, 1)
    assert accepted_range(-5, -5, 2.0) == (-15.0, 5.0)
    assert accepted_range(None, 3, 1.0) == (-math.inf, math.inf)
    # days from a date to the cut-off: a date after it (a contract's end) is negative
    assert accepted_range(1, 60, 1.0, signed=True) == (-58.0, 119.0)
    dated = {
        "features": {"numeric": ["days_since_contract_end", "tenure_days"], "categorical": []},
        "feature_schema": {
            c: {"type": "numeric", "min": 1.0, "max": 60.0, "nullable": True}
            for c in ("days_since_contract_end", "tenure_days")
        },
    }
    assert FeatureSchema(dated).lo.tolist() == [-589.0, 0.0]  # the default slack: 10 widths


def test_a_date_feature_is_sent_as_the_date_and_counted_to_the_versions_day():
    manifest = {
        "features": {"numeric": ["days_since_last_login", "spend"], "categorical": []},
        "feature_schema": {
            "days_since_last_login": {"min": 0.0, "max": 400.0, "nullable": True},
            "spend": {"min": 0.0, "max": 100.0, "nullable": False},
        },
        "feature_definition": {
            "dates": {"last_login": "days_since_last_login"},
            "dates_as_of": "2024-07-01",
        },
    }
    schema = FeatureSchema(manifest, aliases={"LastLogin": "last_login"})
    assert schema.date_keys == {
        "last_login": "days_since_last_login",
        "LastLogin": "days_since_last_login",
    }
    assert schema.describe()["dates"]["dates_as_of"] == "2024-07-01"
    feats = [
        {"last_login": "2024-06-01", "spend": 5},
        {"LastLogin": "2024-06-30T12:00:00", "spend": 5},
        {"last_login": "2024-07-01T02:00:00+02:00", "spend": 5},  # midnight UTC
        {"last_login": None, "spend": 5},
        {"last_login": "2024-08-01", "spend": 5},  # after the day: negative
        {"days_since_last_login": 7, "spend": 5},  # the days themselves still work
    ]
    num, _, _ = schema.to_arrays(feats, list(range(len(feats))))
    days = num[:, 0].tolist()
    assert days[:3] == [30.0, 0.5, 0.0] and math.isnan(days[3]) and days[4:] == [-31.0, 7.0]
    # the same as a columnar body
    num, _, _ = schema.columns_to_arrays({"last_login": ["2024-06-01"], "spend": [5]}, 1)
    assert num[0, 0] == 30.0
    # not a date: a clear error naming both ways to send it
    with pytest.raises(RequestError) as e:
        schema.to_arrays(
            [{"last_login": "June 1st", "spend": 5}, {"last_login": 30, "spend": 5}], [0, 1]
        )
    errors = e.value.body()["detail"]
    assert [(x["field"], x["type"]) for x in errors] == [
        ("days_since_last_login", "wrong_type")
    ] * 2
    assert "'last_login' must be a date (YYYY-MM-DD)" in errors[0]["msg"]
    assert "'days_since_last_login'" in errors[1]["msg"]
    # a missing date feature names every way to send it
    with pytest.raises(RequestError) as e:
        schema.to_arrays([{"spend": 5}], [0])
    assert e.value.body()["detail"][0]["msg"] == (
        "feature 'days_since_last_login' (or 'last_login' / 'LastLogin') is required"
    )
    # a version that does not record the day takes the days only
    old = FeatureSchema({**manifest, "feature_definition": {}})
    with pytest.raises(RequestError):
        old.to_arrays([{"last_login": "2024-06-01", "spend": 5}], [0])


#: A version with one date feature, counted to 2024-07-01.
LOGIN_DATED = {
    "features": {"numeric": ["days_since_last_login"], "categorical": []},
    "feature_schema": {"days_since_last_login": {"min": 0.0, "max": 400.0}},
    "feature_definition": {
        "dates": {"last_login": "days_since_last_login"},
        "dates_as_of": "2024-07-01",
    },
}


def test_a_request_may_count_dates_to_its_own_day():
    """``?as_of=`` counts dates sent as dates to that day instead of the version's."""
    from churn_serving.schema import parse_as_of

    schema = FeatureSchema(LOGIN_DATED)
    as_of = parse_as_of("as_of=2024-08-01")
    assert as_of == dt.datetime(2024, 8, 1)
    num, _, _ = schema.at(as_of).to_arrays([{"last_login": "2024-06-01"}], [0])
    assert num[0, 0] == 61.0
    num, _, _ = schema.to_arrays([{"last_login": "2024-06-01"}], [0])  # the version's own
    assert num[0, 0] == 30.0
    today = dt.datetime.now(dt.UTC).date()
    assert parse_as_of(b"as_of=today") == dt.datetime(today.year, today.month, today.day)
    assert parse_as_of("as_of=2024-08-01T02:00:00%2B02:00") == dt.datetime(2024, 8, 1)
    assert parse_as_of("") is None and parse_as_of(None) is None
    for query, message in (
        ("as_of=soon", "as_of must be a date (YYYY-MM-DD), an ISO date-time or 'today'"),
        ("asof=today", "unknown query parameter 'asof'"),
    ):
        with pytest.raises(RequestError) as e:
            parse_as_of(query)
        assert e.value.status == 422 and message in e.value.body()["detail"][0]["msg"]


def test_a_date_feature_in_an_arrow_body():
    pa = pytest.importorskip("pyarrow")
    schema = FeatureSchema(LOGIN_DATED)
    table = pa.table({"last_login": pa.array([dt.date(2024, 6, 1), None], pa.date32())})
    num, _, _ = schema.arrow_to_arrays(table)
    assert num[0, 0] == 30.0 and math.isnan(num[1, 0])
    with pytest.raises(RequestError) as e:
        schema.arrow_to_arrays(pa.table({"last_login": ["soon"]}))
    assert "must be a date" in e.value.body()["detail"][0]["msg"]


def test_valid_records_become_arrays():
    schema = FeatureSchema(MANIFEST)
    feats = [
        record(),
        record(age=True, spend=None, country=None),  # bool = 1, nullable nulls
        record(plan="z", age=300),  # unseen category, inside the widened range
    ]
    num, cat, unseen = schema.to_arrays(feats, [0, 1, 2])
    assert num.dtype == np.float64 and num.shape == (3, 3)
    assert num[0].tolist() == [40.0, 250.5, 0.5]
    assert num[1, 0] == 1.0 and math.isnan(num[1, 1])
    assert cat.tolist() == [["a", "DE"], ["a", MISSING_CATEGORY], ["z", "DE"]]
    assert unseen == [(2, "plan", "z")]


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"age": "<drop>"}, [("age", "missing")]),
        ({"colour": "red"}, [("colour", "unknown_field")]),
        ({"age": "forty"}, [("age", "wrong_type")]),
        ({"age": [1]}, [("age", "wrong_type")]),
        ({"plan": [3]}, [("plan", "wrong_type")]),
        ({"plan": {"a": 1}}, [("plan", "wrong_type")]),
        ({"age": None}, [("age", "null_not_allowed")]),
        ({"plan": None}, [("plan", "null_not_allowed")]),
        ({"age": 5000}, [("age", "out_of_range")]),
        ({"score": 11.0}, [("score", "out_of_range")]),
        ({"age": -1}, [("age", "out_of_range")]),
        ({"spend": -20000.0}, [("spend", "out_of_range")]),
        ({"age": 10**400}, [("age", "not_finite")]),
        ({"spend": math.inf}, [("spend", "not_finite")]),
        ({"age": 5000, "plan": [1]}, [("age", "out_of_range"), ("plan", "wrong_type")]),
    ],
)
def test_each_validation_error_names_the_field(changes, expected):
    schema = FeatureSchema(MANIFEST)
    with pytest.raises(RequestError) as exc:
        schema.to_arrays([record(), record(**changes)], [0, 7])
    assert exc.value.status == 422
    assert errors_of(exc) == expected
    for e in exc.value.detail:
        assert e["loc"] == ["body", "records", 7, "features", e["field"]]
        assert e["field"] in e["msg"]
    assert exc.value.body()["error_count"] == len(expected)


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("False", "got string 'False': send the JSON boolean false (without quotes)"),
        ("40.5", "got string '40.5': send it as a JSON number (without quotes)"),
        ("forty", "must be a number, got string"),
    ],
)
def test_a_number_or_boolean_sent_as_text_says_how_to_send_it(value, says):
    """A client forwarding a CSV's text ("False", "40.5") gets a 422 that says to send the
    JSON value; other text keeps the plain message."""
    with pytest.raises(RequestError) as exc:
        FeatureSchema(MANIFEST).to_arrays([record(age=value)], [0])
    (error,) = exc.value.detail
    assert error["type"] == "wrong_type" and says in error["msg"]
    if value == "forty":
        assert error["msg"].endswith("got string")


def _typed_manifest() -> dict[str, Any]:
    """MANIFEST with ``age`` an integer column and ``score`` a boolean one in training."""
    manifest = copy.deepcopy(MANIFEST)
    manifest["feature_schema"]["age"]["dtype"] = "int64"
    manifest["feature_schema"]["score"] = {
        "type": "numeric",
        "dtype": "bool",
        "min": 0.0,
        "max": 1.0,
        "nullable": False,
    }
    return manifest


@pytest.mark.parametrize(
    ("changes", "kind", "says"),
    [
        ({"age": 40.5}, "not_integer", "'age' must be a whole number (it was int64 in training)"),
        ({"score": 2}, "not_boolean", "'score' is a boolean: send true or false (or 1 or 0)"),
        ({"score": 0.5}, "not_boolean", "got 0.5"),
    ],
)
def test_integer_and_boolean_features_refuse_other_numbers(changes, kind, says):
    """A fractional value for a feature that held integers in training, or a value other than
    0/1 for a boolean one, is a 422 naming the feature, alone and in a batch, by records and
    by columns; whole numbers, ``40.0`` and ``true`` pass."""
    schema = FeatureSchema(_typed_manifest())

    def typed(**values: Any) -> dict[str, Any]:
        return record(**{"score": True, **values})

    for feats in ([typed(**changes)], [typed(), typed(**changes)]):
        with pytest.raises(RequestError) as exc:
            schema.to_arrays(feats, list(range(len(feats))))
        (error,) = exc.value.detail
        assert error["type"] == kind and says in error["msg"], error
        assert error["loc"] == ["body", "records", len(feats) - 1, "features", error["field"]]
    columns = {k: [v] for k, v in typed(**changes).items()}
    with pytest.raises(RequestError) as exc:
        schema.columns_to_arrays(columns, 1)
    assert [e["type"] for e in exc.value.detail] == [kind]
    num, _, _ = schema.to_arrays([typed(age=40.0), typed(age=41, score=0)], [0, 1])
    assert num[:, 0].tolist() == [40.0, 41.0] and num[:, 2].tolist() == [1.0, 0.0]
    described = schema.describe()["fields"]
    assert described["age"]["values"] == "whole numbers"
    assert (described["score"]["accepted_min"], described["score"]["accepted_max"]) == (0, 1)
    props = schema.json_schema()["properties"]
    assert props["age"]["type"][0] == "integer" and props["score"]["maximum"] == 1.0
    # a manifest without dtypes (an older version) keeps accepting any number
    assert FeatureSchema(MANIFEST).to_arrays([record(age=40.5)], [0])[0][0, 0] == 40.5


def test_a_category_sent_as_a_number_is_its_label_and_the_missing_marker_is_refused():
    """A CSV row forwarded with its types sends a category such as Telco's SeniorCitizen as
    ``0``: numbers and booleans name the category as training labelled it (``1.0`` is
    ``"1"``); objects are refused; ``"__missing__"`` (the model's own marker) is a 422 that
    says to send null, in a single record and in a batch."""
    manifest = copy.deepcopy(MANIFEST)
    manifest["feature_schema"]["plan"]["categories"] = ["0", "1", "True"]
    schema = FeatureSchema(manifest)
    _, cat, unseen = schema.to_arrays(
        [record(plan=0), record(plan=1.0), record(plan=True), record(plan=7)], [0, 1, 2, 3]
    )
    assert cat[:, 0].tolist() == ["0", "1", "True", "7"] and unseen == [(3, "plan", "7")]
    with pytest.raises(RequestError) as exc:
        schema.to_arrays([record(plan={"a": 1})], [0])
    assert [e["type"] for e in exc.value.detail] == ["wrong_type"]
    for feats in ([record(plan=MISSING_CATEGORY)], [record(), record(country=MISSING_CATEGORY)]):
        with pytest.raises(RequestError) as exc:
            schema.to_arrays(feats, list(range(len(feats))))
        (error,) = exc.value.detail
        assert error["type"] == "reserved_value" and "send null" in error["msg"]
    with pytest.raises(RequestError) as exc:  # plan had no nulls in training, country had
        schema.to_arrays([record(plan=MISSING_CATEGORY, country=MISSING_CATEGORY)], [0])
    notes = {e["field"]: "not allowed here" in e["msg"] for e in exc.value.detail}
    assert notes == {"plan": True, "country": False}


def test_a_missing_feature_does_not_hide_a_wrong_value_beside_it():
    """One 422 names every problem: a missing feature, an unknown one and a wrong value in
    the same record (the value used to be reported only once the fields were fixed)."""
    rec = record(age="forty", colour="red")
    del rec["spend"]
    with pytest.raises(RequestError) as exc:
        FeatureSchema(MANIFEST).to_arrays([record(), rec], [0, 1])
    assert sorted(errors_of(exc)) == [
        ("age", "wrong_type"),
        ("colour", "unknown_field"),
        ("spend", "missing"),
    ]


def test_out_of_range_message_gives_the_accepted_interval():
    with pytest.raises(RequestError) as exc:
        FeatureSchema(MANIFEST).to_arrays([record(age=5000)], [0])
    msg = exc.value.detail[0]["msg"]
    assert "age" in msg and "[0, 810]" in msg and "5000" in msg


def test_large_batch_is_checked_column_wise():
    schema = FeatureSchema(MANIFEST)
    feats = [record(age=18 + i % 70, spend=float(i % 1000)) for i in range(10_000)]
    num, cat, unseen = schema.to_arrays(feats, list(range(10_000)))
    assert num.shape == (10_000, 3) and cat.shape == (10_000, 2) and unseen == []
    feats[4321] = record(age=-3)
    with pytest.raises(RequestError) as exc:
        schema.to_arrays(feats, list(range(10_000)))
    assert [e["loc"][2] for e in exc.value.detail] == [4321]


def test_envelope_errors():
    cases = [
        ([], "wrong_type"),
        ({}, "missing"),
        ({"records": {}}, "wrong_type"),
        ({"records": []}, "too_short"),
        ({"records": [1]}, "wrong_type"),
        ({"records": [{}]}, "missing"),
        ({"records": [{"id": 1}]}, "unknown_field"),
        ({"records": [{"customer_id": True}]}, "wrong_type"),
        ({"records": [{"customer_id": 1.5}]}, "wrong_type"),
        ({"records": [{"features": [1, 2]}]}, "wrong_type"),
        ({"records": [{"customer_id": "C1"}], "extra": 1}, "unknown_field"),
    ]
    for payload, kind in cases:
        with pytest.raises(RequestError) as exc:
            parse_request(payload, 100)
        assert exc.value.status == 422, payload
        assert exc.value.detail[0]["type"] == kind, payload
    # an id too long for a JSON integer arrives as a float: the answer says to send text
    for payload in (
        {"records": [{"customer_id": 1.2345e29}]},
        {"columns": {"customer_id": [1e30]}},
    ):
        with pytest.raises(RequestError) as exc:
            parse_request(payload, 100)
        assert "not exact in JSON; send the id as a string" in exc.value.detail[0]["msg"]


def test_too_many_records_is_413():
    with pytest.raises(RequestError) as exc:
        parse_request({"records": [{"customer_id": "C"}] * 11}, 10)
    assert exc.value.status == 413 and "11 > 10" in exc.value.detail


def test_records_are_split_into_lookups_and_feature_records():
    parsed = parse_request(
        {
            "records": [
                {"customer_id": "C1"},
                {"features": record()},
                {"customer_id": 7, "features": record()},
            ]
        },
        10,
    )
    assert parsed.lookup_rows == [0] and parsed.lookup_ids == ["C1"]
    assert parsed.feature_rows == [1, 2]
    assert parsed.customer_ids == ["C1", None, "7"]


def test_frame_to_arrays_follows_frame_cleaner():
    frame = pl.DataFrame(
        {
            "n": [1.0, float("inf"), None],
            "b": [True, False, None],
            "c": ["x", None, "y"],
            "k": [1.0, 2.5, None],
        }
    )
    num, cat = frame_to_arrays(frame, ["n", "b"], ["c", "k"])
    assert num[0].tolist() == [1.0, 1.0]
    assert np.isnan(num[1, 0]) and num[1, 1] == 0.0 and np.isnan(num[2]).all()
    assert cat.tolist() == [["x", "1"], [MISSING_CATEGORY, "2.5"], ["y", MISSING_CATEGORY]]


# ----------------------------------------------------------------------- fallback chain


class Const:
    def __init__(self, value: float | list[float]):
        self.value = value

    def predict(self, num: np.ndarray, cat: np.ndarray) -> np.ndarray:
        if isinstance(self.value, list):
            return np.asarray(self.value[: len(num)], dtype=float)
        return np.full(len(num), self.value)


class Raises:
    def predict(self, num: np.ndarray, cat: np.ndarray) -> np.ndarray:
        raise KeyError("feature columns missing from input: ['x']")


def bundle(**predictors: Any) -> ModelBundle:
    roles = {
        "classifier": Const(0.5),
        "classifier_fallback": Const(0.55),
        "regressor": Const(100.0),
        "regressor_fallback": Const(90.0),
    }
    roles.update(predictors)
    return ModelBundle(
        version="v1",
        manifest=MANIFEST,
        pointer={"version": "v1"},
        schema=FeatureSchema(MANIFEST),
        predictors=roles,
        stats=FallbackStats(),
    )


def arrays(spend: list[float]) -> tuple[np.ndarray, np.ndarray]:
    num = np.asarray([[40.0, s, 0.5] for s in spend])
    cat = np.asarray([["a", "DE"]] * len(spend), dtype=object)
    return num, cat


def levels(codes: np.ndarray) -> list[str]:
    return [LEVELS[i] for i in codes]


def test_champion_answers_with_its_threshold():
    r = bundle().predict_arrays(*arrays([10.0, 200.0]))
    assert r.churn_probability.tolist() == [0.5, 0.5]
    assert levels(r.churn_level) == ["champion"] * 2
    assert r.threshold.tolist() == [0.4, 0.4] and r.churn_label.tolist() == [1, 1]
    assert r.expected_total_sales.tolist() == [100.0, 100.0]


def test_broken_champion_falls_back_to_the_fallback_model():
    b = bundle(classifier=Raises(), regressor=Raises())
    r = b.predict_arrays(*arrays([10.0]))
    assert levels(r.churn_level) == ["fallback_model"]
    assert levels(r.sales_level) == ["fallback_model"]
    assert r.churn_probability[0] == 0.55 and r.expected_total_sales[0] == 90.0
    assert r.threshold[0] == 0.6 and r.churn_label[0] == 0  # the fallback's own threshold
    assert b.stats.snapshot()["model_errors"]["classifier"]["count"] == 1
    assert "KeyError" in b.stats.snapshot()["model_errors"]["classifier"]["last_error"]


def test_both_models_broken_use_business_rules_then_base_rate():
    b = bundle(
        classifier=Raises(), classifier_fallback=None, regressor=Raises(), regressor_fallback=None
    )
    r = b.predict_arrays(*arrays([50.0, 150.0, float("nan")]))
    assert levels(r.churn_level) == ["business_rules", "business_rules", "base_rate"]
    assert r.churn_probability.tolist() == [0.7, 0.1, 0.2]
    assert r.expected_total_sales.tolist() == [50.0, 500.0, 123.0]
    assert r.threshold.tolist() == [0.4] * 3 and r.churn_label.tolist() == [1, 0, 0]


def test_invalid_outputs_fall_through_per_record():
    b = bundle(classifier=Const([0.3, float("nan"), 1.5]), regressor=Const([-5.0, 1.0, np.inf]))
    r = b.predict_arrays(*arrays([10.0, 10.0, 10.0]))
    assert levels(r.churn_level) == ["champion", "fallback_model", "fallback_model"]
    assert r.churn_probability.tolist() == [0.3, 0.55, 0.55]
    assert levels(r.sales_level) == ["champion", "champion", "fallback_model"]
    assert r.expected_total_sales.tolist() == [0.0, 1.0, 90.0]  # negative values clipped


def test_no_rules_means_base_rate():
    manifest = {**MANIFEST, "business_rules": {}}
    b = ModelBundle(
        version="v1",
        manifest=manifest,
        pointer={},
        schema=FeatureSchema(manifest),
        predictors={"classifier": Raises(), "regressor": Raises()},
    )
    r = b.predict_arrays(*arrays([10.0]))
    assert levels(r.churn_level) == ["base_rate"] and r.churn_probability[0] == 0.2
    assert levels(r.sales_level) == ["base_rate"] and r.expected_total_sales[0] == 123.0


def test_fallback_stats_counts_levels():
    stats = FallbackStats()
    stats.add(np.array([3, 1, 0, 0, 0]), np.array([4, 0, 0, 0, 0]), 4)
    snap = stats.snapshot()
    assert snap["by_output"]["churn_probability"]["fallback_model"] == 1
    assert snap["fallback_share"]["churn_probability"] == pytest.approx(0.25)


def test_a_version_without_value_model_answers_null_sales_at_no_value_model():
    churn_only = {
        **MANIFEST,
        "models": {k: v for k, v in MANIFEST["models"].items() if k.startswith("classifier")},
        "base_rates": {"churn_probability": 0.2},
        "has_value_model": False,
    }
    b = ModelBundle(
        version="v1",
        manifest=churn_only,
        pointer={"version": "v1"},
        schema=FeatureSchema(churn_only),
        predictors={"classifier": Const(0.7), "classifier_fallback": Const(0.2)},
        stats=FallbackStats(),
    )
    assert not b.has_value_model
    r = b.predict_arrays(*arrays([10.0, 500.0]))
    assert r.churn_probability.tolist() == [0.7, 0.7]
    assert np.isnan(r.expected_total_sales).all()
    assert [LEVELS[i] for i in r.sales_level] == ["no_value_model"] * 2
    assert b.describe()["has_value_model"] is False


def test_customer_table_fills_missing_category_shares_and_ignores_extra_columns():
    import pyarrow as pa

    manifest = {
        "features": {
            "numeric": ["orders_90d", "cat_share_books", "cat_share_games"],
            "categorical": ["plan"],
        },
        "feature_schema": {},
    }
    schema = FeatureSchema(manifest)
    table = pa.table(
        {
            "customer_id": ["a", "b"],
            "orders_90d": [3, None],
            "cat_share_books": [0.5, 1.0],
            "cat_share_toys": [0.5, 0.0],  # a category the version does not know
            "plan": ["x", None],
        }
    )
    t = CustomerTable.from_frame(table, schema, "mem", None)
    num, cat = t.lookup(["b", "a"], [0, 1])
    np.testing.assert_array_equal(num[1], [3.0, 0.5, 0.0])
    assert np.isnan(num[0, 0]) and num[0, 2] == 0.0
    assert cat[:, 0].tolist() == [MISSING_CATEGORY, "x"]
    with pytest.raises(ValueError, match="orders_90d"):
        CustomerTable.from_frame(table.drop_columns(["orders_90d"]), schema, "mem", None)


def test_records_in_the_source_column_names_are_accepted():
    schema = FeatureSchema(MANIFEST, aliases={"Age": "age", "Plan": "plan", "age": "age"})
    by_source = record()
    by_source["Age"] = by_source.pop("age")
    by_source["Plan"] = by_source.pop("plan")
    num, cat, _ = schema.to_arrays([by_source, record()], [0, 1])
    np.testing.assert_array_equal(num[0], num[1])
    assert cat[0].tolist() == cat[1].tolist()
    described = schema.describe()
    assert described["source_names"] == {"age": "Age", "plan": "Plan"}
    assert described["fields"]["age"]["source_name"] == "Age"
    both = {**record(), "Age": 41}  # the same feature twice: the source name is unknown
    with pytest.raises(RequestError) as e:
        schema.to_arrays([both], [0])
    assert [d["field"] for d in e.value.detail] == ["Age"]
    assert (
        "'Age' is the source name of feature 'age', which the record also holds"
        in (e.value.detail[0]["msg"])
    )
    with pytest.raises(RequestError) as e:  # by columns too
        schema.columns_to_arrays({k: [v] for k, v in both.items()}, 1)
    assert "send it once" in e.value.detail[0]["msg"]


# ---------------------------------------------------------------------- ONNX Runtime


@pytest.fixture(autouse=True)
def one_thread():
    """HistGradientBoosting on OpenMP threads is very slow on small machines."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):
        yield


@pytest.fixture(scope="module")
def zoo_data():
    from churn_assets.lib.models.spec import FeatureSpec
    from tests.model._data import make_frame

    frame = make_frame(500, seed=3)
    spec = FeatureSpec.infer(frame)
    num, cat = frame_to_arrays(
        pl.from_pandas(frame.drop(columns=["cutoff"])), spec.numeric, spec.categorical
    )
    probe_num = num[:30].copy()
    probe_num[:10] = np.nan
    probe_cat = cat[:30].copy()
    probe_cat[10:20, 0] = "never-seen"
    return frame, spec, np.vstack([num, probe_num]), np.vstack([cat, probe_cat])


def test_onnx_batches_on_more_threads_give_the_same_answers(zoo_data):
    from churn_assets.lib.models.classification import build_classifier
    from churn_assets.lib.onnx_export import to_onnx
    from churn_serving import onnx_predictor

    frame, spec, num, cat = zoo_data
    y = frame["churned"].to_numpy()
    pipeline = build_classifier("lightgbm", spec, y_train=y).fit(frame, y)
    graph = to_onnx(pipeline, spec.numeric, spec.categorical)
    one = OnnxPredictor(graph, "classifier", spec.numeric, spec.categorical)
    two = OnnxPredictor(graph, "classifier", spec.numeric, spec.categorical, batch_threads=2)
    assert two.batch_session is not two.session
    big = np.repeat(num, 5, axis=0), np.repeat(cat, 5, axis=0)
    assert len(big[0]) >= onnx_predictor.BATCH_MIN_ROWS
    np.testing.assert_array_equal(two.predict(*big), one.predict(*big))
    np.testing.assert_array_equal(two.predict(num[:1], cat[:1]), one.predict(num[:1], cat[:1]))
    expected = pipeline.predict_proba(frame_of(num, cat, spec))[:, 1]
    np.testing.assert_allclose(one.predict(num, cat), expected, rtol=0, atol=1e-6)


def frame_of(num: np.ndarray, cat: np.ndarray, spec: Any) -> Any:
    import pandas as pd

    data = {c: num[:, i] for i, c in enumerate(spec.numeric)}
    data.update({c: cat[:, j] for j, c in enumerate(spec.categorical)})
    return pd.DataFrame(data)[[*spec.numeric, *spec.categorical]]


# ----------------------------------------------------------------------- inference log


class FlakyStorage(Storage):
    """Storage whose writes fail while ``down`` (treated as remote: every write is a PUT)."""

    down = False

    @property
    def is_local(self) -> bool:
        return False

    def write_bytes(self, rel: str, data: bytes) -> str:
        if self.down:
            raise OSError("storage unreachable")
        return Storage(self.root).write_bytes(rel, data)


def submit(logger: InferenceLogger, n: int, start: int = 0, unseen: bool = False) -> None:
    ids = [f"C{start + i}" for i in range(n)]
    logger.submit(
        numeric=("age", "spend"),
        categorical=("plan",),
        logged_at=time.time(),
        request_id=f"r{start}",
        model_version="v1",
        customer_id=ids,
        unseen_categories=[json.dumps({"plan": "z"})] + [None] * (n - 1) if unseen else None,
        is_lookup=np.zeros(n, dtype=bool),
        churn_probability=np.linspace(0, 1, n),
        churn_label=(np.linspace(0, 1, n) >= 0.5).astype(np.int8),
        threshold=np.full(n, 0.5),
        expected_total_sales=np.arange(n, dtype=float) + start,
        churn_level=np.zeros(n, dtype=np.int8),
        sales_level=np.ones(n, dtype=np.int8),
        num=np.column_stack([np.full(n, 30.0), np.arange(n, dtype=float)]),
        cat=np.full((n, 1), "a", dtype=object),
    )


def log_files(root: Path) -> list[Path]:
    return sorted((root / "inference_log").glob("date=*/*.parquet"))


def test_inference_log_writes_partitioned_parquet(tmp_path):
    logger = InferenceLogger(Storage(str(tmp_path)), flush_records=1000, flush_seconds=60)
    submit(logger, 3, unseen=True)
    submit(logger, 2, start=10)
    assert log_files(tmp_path) == []  # nothing written per request
    assert logger.flush() == 5
    [path] = log_files(tmp_path)
    assert path.parent.name == f"date={dt.datetime.now(dt.UTC).date().isoformat()}"
    frame = pl.read_parquet(path)
    assert frame.height == 5
    assert frame["customer_id"].to_list() == ["C0", "C1", "C2", "C10", "C11"]
    assert frame["record"].to_list() == [0, 1, 2, 0, 1]
    assert frame["request_id"].to_list() == ["r0"] * 3 + ["r10"] * 2
    assert frame["churn_level"].unique().to_list() == ["champion"]
    assert frame["sales_level"].unique().to_list() == ["fallback_model"]
    assert frame["unseen_categories"].to_list()[:2] == ['{"plan": "z"}', None]
    assert frame["spend"].to_list() == [0.0, 1.0, 2.0, 0.0, 1.0]
    assert frame["logged_at"].dtype == pl.Datetime("us", "UTC")


def test_inference_log_survives_storage_outage_with_bounded_buffer(tmp_path, caplog):
    import logging

    storage = FlakyStorage(str(tmp_path))
    logger = InferenceLogger(storage, flush_records=1000, flush_seconds=60, max_buffer_records=8)
    storage.down = True
    for i in range(4):
        submit(logger, 2, start=10 * i)
    assert logger.flush() == 0
    assert logger.flush_failures == 1 and "unreachable" in logger.last_error
    assert logger.status()["buffered_records"] == 8 and logger.records_dropped == 0
    with caplog.at_level(logging.WARNING, logger="churn_serving.inference_log"):
        submit(logger, 2, start=100)  # over the bound: the oldest request goes
        submit(logger, 2, start=200)  # said once a minute, counted every time
    assert logger.status()["buffered_records"] == 8 and logger.records_dropped == 4
    said = [r.getMessage() for r in caplog.records if "dropped" in r.getMessage()]
    assert len(said) == 1 and "CHURN_SERVING_LOG_MAX_BUFFER_RECORDS" in said[0]
    storage.down = False
    logger._retry_at = 0.0
    assert logger.flush() == 8
    assert logger.last_error is None and logger.status()["flush_failures"] == 1  # recovered
    ids = pl.read_parquet(log_files(tmp_path)[0])["customer_id"].to_list()
    assert ids[:2] == ["C20", "C21"] and ids[-2:] == ["C200", "C201"]


def test_inference_log_background_flush_by_count_and_on_close(tmp_path):
    logger = InferenceLogger(Storage(str(tmp_path)), flush_records=10, flush_seconds=3600)
    logger.start()
    try:
        submit(logger, 12)
        deadline = time.monotonic() + 20
        while not log_files(tmp_path) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(log_files(tmp_path)) == 1
        submit(logger, 3, start=50)
    finally:
        logger.close()
    assert len(log_files(tmp_path)) == 2 and logger.records_written == 15


def test_settings_from_environment(monkeypatch):
    monkeypatch.setenv("CHURN_SERVING_PORT", "9123")
    monkeypatch.setenv("CHURN_SERVING_POLL_SECONDS", "2.5")
    monkeypatch.setenv("CHURN_SERVING_ADMIN_TOKEN", "")
    s = ServingSettings()
    assert (s.host, s.port, s.poll_seconds, s.max_records) == ("127.0.0.1", 9123, 2.5, 10_000)
    assert not s.admin_enabled
    monkeypatch.setenv("CHURN_SERVING_ADMIN_TOKEN", "t0ken")
    assert ServingSettings().admin_enabled


def test_settings_an_empty_host_is_loopback_and_a_token_file_newline_is_stripped(monkeypatch):
    """A blank ``CHURN_SERVING_HOST`` (a template's empty line) listened on every interface;
    a token read from a secret file (``s3cret\\n``) could never match a request's."""
    monkeypatch.setenv("CHURN_SERVING_HOST", " ")
    monkeypatch.setenv("CHURN_SERVING_ADMIN_TOKEN", "s3cret\n ")
    s = ServingSettings()
    assert s.host == "127.0.0.1" and s.admin_token == "s3cret"
    monkeypatch.setenv("CHURN_SERVING_ADMIN_TOKEN", " \n")
    assert not ServingSettings().admin_enabled


def test_settings_refuse_a_log_buffer_below_one_flush(monkeypatch):
    """A buffer limit below what arrives between two flushes dropped a 500-record request's
    log while storage was fine: refused at start, naming the variables."""
    from pydantic import ValidationError

    from churn_assets.lib.settings import validation_message

    monkeypatch.setenv("CHURN_SERVING_LOG_MAX_BUFFER_RECORDS", "100")
    with pytest.raises(ValidationError) as e:
        ServingSettings()
    said = validation_message(e.value)
    assert said.startswith("CHURN_SERVING_LOG_MAX_BUFFER_RECORDS=100 is below")
    assert "set it to at least 10000" in said
    monkeypatch.setenv("CHURN_SERVING_LOG_ENABLED", "false")  # no log: nothing to hold
    assert ServingSettings().log_max_buffer_records == 100
    monkeypatch.setenv("CHURN_SERVING_PORT", "abc")
    with pytest.raises(ValidationError) as e:
        ServingSettings()
    assert validation_message(e.value).startswith("CHURN_SERVING_PORT='abc': Input should be")


def test_waiting_for_a_first_deployment_is_logged_once(tmp_path, caplog):
    import logging

    from churn_serving.manager import ModelManager

    manager = ModelManager(Storage(str(tmp_path / "empty")))
    with caplog.at_level(logging.INFO, logger="churn_serving.manager"):
        for _ in range(3):
            assert manager.reload(trigger="poll")["status"] == "failed"
    waiting = [r for r in caplog.records if "nothing deployed" in r.getMessage()]
    assert len(waiting) == 1 and waiting[0].levelno == logging.INFO
    assert manager.last_error is not None and "nothing deployed" in manager.last_error["error"]
    # tmp_path/empty does not exist (a mistyped storage URL): the message says so
    assert "the folder does not exist" in manager.last_error["error"]
    (tmp_path / "empty").mkdir()
    manager.reload(trigger="poll")
    assert "does not exist" not in manager.last_error["error"]


def test_telco_source_column_names_map_to_its_features(monkeypatch):
    from churn_serving.app import dataset_aliases

    monkeypatch.setenv("CHURN_DATASET", "telco")
    aliases = dataset_aliases()
    assert aliases["SeniorCitizen"] == "senior_citizen"
    assert aliases["MonthlyCharges"] == "monthly_charges"
    assert "tenure" not in aliases  # same name in the file and the platform


def test_a_config_saved_under_another_name_says_how_to_serve_it(tmp_path, monkeypatch):
    """A config in CHURN_DATASETS_DIR is found by its file's name: one saved as
    ``ecomm.yaml`` that names ``e_commerce`` is not served, and the reason says both."""
    from types import SimpleNamespace

    import yaml

    from churn_assets.lib.datasets import BUILTIN_DIR
    from churn_serving.datasets import DatasetRegistry

    cfg = yaml.safe_load((BUILTIN_DIR / "telco.yaml").read_text())
    cfg["name"] = "e_commerce"
    (tmp_path / "ecomm.yaml").write_text(yaml.safe_dump(cfg))
    monkeypatch.setenv("CHURN_DATASETS_DIR", str(tmp_path))
    registry = DatasetRegistry(
        SimpleNamespace(name="synthetic", default=True), root=object(), make=lambda n: None
    )
    why = registry._why_not("ecomm")
    assert why is not None and "data set 'e_commerce'" in why and "e_commerce.yaml" in why


def test_a_bind_address_not_of_this_machine_is_not_called_a_taken_port():
    """``CHURN_SERVING_HOST`` naming no address of this machine (or no host) was reported
    as a taken port with advice to stop the program holding it; ``::`` was refused for
    being tried as IPv4."""
    import socket

    from churn_serving.server import port_problem

    for host in ("10.255.255.1", "not a host"):
        said = port_problem(host, 8765, "the prediction sidecar", "CHURN_SERVING_PORT")
        assert said is not None and "cannot listen on" in said and "taken" not in said
        assert "CHURN_SERVING_HOST takes an address of this machine" in said
    if socket.has_ipv6:
        try:
            with socket.socket(socket.AF_INET6) as s:
                s.bind(("::", 0))
        except OSError:
            return  # IPv6 off on this machine
        assert port_problem("::", 0, "the prediction sidecar", "CHURN_SERVING_PORT") is None
