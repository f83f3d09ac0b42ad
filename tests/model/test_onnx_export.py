"""ONNX graphs of every deployable candidate, verified against the pipelines."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from churn_assets.lib import onnx_export as ox
from churn_serving.onnx_predictor import TOLERANCE, OnnxPredictor, compare
from tests.model._data import make_frame

CLASSIFIERS = [
    "logistic_regression",
    "random_forest",
    "extra_trees",
    "hist_gradient_boosting",
    "xgboost",
    "lightgbm",
]
REGRESSORS = [
    "naive_baseline",
    "ridge",
    "poly_ridge",
    "random_forest",
    "hist_gradient_boosting",
    "xgboost",
    "lightgbm",
    "lightgbm_tweedie",
    "hgb_log_target",
    # a value model shrunk toward the naive forecast (NaiveBlendRegressor)
    "blend:ridge",
    "blend:hgb_log_target",
]


@pytest.fixture(autouse=True)
def one_thread():
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):
        yield


@pytest.fixture(scope="module")
def data() -> dict[str, Any]:
    from churn_assets.lib.models.spec import FeatureSpec, feature_schema

    frame = make_frame(600, seed=3)
    spec = FeatureSpec.infer(frame)
    columns = (spec.numeric, spec.categorical)
    num, cat = ox.verification_rows(frame, *columns, schema=feature_schema(frame, spec))
    return {"frame": frame, "spec": spec, "columns": columns, "num": num, "cat": cat}


def fitted(kind: str, name: str, data: dict[str, Any]) -> Any:
    from churn_assets.lib.models.classification import build_classifier, build_ensemble
    from churn_assets.lib.models.regression import build_regressor

    frame, spec = data["frame"], data["spec"]
    if kind == "classifier":
        y = frame["churned"].to_numpy()
        if name == "ensemble":
            members = ["hist_gradient_boosting", "lightgbm", "logistic_regression"]
            pipeline = build_ensemble({n: build_classifier(n, spec, y_train=y) for n in members})
        else:
            pipeline = build_classifier(name, spec, y_train=y)
    else:
        y = frame["total_sales"].to_numpy()
        if name.startswith("blend:"):
            from sklearn.pipeline import Pipeline

            from churn_assets.lib.models.estimators import NaiveBlendRegressor

            inner = build_regressor(name.removeprefix("blend:"), spec)
            pipeline = Pipeline([("model", NaiveBlendRegressor(regressor=inner, weight=0.6))])
        else:
            pipeline = build_regressor(name, spec)
    return pipeline.fit(frame, y)


def test_probe_rows_cover_missing_unseen_and_extreme_values(data):
    num, cat = data["num"], data["cat"]
    assert np.isnan(num).all(axis=1).any()  # every numeric missing
    assert (cat == ox.UNSEEN_CATEGORY).all(axis=1).any()
    assert (cat == ox.MISSING_CATEGORY).all(axis=1).any()
    assert np.nanmax(np.abs(num)) > 1e6  # far outside the training range


@pytest.mark.parametrize(
    ("kind", "name"),
    [("classifier", n) for n in [*CLASSIFIERS, "ensemble"]]
    + [("regressor", n) for n in REGRESSORS],
)
def test_every_candidate_converts_and_equals_its_pipeline(data, kind, name):
    pipeline = fitted(kind, name, data)
    columns, num, cat = data["columns"], data["num"], data["cat"]
    graph = ox.to_onnx(pipeline, *columns)
    expected = ox.pipeline_predict(pipeline, kind, num, cat, columns)
    got = OnnxPredictor(graph, kind, *columns).predict(num, cat)
    diff = np.abs(got - expected)
    if kind == "classifier":
        assert diff.max() <= TOLERANCE
        assert np.array_equal(got >= 0.3, expected >= 0.3)
    else:
        assert diff.max() <= TOLERANCE * max(1.0, np.abs(expected).max())
    single = [
        OnnxPredictor(graph, kind, *columns).predict(num[i : i + 1], cat[i : i + 1])
        for i in (0, len(num) - 1)
    ]
    assert np.abs(np.concatenate(single) - expected[[0, len(num) - 1]]).max() <= TOLERANCE * max(
        1.0, np.abs(expected).max()
    )


def test_categorical_splits_of_hist_gradient_boosting_follow_scikit_learn():
    """Categories in the left set go left, other known ones right, NaN and unknown codes the
    missing-value direction; the tree's own category encoding is undone."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    rng = np.random.default_rng(0)
    n = 3000
    x = np.column_stack([rng.normal(size=n), rng.choice([3.0, 7.0, 11.0, 20.0], n)])
    x[rng.random(n) < 0.1, 1] = np.nan
    y = ((x[:, 1] == 7.0) | (x[:, 1] == 20.0) & (x[:, 0] > 0)).astype(int)
    est = HistGradientBoostingClassifier(max_iter=30, categorical_features=[1]).fit(x, y)
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import DoubleTensorType

    ox.register_converters()
    with ox._hgb_categorical_support(est):
        model = convert_sklearn(
            est,
            initial_types=[("x", DoubleTensorType([None, 2]))],
            target_opset=ox.TARGET_OPSET,
            options={id(est): {"zipmap": False}},
        )
    import onnxruntime as ort

    probe = np.vstack([x, [[0.5, 5.0], [0.5, np.nan], [-0.5, 20.0], [0.5, 20.0]]])
    got = ort.InferenceSession(model.SerializeToString()).run(None, {"x": probe})[1][:, 1]
    np.testing.assert_allclose(got, est.predict_proba(probe)[:, 1], rtol=0, atol=TOLERANCE)


def test_a_step_without_converter_is_served_as_pipeline_with_the_reason(data):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import FunctionTransformer

    from churn_assets.lib.models.persistence import dumps_pipeline
    from churn_assets.lib.models.preprocessing import frame_cleaner, linear_preprocessor

    frame, spec = data["frame"], data["spec"]
    y = frame["churned"].to_numpy()
    odd = Pipeline(
        [
            ("clean", frame_cleaner(spec)),
            ("prep", linear_preprocessor(spec)),
            ("square", FunctionTransformer(np.square)),
            ("model", LogisticRegression(max_iter=500)),
        ]
    ).fit(frame, y)
    good = fitted("classifier", "logistic_regression", data)
    models = {
        "classifier": {"file": "classifier.skops", "threshold": 0.4},
        "classifier_fallback": {"file": "classifier_fallback.skops", "threshold": 0.5},
    }
    artifacts = {"classifier_fallback.skops": dumps_pipeline(good)}
    features = {"numeric": spec.numeric, "categorical": spec.categorical}
    out, entries = ox.export_version(artifacts, models, {"classifier": odd}, features, frame)
    assert entries["classifier"]["serves"] == "pipeline"
    assert entries["classifier"]["verified"] is False
    assert "conversion failed" in entries["classifier"]["reason"]
    assert "classifier.onnx" not in out
    fb = entries["classifier_fallback"]
    assert fb["serves"] == "onnxruntime" and fb["verified"] is True
    assert fb["max_abs_diff"] <= TOLERANCE and fb["labels_equal"] is True
    assert fb["target_opset"] == ox.TARGET_OPSET
    from churn_assets.lib.deployment import sha256

    assert fb["sha256"] == sha256(out["classifier_fallback.onnx"])
    num, cat, expected = ox.read_rows(out[ox.VERIFICATION_FILE], data["columns"])
    assert set(expected) == {"classifier", "classifier_fallback"}
    np.testing.assert_allclose(
        expected["classifier"], odd.predict_proba(frame_of(num, cat, spec))[:, 1]
    )


def test_a_graph_that_differs_is_not_verified():
    got = np.array([0.1, 0.5, 0.9])
    assert compare(got, got, "classifier", 0.5)["ok"]
    off = compare(got + 2e-6, got, "classifier", 0.5)
    assert not off["ok"] and "differs" in off["reason"]
    flip = compare(np.array([0.1, 0.4999999, 0.9]), got, "classifier", 0.5)
    assert flip["max_abs_diff"] < TOLERANCE and not flip["labels_equal"] and not flip["ok"]
    values = np.array([10.0, 5000.0])
    assert compare(values + 1e-6, values, "regressor")["ok"]  # 1e-7 of each value
    assert not compare(values + 1e-3, values, "regressor")["ok"]  # 1e-4 of 10: not ok


def frame_of(num: np.ndarray, cat: np.ndarray, spec: Any) -> Any:
    import pandas as pd

    data = {c: num[:, i] for i, c in enumerate(spec.numeric)}
    data.update({c: cat[:, j] for j, c in enumerate(spec.categorical)})
    return pd.DataFrame(data)[[*spec.numeric, *spec.categorical]]


def test_forest_thresholds_compare_like_scikit_learn_in_float32():
    """Forests compare float32(x) with thresholds between float32 values: values with two
    decimals (not float32-representable) land on both sides of such thresholds."""
    import onnxruntime as ort
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import DoubleTensorType
    from sklearn.ensemble import RandomForestClassifier

    rng = np.random.default_rng(1)
    x = np.round(rng.uniform(0, 100, (4000, 3)), 2)
    y = (x[:, 0] + rng.normal(0, 20, 4000) > 50).astype(int)
    est = RandomForestClassifier(n_estimators=50, min_samples_leaf=1, random_state=0).fit(x, y)
    ox.register_converters()
    model = convert_sklearn(
        est,
        initial_types=[("x", DoubleTensorType([None, 3]))],
        target_opset=ox.TARGET_OPSET,
        options={id(est): {"zipmap": False}},
    )
    got = ort.InferenceSession(model.SerializeToString()).run(None, {"x": x})[1][:, 1]
    np.testing.assert_allclose(got, est.predict_proba(x)[:, 1], rtol=0, atol=TOLERANCE)


def test_many_one_hot_columns_reach_the_linear_models_sparse_with_the_same_answers():
    """Fifteen categorical columns of 60 levels beside 20 numeric ones: the linear
    preprocessor's output is sparse (its density is below 0.3), the linear candidates fit
    on it with the answers they give on the dense matrix, and their ONNX graphs equal them."""
    import pandas as pd
    from scipy import sparse
    from sklearn.base import clone

    from churn_assets.lib.models.classification import build_classifier
    from churn_assets.lib.models.regression import build_regressor
    from churn_assets.lib.models.spec import FeatureSpec, feature_schema

    rng = np.random.default_rng(5)
    n = 3000
    frame = pd.DataFrame({f"x{i}": rng.normal(size=n) for i in range(20)})
    for j in range(15):
        frame[f"c{j}"] = rng.choice([f"v{k}" for k in range(60)], n)
    churned = (frame["x0"] + (frame["c0"] < "v20") + rng.normal(size=n) > 0.7).astype(int)
    sales = np.exp(frame["x1"] + (frame["c1"] < "v10")) * 100
    spec = FeatureSpec(
        numeric=[f"x{i}" for i in range(20)], categorical=[f"c{j}" for j in range(15)]
    )
    columns = (spec.numeric, spec.categorical)
    num, cat = ox.verification_rows(frame, *columns, schema=feature_schema(frame, spec))
    for kind, pipeline, y in (
        (
            "classifier",
            build_classifier("logistic_regression", spec, y_train=churned.to_numpy()),
            churned,
        ),
        ("regressor", build_regressor("ridge", spec), sales),
    ):
        dense = clone(pipeline)
        dense.named_steps["prep"].set_params(cat__sparse_output=False)
        pipeline.fit(frame, y.to_numpy())
        dense.fit(frame, y.to_numpy())
        assert sparse.issparse(pipeline[:-1].transform(frame.head(50)))
        expected = ox.pipeline_predict(pipeline, kind, num, cat, columns)
        np.testing.assert_allclose(
            expected, ox.pipeline_predict(dense, kind, num, cat, columns), rtol=1e-6, atol=1e-6
        )
        got = OnnxPredictor(ox.to_onnx(pipeline, *columns), kind, *columns).predict(num, cat)
        assert np.abs(got - expected).max() <= TOLERANCE * max(1.0, np.abs(expected).max())
