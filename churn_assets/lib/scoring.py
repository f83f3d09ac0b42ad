"""Scoring with a deployed version: load (sha256-verified) and predict a feature frame."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl

from churn_assets.lib import deployment as dep
from churn_assets.lib.storage import Storage


@dataclass
class DeployedModels:
    """A loaded deployment: its manifest and pipelines by role."""

    version: str
    manifest: dict[str, Any]
    pipelines: dict[str, Any]

    @property
    def threshold(self) -> float:
        return float(self.manifest["models"]["classifier"]["threshold"])

    @property
    def columns(self) -> list[str]:
        f = self.manifest["features"]
        return [*f["numeric"], *f["categorical"]]

    @property
    def has_value_model(self) -> bool:
        """False for churn-only data sets (no value label): no ``regressor`` role."""
        return "regressor" in self.pipelines


def load_deployed(storage: Storage, version: str | None = None) -> DeployedModels:
    """The version the pointer names (or ``version``), every artifact verified."""
    if version is None:
        current = dep.read_current(storage)
        if current is None:
            raise dep.DeploymentError("nothing is deployed yet")
        version = current["version"]
    manifest = dep.read_manifest(storage, version)
    return DeployedModels(version, manifest, dep.load_models(storage, manifest))


def score_frame(deployed: DeployedModels, features: pl.DataFrame) -> pl.DataFrame:
    """customer_id, churn_probability, churn_label, expected_total_sales, model_version.

    The features are aligned to the version's own column list first (see
    :func:`~churn_assets.lib.feature_sets.align_to`); ``expected_total_sales`` is null when
    the version has no value model."""
    from churn_assets.lib.feature_sets import align_to
    from churn_assets.lib.models._common import predict_in_chunks

    frame = align_to(features, deployed.columns).to_pandas()
    proba = predict_in_chunks(deployed.pipelines["classifier"].predict_proba, frame)[:, 1]
    if deployed.has_value_model:
        value = pl.Series(
            "expected_total_sales",
            np.clip(
                predict_in_chunks(deployed.pipelines["regressor"].predict, frame), 0, None
            ).astype(float),
        )
    else:
        value = pl.Series("expected_total_sales", [None] * len(frame), dtype=pl.Float64)
    return pl.DataFrame(
        {
            "customer_id": frame["customer_id"].to_numpy(),
            "churn_probability": proba.astype(float),
            "churn_label": (proba >= deployed.threshold).astype(np.int8),
            "expected_total_sales": value,
            "model_version": [deployed.version] * len(frame),
        }
    )
