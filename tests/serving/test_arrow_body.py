"""``POST /predict`` with an Arrow IPC stream body and answer: the same answers as the JSON
bodies, the same validation rules, and clear JSON errors for anything else."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from churn_assets.lib.storage import Storage
from churn_serving import arrow_body
from churn_serving.app import SidecarApp, create_app
from churn_serving.schema import FeatureSchema, RequestError
from churn_serving.settings import ServingSettings
from tests.serving.test_request_path import answer, make_bundle, predictions
from tests.serving.test_request_path import post as post_predict
from tests.serving.test_units import MANIFEST, record

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

ARROW = arrow_body.ARROW_STREAM


@pytest.fixture
def app(tmp_path) -> SidecarApp:
    settings = ServingSettings(log_enabled=False, inline_max_records=4)
    a = create_app(settings, storage=Storage(str(tmp_path)), background=False, aliases={})
    a.state.manager.bundle = make_bundle()
    return a


def stream(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def post(
    app: Any, body: bytes, content_type: str = ARROW, accept: str | None = None
) -> tuple[int, str, bytes]:
    """POST /predict through the ASGI app, in process: status, content type, body."""
    headers = [(b"content-type", content_type.encode())]
    if accept:
        headers.append((b"accept", accept.encode()))
    status, answer_headers, content = post_predict(app, body, headers)
    return status, answer_headers[b"content-type"].decode(), content


FEATS = [
    record(),
    record(age=True, spend=None, country=None),
    record(plan="z", age=61),
    record(age=61, spend=999.0, plan="b"),
    record(age=25, spend=-50.0, country="US"),
]
IDS = ["x1", None, "7", "x4", "x5"]


def feature_table() -> pa.Table:
    return pa.table(
        {
            "customer_id": pa.array(IDS, type=pa.string()),
            "age": pa.array([int(f["age"]) for f in FEATS], type=pa.int64()),
            "spend": pa.array([f["spend"] for f in FEATS], type=pa.float64()),
            "score": pa.array([f["score"] for f in FEATS], type=pa.float32()),
            # categories dictionary-encoded, as pandas' categoricals and polars' Categorical
            # arrive
            "plan": pa.array([f["plan"] for f in FEATS]).dictionary_encode(),
            "country": pa.array([f["country"] for f in FEATS], type=pa.large_string()),
        }
    )


def test_an_arrow_body_answers_as_the_json_columnar_body(app):
    columnar = {"columns": {"customer_id": IDS, **{c: [f[c] for f in FEATS] for c in FEATS[0]}}}
    s1, by_json = answer(app, columnar)
    s2, media, raw = post(app, stream(feature_table()))
    assert s1 == s2 == 200
    assert media == "application/json"
    by_arrow = json.loads(raw)
    assert predictions(by_arrow) == predictions(by_json)
    assert predictions(by_arrow)[2]["unseen_categories"] == {"plan": "z"}
    assert by_arrow["count"] == 5


def test_the_arrow_answer_holds_the_json_answer_column_by_column(app):
    _, by_json = answer(
        app, {"columns": {"customer_id": IDS, **{c: [f[c] for f in FEATS] for c in FEATS[0]}}}
    )
    status, media, raw = post(app, stream(feature_table()), accept=ARROW)
    assert status == 200 and media == ARROW
    table = arrow_body.read_answer(raw)
    assert table.column_names == list(arrow_body.ANSWER_COLUMNS)
    meta = {k.decode(): v.decode() for k, v in table.schema.metadata.items()}
    assert meta["model_version"] == "v1" and meta["count"] == "5" and len(meta["request_id"]) == 32
    want = predictions(by_json)
    got = table.to_pylist()
    for g, w in zip(got, want, strict=True):
        assert g["customer_id"] == w["customer_id"]
        assert g["churn_probability"] == w["churn_probability"]
        assert g["churn_label"] == w["churn_label"]
        assert g["threshold"] == w["threshold"]
        assert g["expected_total_sales"] == w["expected_total_sales"]
        assert g["churn_level"] == w["fallback_levels"]["churn_probability"]
        assert g["sales_level"] == w["fallback_levels"]["expected_total_sales"]
        assert json.loads(g["unseen_categories"] or "{}") == w["unseen_categories"]
    # a JSON body may ask for the Arrow answer too
    status, media, raw = post(
        app, json.dumps({"records": [{"customer_id": "C3"}]}).encode(), "application/json", ARROW
    )
    assert status == 200 and media == ARROW
    assert arrow_body.read_answer(raw).column("customer_id").to_pylist() == ["C3"]


def test_arrow_id_lookups_answer_as_json_lookups(app):
    ids = ["C3", "C0", "C17", "C3"]
    _, listed = answer(app, {"records": [{"customer_id": i} for i in ids]})
    status, _, raw = post(app, stream(pa.table({"customer_id": ids})))
    assert status == 200
    assert predictions(json.loads(raw)) == predictions(listed)
    # integer ids are ids, as in JSON
    parsed = arrow_body.parse(stream(pa.table({"customer_id": pa.array([3, 0], pa.int32())})), 10)
    assert parsed.lookup_ids == ["3", "0"]
    status, media, raw = post(
        app, stream(pa.table({"customer_id": ["C1", "nobody"]})), accept=ARROW
    )
    assert status == 404 and media == "application/json"  # errors are JSON
    assert json.loads(raw)["detail"][0]["loc"] == ["body", "columns", "customer_id", 1]


def test_nan_is_a_missing_value_like_null(app):
    with_null = feature_table()
    spend = pa.array([250.5, math.nan, 3.0, 999.0, -50.0], type=pa.float64())
    with_nan = with_null.set_column(2, "spend", spend)
    _, _, a = post(app, stream(with_null))
    _, _, b = post(app, stream(with_nan))
    pa_, pb = predictions(json.loads(a)), predictions(json.loads(b))
    assert pa_[1]["churn_probability"] == pb[1]["churn_probability"]


@pytest.mark.parametrize(
    ("change", "kind", "loc"),
    [
        ({"age": pa.array(["40"] * 5)}, "wrong_type", ["body", "columns", "age"]),
        ({"plan": pa.array([1] * 5)}, "wrong_type", ["body", "columns", "plan"]),
        (
            {"age": pa.array([40, None, 40, 40, 40])},
            "null_not_allowed",
            ["body", "columns", "age", 1],
        ),
        ({"age": pa.array([40, 40, 5000, 40, 40])}, "out_of_range", ["body", "columns", "age", 2]),
        (
            {"spend": pa.array([1.0, math.inf, 1, 1, 1])},
            "not_finite",
            ["body", "columns", "spend", 1],
        ),
        ({"plan": pa.array(["a", "b", None, "a", "a"])}, "null_not_allowed", None),
        ({"colour": pa.array(["red"] * 5)}, "unknown_field", ["body", "columns", "colour"]),
    ],
)
def test_arrow_value_errors_name_column_and_record(app, change, kind, loc):
    table = feature_table()
    for name, values in change.items():
        if name in table.column_names:
            table = table.set_column(table.column_names.index(name), name, values)
        else:
            table = table.append_column(name, values)
    status, media, raw = post(app, stream(table), accept=ARROW)
    assert status == 422 and media == "application/json"
    [problem] = json.loads(raw)["detail"]
    assert problem["type"] == kind
    if loc is not None:
        assert problem["loc"] == loc


@pytest.mark.parametrize(
    ("body", "status", "kind"),
    [
        (b"", 422, "missing"),
        (b'{"records": []}', 422, "arrow_invalid"),
        (b"\xff\xff\xff\xff garbage", 422, "arrow_invalid"),
        (stream(pa.table({"customer_id": pa.array([], pa.string())})), 422, "too_short"),
        (stream(pa.table({"customer_id": [f"C{i}" for i in range(11)]})), 413, None),
        (stream(pa.table({"customer_id": ["C1", None]})), 422, "wrong_type"),
        (stream(pa.table({"customer_id": [1.5]})), 422, "wrong_type"),
    ],
)
def test_arrow_envelope_errors(body, status, kind):
    with pytest.raises(RequestError) as exc:
        arrow_body.parse(body, 10)
    assert exc.value.status == status
    if kind is not None:
        assert exc.value.detail[0]["type"] == kind


def test_duplicate_columns_are_refused():
    table = pa.Table.from_arrays([pa.array(["C1"]), pa.array(["C2"])], names=["customer_id"] * 2)
    with pytest.raises(RequestError) as exc:
        arrow_body.parse(stream(table), 10)
    assert exc.value.detail[0]["type"] == "duplicate"


def test_arrow_columns_by_source_names_equal_the_json_columns():
    schema = FeatureSchema(MANIFEST, aliases={"Age": "age", "Plan": "plan"})
    table = (
        feature_table()
        .drop_columns(["customer_id"])
        .rename_columns(["Age", "spend", "score", "Plan", "country"])
    )
    num, cat, unseen = schema.arrow_to_arrays(table)
    want_num, want_cat, want_unseen = schema.to_arrays(FEATS, list(range(len(FEATS))))
    np.testing.assert_array_equal(num, want_num)
    assert cat.tolist() == want_cat.tolist()
    assert unseen == want_unseen == [(2, "plan", "z")]


def test_a_version_without_value_model_answers_null_sales_in_arrow(app):
    from churn_serving.model import LEVELS, NO_VALUE_MODEL, FallbackStats, ModelBundle
    from tests.serving.test_request_path import Linear, customers

    models = {k: v for k, v in MANIFEST["models"].items() if not k.startswith("regressor")}
    manifest = {**MANIFEST, "models": models}
    schema = FeatureSchema(manifest)
    bundle = ModelBundle(
        version="v1",
        manifest=manifest,
        pointer={"version": "v1"},
        schema=schema,
        predictors={"classifier": Linear(0.5), "classifier_fallback": None},
        stats=FallbackStats(),
    ).with_customers(customers(schema), None, "sig")
    assert not bundle.has_value_model
    app.state.manager.bundle = bundle
    status, _, raw = post(app, stream(feature_table()), accept=ARROW)
    assert status == 200
    table = arrow_body.read_answer(raw)
    assert table.column("expected_total_sales").null_count == 5
    assert set(table.column("sales_level").to_pylist()) == {LEVELS[NO_VALUE_MODEL]}
    assert table.column("churn_probability").null_count == 0


def test_a_long_unseen_category_is_refused_before_it_is_spelled_out(app):
    """10,000 rows of a dictionary column all pointing at one 50 KB category (a 3 MB body)
    took the sidecar to 15 GB and answered 2.5 GB, echoing it per row. An unseen category
    over 1,000 characters is refused (422 ``too_long``), in an Arrow body before the
    dictionary is spelled out per row, and in a JSON record alike."""
    n = 10_000
    big = "x" * 50_000
    table = pa.table(
        {
            "customer_id": pa.array([f"c{i}" for i in range(n)]),
            "age": pa.array([30] * n, type=pa.int64()),
            "spend": pa.array([1.0] * n),
            "score": pa.array([0.5] * n, type=pa.float32()),
            "plan": pa.DictionaryArray.from_arrays(pa.array([0] * n, pa.int32()), [big]),
            "country": pa.array(["UK"] * n),
        }
    )
    status, _, raw = post(app, stream(table))
    assert status == 422 and len(raw) < 10_000
    (problem,) = json.loads(raw)["detail"]
    assert problem["type"] == "too_long" and problem["loc"] == ["body", "columns", "plan"]
    assert "a category of 50,000 characters (at most 1,000" in problem["msg"]
    status, body = answer(app, {"records": [{"features": record(plan="y" * 1001)}]})
    assert status == 422 and body["detail"][0]["type"] == "too_long"
    assert answer(app, {"records": [{"features": record(plan="y" * 1000)}]})[0] == 200
