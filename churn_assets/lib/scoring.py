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
    """customer_id, churn_probability, churn_label, expected_total_sales, model_version."""
    frame = features.select(["customer_id", *deployed.columns]).to_pandas()
    proba = deployed.pipelines["classifier"].predict_proba(frame)[:, 1]
    value = np.clip(deployed.pipelines["regressor"].predict(frame), 0, None)
    return pl.DataFrame(
        {
            "customer_id": frame["customer_id"].to_numpy(),
            "churn_probability": proba.astype(float),
            "churn_label": (proba >= deployed.threshold).astype(np.int8),
            "expected_total_sales": value.astype(float),
            "model_version": [deployed.version] * len(frame),
        }
    )
