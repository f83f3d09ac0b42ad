"""A deployed scikit-learn pipeline answering directly: the fallback for a model whose ONNX
graph is missing or did not verify. Needs the training stack (scikit-learn, skops, pandas):
importing this module fails in the slim serving image, and the model is then skipped by the
fallback chain."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd  # noqa: F401  (fail at import when the training stack is absent)
import sklearn  # noqa: F401


class PipelinePredictor:
    """``predict(num, cat)`` of a skops-serialized pipeline on a pandas frame."""

    def __init__(self, data: bytes, kind: str, numeric: list[str], categorical: list[str]):
        from churn_assets.lib.models.persistence import loads_pipeline

        self.pipeline = loads_pipeline(data)
        self.kind = kind
        self.numeric = list(numeric)
        self.categorical = list(categorical)
        self._pos = 1
        if kind == "classifier":
            classes = list(getattr(self.pipeline, "classes_", [0, 1]))
            self._pos = classes.index(1) if 1 in classes else len(classes) - 1

    def predict(self, num: np.ndarray, cat: np.ndarray) -> np.ndarray:
        """Positive-class probability or predicted value per row (may raise)."""
        data: dict[str, Any] = {c: num[:, i] for i, c in enumerate(self.numeric)}
        data.update({c: cat[:, j] for j, c in enumerate(self.categorical)})
        frame = pd.DataFrame(data, columns=[*self.numeric, *self.categorical])
        if self.kind == "classifier":
            return np.asarray(self.pipeline.predict_proba(frame), dtype=np.float64)[:, self._pos]
        return np.asarray(self.pipeline.predict(frame), dtype=np.float64).reshape(-1)
