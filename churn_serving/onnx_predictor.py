"""A deployed model as an ONNX graph, answered by ONNX Runtime.

Every graph the platform deploys has the same interface (written by
:mod:`churn_assets.lib.onnx_export`): two inputs, ``numeric_features`` (``tensor(double)``
``(n, k)`` in the manifest's numeric feature order, NaN for missing) and
``categorical_features`` (``tensor(string)`` ``(n, m)``, canonical category strings and
``"__missing__"`` for nulls), either absent when there are no such features; and one output
holding the positive-class probabilities (column 1 of ``probabilities``) or the predicted
values.

This module needs only ``onnxruntime`` and numpy: the serving image has no scikit-learn.
"""

from __future__ import annotations

from typing import Any

import numpy as np

#: Graph inputs: every numeric feature, every categorical feature.
NUMERIC_INPUT = "numeric_features"
CATEGORICAL_INPUT = "categorical_features"
#: Requests of at least this many rows run on ``batch_threads`` intra-op threads.
BATCH_MIN_ROWS = 256
#: Largest accepted |ONNX − pipeline|: absolute for probabilities; for values, relative to
#: the largest value of the sample (max(1, max |pipeline|)), since tree libraries such as
#: XGBoost sum in float32 themselves.
TOLERANCE = 1e-6


def session_options(threads: int) -> Any:
    """ONNX Runtime options for small, latency-bound graphs on ``threads`` threads."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    # idle worker threads sleep instead of spinning: on a small machine they would take the
    # event loop's core
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return so


class OnnxPredictor:
    """``predict(num, cat)`` of one deployed graph: positive-class probability (``kind
    "classifier"``) or predicted value (``"regressor"``) per row, float64."""

    def __init__(
        self,
        data: bytes,
        kind: str,
        numeric: list[str],
        categorical: list[str],
        *,
        output: str | None = None,
        column: int | None = None,
        batch_threads: int = 1,
    ):
        import onnxruntime as ort

        self.kind = kind
        self.numeric = list(numeric)
        self.categorical = list(categorical)
        providers = ["CPUExecutionProvider"]
        self.session = ort.InferenceSession(data, session_options(1), providers=providers)
        self.batch_session = (
            ort.InferenceSession(data, session_options(batch_threads), providers=providers)
            if batch_threads > 1
            else self.session
        )
        got = {i.name: i.shape[1] for i in self.session.get_inputs()}
        expected = {NUMERIC_INPUT: len(self.numeric), CATEGORICAL_INPUT: len(self.categorical)}
        expected = {k: v for k, v in expected.items() if v}
        if got != expected:
            raise ValueError(f"graph inputs {got} differ from the deployed features {expected}")
        self._numeric_input = NUMERIC_INPUT in got
        self._categorical_input = CATEGORICAL_INPUT in got
        outputs = [o.name for o in self.session.get_outputs()]
        if output is None:
            output = "probabilities" if kind == "classifier" else outputs[0]
        if output not in outputs:
            raise ValueError(f"graph has no output {output!r} (outputs: {outputs})")
        self.output = output
        self.column = (1 if kind == "classifier" else 0) if column is None else column
        self._outputs = [output]

    def feed(self, num: np.ndarray, cat: np.ndarray) -> dict[str, np.ndarray]:
        """The graph's inputs for feature arrays ``num`` (float64) and ``cat`` (str)."""
        feed: dict[str, np.ndarray] = {}
        if self._numeric_input:
            feed[NUMERIC_INPUT] = np.ascontiguousarray(num, dtype=np.float64)
        if self._categorical_input:
            feed[CATEGORICAL_INPUT] = np.ascontiguousarray(cat, dtype=object)
        return feed

    def predict(self, num: np.ndarray, cat: np.ndarray) -> np.ndarray:
        """Positive-class probability or predicted value per row (may raise): one
        ``InferenceSession.run``, on ``batch_threads`` threads from :data:`BATCH_MIN_ROWS`
        rows."""
        session = self.batch_session if len(num) >= BATCH_MIN_ROWS else self.session
        return self._run(session, num, cat)

    def predict_background(self, num: np.ndarray, cat: np.ndarray) -> np.ndarray:
        """:meth:`predict` on the one-thread session whatever the number of rows."""
        return self._run(self.session, num, cat)

    def _run(self, session: Any, num: np.ndarray, cat: np.ndarray) -> np.ndarray:
        out = np.asarray(session.run(self._outputs, self.feed(num, cat))[0])
        if out.ndim == 2:
            out = out[:, self.column if out.shape[1] > self.column else 0]
        return out.astype(np.float64, copy=False).reshape(-1)


def compare(
    got: np.ndarray, expected: np.ndarray, kind: str, threshold: float | None = None
) -> dict[str, Any]:
    """How far ``got`` is from ``expected`` (the pipeline's answers on the same rows).

    ``max_abs_diff`` is the largest absolute difference (NaN on both sides counts as equal).
    Probabilities (``kind`` "classifier") must be within :data:`TOLERANCE` absolutely, with
    the same labels at ``threshold`` (``labels_equal``). Values are judged row by row at their
    own magnitude: ``|got - expected| <= TOLERANCE * max(1, |expected|)`` on every row
    (numpy.allclose's rule with 1 as the absolute floor), so a far-out value near 1e16, where
    float64 steps by units, cannot hide an ordinary value that is off; ``max_rel_diff`` is
    the largest such ratio and ``max_rel_diff_expected`` the pipeline's value on that row.
    ``ok`` is the verdict, ``reason`` says why not.
    """
    got = np.asarray(got, dtype=np.float64).reshape(-1)
    expected = np.asarray(expected, dtype=np.float64).reshape(-1)
    if got.shape != expected.shape:
        return {
            "ok": False,
            "rows": int(expected.size),
            "reason": f"{got.size} answers for {expected.size} rows",
        }
    both_nan = np.isnan(got) & np.isnan(expected)
    diff = np.nan_to_num(np.where(both_nan, 0.0, np.abs(got - expected)), nan=np.inf)
    max_abs = float(diff.max()) if diff.size else 0.0
    out: dict[str, Any] = {"rows": int(expected.size), "max_abs_diff": max_abs}
    if kind == "classifier":
        t = 0.5 if threshold is None else float(threshold)
        labels_equal = bool(np.array_equal(got >= t, expected >= t))
        out["labels_equal"] = labels_equal
        out["ok"] = max_abs <= TOLERANCE and labels_equal
        if not out["ok"]:
            out["reason"] = f"differs from the pipeline by {max_abs:.3g}" + (
                "" if labels_equal else " and changes labels at the threshold"
            )
        return out
    scale = np.maximum(1.0, np.abs(np.nan_to_num(expected, nan=1.0, posinf=1.0, neginf=1.0)))
    same = (got == expected) | both_nan
    with np.errstate(invalid="ignore"):
        rel = np.where(same, 0.0, np.nan_to_num(diff / scale, nan=np.inf))
    worst = int(np.argmax(rel)) if rel.size else 0
    out["max_rel_diff"] = float(rel[worst]) if rel.size else 0.0
    out["max_rel_diff_expected"] = float(expected[worst]) if rel.size else None
    out["ok"] = out["max_rel_diff"] <= TOLERANCE
    if not out["ok"]:
        out["reason"] = (
            f"differs from the pipeline by {out['max_rel_diff']:.3g} relative on the value "
            f"{expected[worst]:.6g} (tolerance {TOLERANCE:g} of max(1, |value|))"
        )
    return out
