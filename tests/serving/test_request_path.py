"""The request path's shortcuts give the answers of the general path: columnar bodies, one-record
validation, answers precomputed for id lookups, the ASGI front and its metrics."""

from __future__ import annotations

import asyncio
import json
import math
from dataclasses import replace
from typing import Any

import numpy as np
import pytest

from churn_assets.lib.storage import Storage
from churn_serving.app import SidecarApp, create_app, encode_answer, encode_lookup_answer
from churn_serving.metrics import ServingMetrics
from churn_serving.model import (
    ChainResult,
    CustomerTable,
    FallbackStats,
    ModelBundle,
)
from churn_serving.schema import FeatureSchema, RequestError, parse_request
from churn_serving.settings import ServingSettings
from tests.serving.test_units import MANIFEST, Const, Raises, record

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


class Linear:
    """A deterministic model of the features: different answers per record."""

    def __init__(self, scale: float, offset: float = 0.0):
        self.scale = scale
        self.offset = offset
        self.calls = 0

    def predict(self, num: np.ndarray, cat: np.ndarray) -> np.ndarray:
        self.calls += 1
        plan_b = (cat[:, 0] == "b").astype(float)
        return self.offset + self.scale * (num[:, 0] / 100.0) + 0.01 * plan_b


def customers(schema: FeatureSchema, n: int = 40) -> CustomerTable:
    import pyarrow as pa

    rows = [
        record(age=18 + i, spend=None if i % 7 == 0 else float(i * 10), plan="ab"[i % 2])
        for i in range(n)
    ]
    table = pa.table(
        {
            "customer_id": [f"C{i}" for i in range(n)],
            **{c: [r[c] for r in rows] for c in schema.columns},
        }
    )
    return CustomerTable.from_frame(table, schema, "mem", None)


def make_bundle(*, precompute: bool = True, **predictors: Any) -> ModelBundle:
    roles = {
        "classifier": Linear(0.5),
        "classifier_fallback": Const(0.55),
        "regressor": Linear(100.0, 5.0),
        "regressor_fallback": Const(90.0),
    }
    roles.update(predictors)
    schema = FeatureSchema(MANIFEST)
    b = ModelBundle(
        version="v1",
        manifest=MANIFEST,
        pointer={"version": "v1"},
        schema=schema,
        predictors=roles,
        stats=FallbackStats(),
        precompute_lookups=precompute,
    )
    return b.with_customers(customers(schema), None, "sig")


def post(
    app: Any, body: bytes, headers: list[tuple[bytes, bytes]] | None = None
) -> tuple[int, dict[bytes, bytes], bytes]:
    """POST /predict through the ASGI app, in process: status, answer headers, body."""
    out: dict[str, Any] = {}

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            out["status"] = message["status"]
            out["headers"] = dict(message["headers"])
        else:
            out["body"] = message["body"]

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/predict",
        "headers": [(b"content-length", str(len(body)).encode()), *(headers or [])],
    }
    asyncio.run(app(scope, receive, send))
    return out["status"], out["headers"], out["body"]


def answer(app: Any, payload: Any) -> tuple[int, dict[str, Any]]:
    """POST /predict of a JSON body through the ASGI app, in process."""
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    status, _, content = post(app, body)
    return status, json.loads(content)


@pytest.fixture
def app(tmp_path) -> SidecarApp:
    settings = ServingSettings(log_enabled=False, inline_max_records=4)
    a = create_app(settings, storage=Storage(str(tmp_path)), background=False, aliases={})
    a.state.manager.bundle = make_bundle()
    return a


def predictions(body: dict[str, Any]) -> list[dict[str, Any]]:
    return body["predictions"]


# ------------------------------------------------------------------------ columnar bodies


def test_a_columnar_body_answers_as_the_record_list(app):
    feats = [
        record(),
        record(age=True, spend=None, country=None),
        record(plan="z", age=300),
        record(age=61, spend=999.0, plan="b"),
        record(age=25, spend=-50.0, country="US"),
    ]
    ids = ["x1", None, 7, "x4", "x5"]
    listed = {
        "records": [
            {"features": f} if cid is None else {"customer_id": cid, "features": f}
            for cid, f in zip(ids, feats, strict=True)
        ]
    }
    columnar = {"columns": {"customer_id": ids, **{c: [f[c] for f in feats] for c in feats[0]}}}
    s1, by_records = answer(app, listed)
    s2, by_columns = answer(app, columnar)
    assert s1 == s2 == 200
    assert predictions(by_records) == predictions(by_columns)
    assert [p["customer_id"] for p in predictions(by_columns)] == ["x1", None, "7", "x4", "x5"]
    assert predictions(by_columns)[2]["unseen_categories"] == {"plan": "z"}
    assert by_columns["count"] == 5


def test_columnar_id_lookups_answer_as_record_lookups(app):
    ids = ["C3", "C0", "C17", "C3"]
    s1, listed = answer(app, {"records": [{"customer_id": i} for i in ids]})
    s2, columns = answer(app, {"columns": {"customer_id": ids}})
    assert s1 == s2 == 200
    assert predictions(listed) == predictions(columns)
    status, missing = answer(app, {"columns": {"customer_id": ["C1", "nobody"]}})
    assert status == 404
    assert missing["detail"][0]["loc"] == ["body", "columns", "customer_id", 1]


@pytest.mark.parametrize(
    ("payload", "status", "kind", "loc"),
    [
        ({"columns": []}, 422, "wrong_type", ["body", "columns"]),
        ({"columns": {}}, 422, "too_short", ["body", "columns"]),
        ({"columns": {"age": 3}}, 422, "wrong_type", ["body", "columns", "age"]),
        ({"columns": {"age": [], "plan": []}}, 422, "too_short", ["body", "columns"]),
        ({"columns": {"age": [1, 2], "plan": ["a"]}}, 422, "length_mismatch", None),
        ({"columns": {"customer_id": ["C1"]}, "records": []}, 422, "unknown_field", None),
        ({"columns": {"customer_id": [None]}}, 422, "wrong_type", None),
        ({"columns": {"customer_id": [1.5], "age": [40]}}, 422, "wrong_type", None),
        ({"columns": {"age": [40] * 11}}, 413, None, None),
    ],
)
def test_columnar_envelope_errors(payload, status, kind, loc):
    with pytest.raises(RequestError) as exc:
        parse_request(payload, 10)
    assert exc.value.status == status
    if kind is not None:
        assert exc.value.detail[0]["type"] == kind
    if loc is not None:
        assert exc.value.detail[0]["loc"] == loc


@pytest.mark.parametrize(
    ("column", "values", "kind"),
    [
        ("age", ["forty", 40], "wrong_type"),
        ("age", [None, 40], "null_not_allowed"),
        ("age", [5000, 40], "out_of_range"),
        ("spend", [math.inf, 1.0], "not_finite"),
        ("plan", [[3], "a"], "wrong_type"),
        ("plan", [None, "a"], "null_not_allowed"),
    ],
)
def test_columnar_value_errors_name_column_and_record(column, values, kind):
    schema = FeatureSchema(MANIFEST)
    columns = {c: [record()[c]] * 2 for c in schema.columns}
    columns[column] = values
    with pytest.raises(RequestError) as exc:
        schema.columns_to_arrays(columns, 2)
    [problem] = exc.value.detail
    assert problem["type"] == kind and problem["field"] == column
    assert problem["loc"] == ["body", "columns", column, 0]
    missing = {c: v for c, v in columns.items() if c != "age"}
    with pytest.raises(RequestError) as exc:
        schema.columns_to_arrays({**missing, "colour": ["red"] * 2}, 2)
    assert {(e["field"], e["type"]) for e in exc.value.detail} == {
        ("age", "missing"),
        ("colour", "unknown_field"),
    }


def test_columns_by_source_names_are_accepted():
    schema = FeatureSchema(MANIFEST, aliases={"Age": "age", "Plan": "plan"})
    columns = {c: [record()[c]] for c in schema.columns}
    columns["Age"] = columns.pop("age")
    num, cat, _ = schema.columns_to_arrays(columns, 1)
    want_num, want_cat, _ = schema.to_arrays([record()], [0])
    np.testing.assert_array_equal(num, want_num)
    assert cat.tolist() == want_cat.tolist()


# --------------------------------------------------------------- one record vs a batch


VALID = [
    record(),
    record(age=True, spend=None, country=None),
    record(plan="z", age=300),
    record(plan=1, country="FR", spend=0),
    record(age=90, spend=-1100.0, score=0.0),
]


def test_one_record_is_validated_as_in_a_batch():
    schema = FeatureSchema(MANIFEST)
    num, cat, unseen = schema.to_arrays(VALID, list(range(len(VALID))))
    for i, rec in enumerate(VALID):
        one_num, one_cat, one_unseen = schema.to_arrays([rec], [i])
        np.testing.assert_array_equal(one_num[0], num[i])
        assert one_cat[0].tolist() == cat[i].tolist()
        assert [(i, f, v) for _, f, v in one_unseen] == [u for u in unseen if u[0] == i]


@pytest.mark.parametrize(
    "changes",
    [
        {"age": "forty"},
        {"age": None},
        {"age": 5000},
        {"age": 10**400},
        {"spend": math.inf},
        {"plan": [3]},
        {"plan": None},
        {"age": 5000, "plan": [1]},
    ],
)
def test_one_invalid_record_gets_the_errors_of_a_batch(changes):
    schema = FeatureSchema(MANIFEST)
    with pytest.raises(RequestError) as alone:
        schema.to_arrays([record(**changes)], [7])
    with pytest.raises(RequestError) as in_batch:
        schema.to_arrays([record(), record(**changes)], [0, 7])
    assert alone.value.detail == in_batch.value.detail


# --------------------------------------------------------- answers precomputed for lookups


def test_precomputed_answers_equal_the_chain_per_request():
    b = make_bundle()
    info = b.customers.answers_info
    assert info["precomputed"] is True and info["rows"] == 40
    direct = b.predict_arrays(b.customers.num, b.customers.cat)
    for name in ("churn_probability", "threshold", "churn_label", "expected_total_sales"):
        np.testing.assert_array_equal(getattr(b.customers.answers, name), getattr(direct, name))
    assert b.customers.answers.churn_uniform == direct.churn_uniform == 0


def test_lookups_answer_the_same_with_and_without_precomputed_answers(app):
    ids = ["C5", "C0", "C39", "C8", "C5", "C12"]
    body = {"records": [{"customer_id": i} for i in ids]}
    _, precomputed = answer(app, body)
    app.state.manager.bundle = make_bundle(precompute=False)
    assert app.state.manager.bundle.customers.answers is None
    _, per_request = answer(app, body)
    assert predictions(precomputed) == predictions(per_request)
    for cid in ids[:2]:  # one record alone (a view of the answers) as in the batch
        _, one = answer(app, {"records": [{"customer_id": cid}]})
        first = next(p for p in predictions(per_request) if p["customer_id"] == cid)
        assert predictions(one) == [first]


@pytest.mark.parametrize("classifier", [Linear(0.5), Const([0.3, float("nan")] * 20)])
def test_lookup_answers_are_encoded_once_per_customer_and_equal_the_general_encoding(classifier):
    """The per-customer JSON kept for id lookups gives the bytes of the general encoder, with
    uniform and with mixed fallback levels, for repeated ids, first and later requests."""
    b = make_bundle(classifier=classifier)
    table = b.customers
    assert table.answer_json == [None] * 40
    for ids in (["C5", "C0", "C39", "C5"], ["C0", "C7", "C1"], ["C7"]):
        rows = b.lookup_rows(ids, list(range(len(ids))))
        want = encode_answer(
            "rid", "v1", ids, table.answers.take(np.array(rows)), b.has_value_model, {}
        )
        assert encode_lookup_answer("rid", "v1", ids, rows, table, b.has_value_model) == want
    assert [i for i, part in enumerate(table.answer_json) if part is not None] == [0, 1, 5, 7, 39]
    levels = {p["fallback_level"] for p in json.loads(want)["predictions"]}
    assert levels == ({"champion"} if isinstance(classifier, Linear) else {"fallback_model"})


def test_a_lookup_is_echoed_with_the_id_as_sent_whoever_asked_first(app):
    """``17850.0`` finds customer ``17850``; each answer echoes the id as its request sent
    it, in either order (the per-customer JSON cache holds the table's spelling only)."""
    import pyarrow as pa

    schema = FeatureSchema(MANIFEST)
    rows = [record(age=30 + i, spend=10.0, plan="a") for i in range(2)]
    frame = pa.table(
        {"customer_id": ["17850", "15240"], **{c: [r[c] for r in rows] for c in schema.columns}}
    )
    b = make_bundle().with_customers(
        CustomerTable.from_frame(frame, schema, "mem", None), None, "s"
    )
    assert b.customers.answer_json is not None
    app.state.manager.bundle = b
    for ids in (["17850.0"], ["17850"], ["17850.0", "17850"], ["15240", "15240,0"], ["15240"]):
        status, body = answer(app, {"records": [{"customer_id": i} for i in ids]})
        assert status == 200 and [p["customer_id"] for p in predictions(body)] == ids
    assert b.find_rows(["17850.0"], [0]) == ([0], True)
    assert b.find_rows(["17850"], [0]) == ([0], False)


def test_an_id_without_its_leading_zeros_is_answered_404_with_the_id_it_may_mean():
    """Ids '000'..'199': '7' (as an integer column or a spreadsheet writes it) is unknown,
    and the answer says which id it may have meant."""
    import pyarrow as pa

    schema = FeatureSchema(MANIFEST)
    rows = [record(age=30, spend=10.0, plan="a") for _ in range(3)]
    frame = pa.table(
        {"customer_id": ["000", "007", "A7"], **{c: [r[c] for r in rows] for c in schema.columns}}
    )
    b = make_bundle().with_customers(
        CustomerTable.from_frame(frame, schema, "mem", None), None, "s"
    )
    with pytest.raises(RequestError) as err:
        b.lookup_rows(["7", "8"], [0, 1])
    first, second = (d["msg"] for d in err.value.detail)
    assert first.endswith("; did you mean '007'? (ids are text: leading zeros count)")
    assert "did you mean" not in second


def test_no_answer_json_without_precomputed_answers_or_for_a_huge_table(monkeypatch):
    assert make_bundle(precompute=False).customers.answer_json is None
    monkeypatch.setattr("churn_serving.model.ANSWER_JSON_MAX_ROWS", 39)
    b = make_bundle()
    assert b.customers.answers is not None and b.customers.answer_json is None


def test_mixed_requests_put_lookups_and_feature_records_in_order(app):
    rec = record(age=70, plan="b")
    body = {
        "records": [
            {"customer_id": "C2"},
            {"features": rec},
            {"customer_id": "C9"},
            {"customer_id": "echo", "features": record()},
            {"customer_id": "C2"},
        ]
    }
    _, mixed = answer(app, body)
    _, c2 = answer(app, {"records": [{"customer_id": "C2"}]})
    _, c9 = answer(app, {"records": [{"customer_id": "C9"}]})
    _, f1 = answer(app, {"records": [{"features": rec}]})
    _, f2 = answer(app, {"records": [{"customer_id": "echo", "features": record()}]})
    want = [predictions(x)[0] for x in (c2, f1, c9, f2, c2)]
    assert predictions(mixed) == want


def test_a_model_raising_on_the_table_leaves_lookups_to_the_chain_per_request():
    b = make_bundle(classifier=Raises())
    assert b.customers.answers is None
    assert "KeyError" in b.customers.answers_info["reason"]
    assert b.stats.snapshot()["model_errors"] == {}  # nothing answered yet, nothing counted
    idx = b.lookup_rows(["C1"], [0])
    r = b.predict_arrays(b.customers.num[idx], b.customers.cat[idx])
    assert r.churn_level.tolist() == [1]  # the fallback model, counted as a request's error
    assert b.stats.snapshot()["model_errors"]["classifier"]["count"] == 1
    off = make_bundle(precompute=False)
    assert off.customers.answers is None and off.customers.describe()["answers"] == {
        "precomputed": False,
        "reason": "disabled",
    }


def test_invalid_outputs_are_precomputed_level_by_level():
    b = make_bundle(classifier=Const([0.3, float("nan")] * 20))
    answers = b.customers.answers
    assert answers is not None and answers.churn_uniform is None
    assert answers.churn_level.tolist() == [0, 1] * 20
    assert answers.threshold.tolist() == [0.4, 0.6] * 20
    half = answers.take(np.array([1, 3]))
    assert half.churn_probability.tolist() == [0.55, 0.55]


def test_a_new_table_is_answered_with_the_same_models():
    b = make_bundle()
    calls = b.predictors["classifier"].calls
    table = customers(b.schema, n=5)
    again = b.with_customers(table, None, "sig-2")
    assert again.customers.answers_info["rows"] == 5
    assert b.predictors["classifier"].calls == calls + 1
    kept = again.with_customers(again.customers, "newer table unusable", "sig-3")
    assert kept.customers is again.customers  # already answered: not computed again
    assert b.predictors["classifier"].calls == calls + 1


def test_chain_results_keep_one_level_flags_when_combined():
    one = ChainResult(
        np.array([0.1]),
        np.array([0], dtype=np.int8),
        np.array([0.4]),
        np.array([0], dtype=np.int8),
        np.array([3.0]),
        np.array([0], dtype=np.int8),
        0,
        0,
    )
    other = replace(one, churn_level=np.array([1], dtype=np.int8), churn_uniform=1)
    both = ChainResult.scatter(2, [([1], one), ([0], other)])
    assert both.churn_level.tolist() == [1, 0] and both.churn_uniform is None
    assert both.sales_uniform == 0
    assert ChainResult.concat([one, one]).churn_uniform == 0
    assert ChainResult.concat([one, other]).churn_uniform is None


# ----------------------------------------------------------------- the ASGI front


def test_the_front_counts_answers_and_errors_like_the_router(app):
    metrics: ServingMetrics = app.state.metrics
    assert answer(app, {"records": [{"customer_id": "C1"}]})[0] == 200
    assert answer(app, b'{"records": [')[0] == 422
    assert answer(app, {"records": [{"customer_id": "nobody"}]})[0] == 404
    text = metrics.render()[0].decode()
    for status in (200, 422, 404):
        labels = f'endpoint="/predict",method="POST",status="{status}"'
        assert f"churn_serving_requests_total{{{labels}}} 1.0" in text
    stats = app.state.manager.bundle.stats.snapshot()
    assert stats["records"] == 1 and stats["by_output"]["churn_probability"]["champion"] == 1


def test_request_ids_are_unique_hex():
    from churn_serving.app import RequestIds

    ids = RequestIds()
    seen = {ids() for _ in range(1000)}
    assert len(seen) == 1000
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in seen)


# ------------------------------------------------------------------------ inference log


def test_logged_lookups_hold_the_features_a_feature_record_would(tmp_path):
    """The inference log holds the same feature values for an id lookup as for the same
    customer's explicit feature record, in request order, with ``source`` telling them
    apart."""
    import polars as pl

    from churn_serving.inference_log import InferenceLogger

    settings = ServingSettings(inline_max_records=4)
    a = create_app(settings, storage=Storage(str(tmp_path)), background=False, aliases={})
    bundle = make_bundle()
    a.state.manager.bundle = bundle
    table = bundle.customers
    ids = ["C3", "C0", "C14", "C7", "C3"]  # C0, C14, C7: a null spend
    rows = [table.index[i] for i in ids]
    feats = [
        {
            **dict(zip(bundle.schema.numeric, table.num[r].tolist(), strict=True)),
            **dict(zip(bundle.schema.categorical, table.cat[r].tolist(), strict=True)),
        }
        for r in rows
    ]
    for f in feats:
        f["spend"] = None if math.isnan(f["spend"]) else f["spend"]
    bodies = [
        {"records": [{"customer_id": i} for i in ids]},
        {"records": [{"customer_id": i, "features": f} for i, f in zip(ids, feats, strict=True)]},
        {"columns": {"customer_id": ids[:2]}},
    ]
    for body in bodies:
        assert answer(a, body)[0] == 200
    logger: InferenceLogger = a.state.logger
    assert logger.flush() == 12
    [path] = sorted((tmp_path / "inference_log").glob("date=*/*.parquet"))
    frame = pl.read_parquet(path)
    assert frame["source"].to_list() == ["lookup"] * 5 + ["features"] * 5 + ["lookup"] * 2
    assert frame["customer_id"].to_list() == ids + ids + ids[:2]
    by_lookup, by_features = frame.slice(0, 5), frame.slice(5, 5)
    same = [c for c in frame.columns if c not in ("source", "request_id", "logged_at")]
    assert by_lookup.select(same).equals(by_features.select(same))
    assert by_lookup.schema == by_features.schema  # plain strings, not dictionaries
    assert by_lookup["spend"].is_nan().to_list() == [False, True, True, True, False]
    assert by_lookup["plan"].to_list() == ["b", "a", "a", "b", "b"]


def test_an_unknown_id_of_a_data_set_with_an_active_population_says_why(app):
    status, body = answer(app, {"records": [{"customer_id": "C1"}, {"customer_id": "gone"}]})
    assert status == 404
    assert body["detail"][0]["msg"] == (
        "unknown customer_id 'gone' (not in the latest current_features)"
    )
    manifest = {**MANIFEST, "feature_definition": {"active_within_days": 60}}
    bundle = replace(make_bundle(), manifest=manifest)
    with pytest.raises(RequestError) as err:
        bundle.lookup_rows(["gone"], [0])
    assert err.value.status == 404
    assert err.value.detail[0]["msg"] == (
        "unknown customer_id 'gone' (not in the latest current_features, which holds the "
        "customers active in the 60 days before its cut-off)"
    )
    manifest = {**MANIFEST, "feature_definition": {"exit_events": ["Cancellation Confirmation"]}}
    bundle = replace(make_bundle(), manifest=manifest)
    with pytest.raises(RequestError) as err:
        bundle.lookup_rows(["gone"], [0])
    assert err.value.detail[0]["msg"] == (
        "unknown customer_id 'gone' (not in the latest current_features; customers whose last "
        "activity is an exit event (Cancellation Confirmation) are left out until they come back)"
    )


def test_an_id_written_as_a_float_finds_its_customer():
    """Ingestion stores ``17850.0`` (a float column's export) as ``17850``: a client sending
    the id as the file wrote it finds the customer; an id that is still unknown is named as
    sent."""
    import pyarrow as pa

    schema = FeatureSchema(MANIFEST)
    rows = [record(age=30 + i, spend=10.0, plan="a") for i in range(3)]
    table = pa.table(
        {
            "customer_id": ["17850", "15240", "X.5"],
            **{c: [r[c] for r in rows] for c in schema.columns},
        }
    )
    bundle = replace(make_bundle(), customers=CustomerTable.from_frame(table, schema, "mem", None))
    assert bundle.lookup_rows(["17850.0", "15240,0", "17850"], [0, 1, 2]) == [0, 1, 0]
    with pytest.raises(RequestError) as err:
        bundle.lookup_rows(["17850.0", "99.0"], [0, 1])
    assert err.value.status == 404 and "'99.0'" in err.value.detail[0]["msg"]
    with pytest.raises(RequestError) as err:  # only a number loses its .0: X.5.0 is not X.5
        bundle.lookup_rows(["X.5.0"], [0])
    assert err.value.status == 404 and "'X.5.0'" in err.value.detail[0]["msg"]
    with pytest.raises(RequestError) as err:  # a huge id is not echoed whole
        bundle.lookup_rows(["x" * 1_000_000], [0])
    assert (
        len(err.value.detail[0]["msg"]) < 300 and "(1,000,000 chars)" in err.value.detail[0]["msg"]
    )


def test_a_compressed_body_is_refused_with_415_saying_why(app):
    """``Content-Encoding: gzip`` was ignored and the compressed bytes read as JSON:
    "str is not valid UTF-8: surrogates not allowed". Now 415 names the encoding."""
    import gzip

    body = gzip.compress(json.dumps({"records": [{"features": record()}]}).encode())
    status, _, raw = post(app, body, [(b"content-encoding", b"gzip")])
    assert status == 415
    assert json.loads(raw)["detail"].startswith("Content-Encoding 'gzip' is not accepted")
    plain = json.dumps({"records": [{"features": record()}]}).encode()
    assert post(app, plain, [(b"content-encoding", b"identity")])[0] == 200
