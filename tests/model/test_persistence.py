"""skops persistence: exact round trips, explicit allow-list, sha256."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import skops.io as sio
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.pipeline import Pipeline
from threadpoolctl import threadpool_limits

from churn_assets.lib.models import classification, regression
from churn_assets.lib.models.estimators import NaiveBlendRegressor
from churn_assets.lib.models.persistence import (
    ALLOWED_TYPES,
    UntrustedTypesError,
    load_pipeline,
    loads_pipeline,
    save_pipeline,
    sha256_file,
)
from churn_assets.lib.models.spec import FeatureSpec

from ._data import make_frame


class _Rogue(ClassifierMixin, BaseEstimator):
    """An estimator the allow-list does not know."""

    def fit(self, X, y):  # noqa: N803
        self.classes_ = np.array([0, 1])
        return self

    def predict(self, X):  # noqa: N803
        return np.zeros(len(X), dtype=int)


@pytest.fixture(autouse=True, scope="module")
def _single_thread() -> Iterator[None]:
    """Predictions outside the trainers: avoid OpenMP oversubscription on busy 2-core CI."""
    with threadpool_limits(limits=1):
        yield


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return make_frame(400, seed=4)


def _pipelines(frame: pd.DataFrame) -> dict[str, Pipeline]:
    spec = FeatureSpec.infer(frame)
    y, sales = frame["churned"], frame["total_sales"]
    pipes: dict[str, Pipeline] = {}
    for name in classification.BASE_CANDIDATES:
        pipes[f"clf_{name}"] = classification.build_classifier(name, spec).fit(frame, y)
    members = {n: classification.build_classifier(n, spec) for n in ("xgboost", "lightgbm")}
    members["hist_gradient_boosting"] = classification.build_classifier(
        "hist_gradient_boosting", spec
    )
    pipes["clf_ensemble"] = classification.build_ensemble(members).fit(frame, y)
    for name in regression.ALL_CANDIDATES:
        pipes[f"reg_{name}"] = regression.build_regressor(name, spec).fit(frame, sales)
    blend = NaiveBlendRegressor(regressor=regression.build_regressor("ridge", spec), weight=0.4)
    pipes["reg_naive_blend"] = Pipeline([("model", blend)]).fit(frame, sales)
    return pipes


def _predict(pipe: Pipeline, frame: pd.DataFrame) -> np.ndarray:
    return pipe.predict_proba(frame) if hasattr(pipe, "predict_proba") else pipe.predict(frame)


def test_every_candidate_round_trips_exactly(frame: pd.DataFrame, tmp_path: Path) -> None:
    for name, pipe in _pipelines(frame).items():
        untrusted = set(sio.get_untrusted_types(data=sio.dumps(pipe)))
        assert untrusted <= ALLOWED_TYPES, (name, untrusted - ALLOWED_TYPES)
        path = tmp_path / f"{name}.skops"
        digest = save_pipeline(pipe, path)
        assert digest == sha256_file(path) and len(digest) == 64
        loaded = load_pipeline(path, expected_sha256=digest)
        np.testing.assert_array_equal(_predict(pipe, frame), _predict(loaded, frame), name)


def test_no_pickle_on_disk(frame: pd.DataFrame, tmp_path: Path) -> None:
    spec = FeatureSpec.infer(frame)
    pipe = classification.build_classifier("logistic_regression", spec).fit(frame, frame["churned"])
    path = tmp_path / "m.skops"
    save_pipeline(pipe, path)
    assert path.read_bytes()[:2] == b"PK"  # skops zip container, not a pickle stream


def test_unknown_types_are_refused(frame: pd.DataFrame, tmp_path: Path) -> None:
    rogue = Pipeline([("model", _Rogue())]).fit(frame, frame["churned"])
    path = tmp_path / "rogue.skops"
    save_pipeline(rogue, path)
    with pytest.raises(UntrustedTypesError, match="_Rogue"):
        load_pipeline(path)
    with pytest.raises(UntrustedTypesError):
        loads_pipeline(path.read_bytes())
    rogue_type = f"{_Rogue.__module__}._Rogue"
    assert isinstance(load_pipeline(path, extra_trusted=[rogue_type]), Pipeline)


def test_sha_mismatch_refused(frame: pd.DataFrame, tmp_path: Path) -> None:
    spec = FeatureSpec.infer(frame)
    pipe = regression.build_regressor("ridge", spec).fit(frame, frame["total_sales"])
    path = tmp_path / "nested" / "ridge.skops"
    save_pipeline(pipe, path)
    with pytest.raises(ValueError, match="sha256 mismatch"):
        load_pipeline(path, expected_sha256="0" * 64)
