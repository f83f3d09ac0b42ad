"""Deployed pipelines as ONNX graphs, verified against the pipelines before they serve.

Each model of a version (``FrameCleaner → ColumnTransformer → estimator`` pipelines, the
soft-voting ensemble, the naive baseline) becomes ONE graph, preprocessing included, with
the interface of :mod:`churn_serving.onnx_predictor`: a double matrix of the numeric
features and a string matrix of the categorical ones (split into columns inside the graph)
and the probabilities
(``zipmap`` off) or values as output. Converters: skl2onnx for scikit-learn, onnxmltools'
LightGBM and XGBoost converters (registered with ``update_registered_converter``), and the
platform's own for its steps:

* ``FrameCleaner``: numeric inputs with ±inf become NaN, categorical inputs pass through
  (the sidecar sends canonical category strings);
* ``NaiveBaselineRegressor``: the naive column with nulls as the training mean, floored at 0;
* ``TransformedTargetRegressor`` with the log1p target: ``max(expm1(inner), 0)``;
* ``NaiveBlendRegressor`` (a value model shrunk toward the naive forecast): both graphs on
  the same inputs, then ``max(w * model + (1 - w) * naive, 0)`` in double precision;
* ``HistGradientBoosting*`` with native categorical splits: skl2onnx writes categorical
  nodes as threshold nodes, which is wrong; here each categorical split becomes a chain of
  equality nodes over the categories that do NOT take the missing-value direction (the
  subtree they lead to is repeated per category), which is exactly scikit-learn's rule
  (known category in the left set → left, other known category → right, NaN / unknown →
  the missing-value direction).

Inputs are double, so numeric thresholds compare as in the libraries: boosters in double
(double thresholds and leaf sums, ``ai.onnx.ml`` 3 tensor attributes); scikit-learn's forests
and XGBoost compare ``float32(x)`` with float32 thresholds, so their part of the graph casts
to float32 first (skl2onnx adjusts forest thresholds to float32 for that).

Verification (:func:`verify`) runs graph and pipeline on the same rows: a sample of the
version's reference data plus probes (all numerics missing, unseen and missing categories,
numerics at ±1e6 × their training range). A graph serves only when every probability is
within 1e-6 of the pipeline's, every value within 1e-6 × max(1, |pipeline value|) of it,
row by row (:func:`compare_rows`), and the labels at the stored threshold are identical;
otherwise the manifest records why, and the pipeline serves. Each value is judged at its own
magnitude: the far-out probes can give values near 1e16, where float64 steps by 1 or 2, so
a ``max_abs_diff`` of a few units there is rounding (2 on 7.3e15 is 3e-16 relative), while
an ordinary customer's value must agree to 1e-6 of itself.
The rows and the pipeline's answers are stored with the version, so the sidecar repeats the
comparison when it loads the version without needing scikit-learn.
"""

from __future__ import annotations

import io
import itertools
import warnings
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any
from unittest import mock

import numpy as np

from churn_serving.onnx_predictor import (
    CATEGORICAL_INPUT,
    NUMERIC_INPUT,
    TOLERANCE,
    OnnxPredictor,
    compare,
)

#: Opsets of every graph: ONNX 18 and ai.onnx.ml 3 (double-precision tree ensembles).
TARGET_OPSET: dict[str, int] = {"": 18, "ai.onnx.ml": 3}
#: Verification rows taken from the reference sample.
VERIFY_ROWS = 2000
#: Artifact with the verification rows and each model's pipeline answers.
VERIFICATION_FILE = "onnx_verification.parquet"
#: A category no encoder has seen.
UNSEEN_CATEGORY = "\x00churn-unseen-category\x00"
MISSING_CATEGORY = "__missing__"
ROLE_KIND = {
    "classifier": "classifier",
    "classifier_fallback": "classifier",
    "regressor": "regressor",
    "regressor_fallback": "regressor",
}

_registered = False
#: Known category codes of each HistGradientBoosting tree being converted (id(tree) → map).
_HGB_KNOWN: dict[int, tuple[np.ndarray, dict[int, list[tuple[int, float]]]]] = {}


# ------------------------------------------------------------------------ converters


def _frame_cleaner_parser(scope: Any, model: Any, inputs: list[Any], custom_parsers=None):
    """One output per feature, named like it (so the ColumnTransformer finds it by name)."""
    op = scope.declare_local_operator("ChurnFrameCleaner", model)
    by_name = {v.raw_name: v for v in inputs}
    for col in [*(model.numeric or []), *(model.categorical or [])]:
        if col not in by_name:
            raise KeyError(f"FrameCleaner: no graph input named {col!r}")
        op.inputs.append(by_name[col])
        op.outputs.append(scope.declare_local_variable(col, by_name[col].type.__class__([None, 1])))
    return list(op.outputs)


def _frame_cleaner_shape(operator: Any) -> None:
    for i, o in zip(operator.inputs, operator.outputs, strict=True):
        o.type = i.type.__class__([None, 1])


def _frame_cleaner_convert(scope: Any, operator: Any, container: Any) -> None:
    """Identity per column: the graph's packed front (:func:`_pack_inputs`) already maps
    ±inf to NaN for every numeric input, and categories arrive canonical."""
    for i, o in zip(operator.inputs, operator.outputs, strict=True):
        container.add_node(
            "Identity", [i.full_name], [o.full_name], name=scope.get_unique_operator_name("Id")
        )


def _cast(scope: Any, container: Any, source: str, output: str, to: int) -> str:
    """Add ``output = Cast(source, to)`` (an ONNX ``TensorProto`` type); returns ``output``."""
    container.add_node(
        "Cast", [source], [output], to=to, name=scope.get_unique_operator_name("Cast")
    )
    return output


def _naive_shape(operator: Any) -> None:
    from skl2onnx.common.data_types import DoubleTensorType

    operator.outputs[0].type = DoubleTensorType([None, 1])


def _naive_convert(scope: Any, operator: Any, container: Any) -> None:
    from onnx import TensorProto

    model = operator.raw_operator
    out = operator.outputs[0].full_name
    mean = scope.get_unique_variable_name("mean")
    container.add_initializer(mean, TensorProto.DOUBLE, [], [float(model.mean_)])
    if model.uses_column_:
        x = next((v for v in operator.inputs if v.raw_name == model.column), None)
        if x is None:
            raise KeyError(f"naive baseline needs the input {model.column!r}")
        is_nan, filled = (scope.get_unique_variable_name(n) for n in ("is_nan", "filled"))
        zero = scope.get_unique_variable_name("zero")
        container.add_initializer(zero, TensorProto.DOUBLE, [], [0.0])
        container.add_node(
            "IsNaN", [x.full_name], [is_nan], name=scope.get_unique_operator_name("IsNaN")
        )
        container.add_node(
            "Where",
            [is_nan, mean, x.full_name],
            [filled],
            name=scope.get_unique_operator_name("Where"),
        )
        container.add_node("Max", [filled, zero], [out], name=scope.get_unique_operator_name("Max"))
        return
    # the training mean for every row: (n, 1) of it
    first = operator.inputs[0].full_name
    shape, rows, ones = (scope.get_unique_variable_name(n) for n in ("shape", "rows", "ones"))
    start, end, one = (scope.get_unique_variable_name(n) for n in ("start", "end", "one"))
    container.add_initializer(start, TensorProto.INT64, [1], [0])
    container.add_initializer(end, TensorProto.INT64, [1], [1])
    container.add_initializer(one, TensorProto.INT64, [1], [1])
    container.add_node("Shape", [first], [shape], name=scope.get_unique_operator_name("Shape"))
    container.add_node(
        "Slice", [shape, start, end], [rows], name=scope.get_unique_operator_name("Slice")
    )
    dims = scope.get_unique_variable_name("dims")
    container.add_node(
        "Concat", [rows, one], [dims], axis=0, name=scope.get_unique_operator_name("Concat")
    )
    container.add_node("Expand", [mean, dims], [out], name=scope.get_unique_operator_name("Expand"))
    del ones


def _log_target_parser(scope: Any, model: Any, inputs: list[Any], custom_parsers=None):
    """``TransformedTargetRegressor(func=log1p_nonneg, inverse_func=expm1_nonneg)``."""
    from skl2onnx._parse import _parse_sklearn
    from skl2onnx.common.data_types import DoubleTensorType

    from churn_assets.lib.models.estimators import expm1_nonneg

    if model.inverse_func is not expm1_nonneg:
        raise NotImplementedError(
            f"TransformedTargetRegressor with inverse {model.inverse_func!r} (only the "
            "log1p target converts)"
        )
    inner = _parse_sklearn(scope, model.regressor_, inputs, custom_parsers=custom_parsers)[0]
    op = scope.declare_local_operator("ChurnExpm1Nonneg", model)
    op.inputs.append(inner)
    op.outputs.append(scope.declare_local_variable("variable", DoubleTensorType([None, 1])))
    return list(op.outputs)


def _expm1_convert(scope: Any, operator: Any, container: Any) -> None:
    from onnx import TensorProto

    x = operator.inputs[0].full_name
    one, zero = (scope.get_unique_variable_name(n) for n in ("one", "zero"))
    container.add_initializer(one, TensorProto.DOUBLE, [], [1.0])
    container.add_initializer(zero, TensorProto.DOUBLE, [], [0.0])
    xd, ex, em = (scope.get_unique_variable_name(n) for n in ("xd", "exp", "expm1"))
    _cast(scope, container, x, xd, TensorProto.DOUBLE)
    container.add_node("Exp", [xd], [ex], name=scope.get_unique_operator_name("Exp"))
    container.add_node("Sub", [ex, one], [em], name=scope.get_unique_operator_name("Sub"))
    container.add_node(
        "Max",
        [em, zero],
        [operator.outputs[0].full_name],
        name=scope.get_unique_operator_name("Max"),
    )


def _naive_blend_parser(scope: Any, model: Any, inputs: list[Any], custom_parsers=None):
    """``NaiveBlendRegressor``: its fitted model and naive baseline on the same inputs, then
    the blend (:func:`_naive_blend_convert`)."""
    from skl2onnx._parse import _parse_sklearn
    from skl2onnx.common.data_types import DoubleTensorType

    inner = _parse_sklearn(scope, model.regressor_, inputs, custom_parsers=custom_parsers)[0]
    naive = _parse_sklearn(scope, model.naive_, inputs, custom_parsers=custom_parsers)[0]
    op = scope.declare_local_operator("ChurnNaiveBlend", model)
    op.inputs.extend([inner, naive])
    op.outputs.append(scope.declare_local_variable("variable", DoubleTensorType([None, 1])))
    return list(op.outputs)


def _naive_blend_convert(scope: Any, operator: Any, container: Any) -> None:
    """``max(weight * model + (1 - weight) * naive, 0)`` in double precision."""
    from onnx import TensorProto

    w = float(operator.raw_operator.weight)
    weights = {"w": w, "rest": 1.0 - w, "zero": 0.0}
    names = {k: scope.get_unique_variable_name(k) for k in weights}
    for k, value in weights.items():
        container.add_initializer(names[k], TensorProto.DOUBLE, [], [value])
    parts = []
    for var, weight in zip(operator.inputs, ("w", "rest"), strict=True):
        d, shaped, scaled = (scope.get_unique_variable_name(n) for n in ("d", "shaped", "scaled"))
        _cast(scope, container, var.full_name, d, TensorProto.DOUBLE)
        shape = scope.get_unique_variable_name("shape")
        container.add_initializer(shape, TensorProto.INT64, [2], [-1, 1])
        container.add_node(
            "Reshape", [d, shape], [shaped], name=scope.get_unique_operator_name("Reshape")
        )
        container.add_node(
            "Mul", [shaped, names[weight]], [scaled], name=scope.get_unique_operator_name("Mul")
        )
        parts.append(scaled)
    total = scope.get_unique_variable_name("blend")
    container.add_node("Add", parts, [total], name=scope.get_unique_operator_name("Add"))
    container.add_node(
        "Max",
        [total, names["zero"]],
        [operator.outputs[0].full_name],
        name=scope.get_unique_operator_name("Max"),
    )


def _imputer_shape(operator: Any) -> None:
    from skl2onnx.common.data_types import DoubleTensorType

    keep, indicator = _imputer_layout(operator.raw_operator)
    width = int(keep.sum()) + (0 if indicator is None else len(indicator))
    operator.outputs[0].type = DoubleTensorType([None, width])


def _imputer_layout(imp: Any) -> tuple[np.ndarray, np.ndarray | None]:
    """(kept input columns, input columns with a missing indicator or None)."""
    mv = imp.missing_values
    if not (isinstance(mv, float) and np.isnan(mv)):
        raise NotImplementedError(f"SimpleImputer(missing_values={mv!r})")
    stats = np.asarray(imp.statistics_, dtype=np.float64)
    keep = np.ones(len(stats), dtype=bool)
    if imp.strategy != "constant" and not getattr(imp, "keep_empty_features", False):
        keep = ~np.isnan(stats)
    indicator = getattr(imp, "indicator_", None) if imp.add_indicator else None
    if indicator is not None and getattr(indicator, "features", "missing-only") != "missing-only":
        raise NotImplementedError("MissingIndicator(features='all')")
    return keep, None if indicator is None else np.asarray(indicator.features_, dtype=np.int64)


def _imputer_convert(scope: Any, operator: Any, container: Any) -> None:
    """``SimpleImputer`` on doubles: NaN → statistic, optional missing indicators (skl2onnx's
    own converter uses the float-only ``Imputer`` operator and drops the indicators)."""
    from onnx import TensorProto

    imp = operator.raw_operator
    keep, indicator = _imputer_layout(imp)
    stats = np.nan_to_num(np.asarray(imp.statistics_, dtype=np.float64), nan=0.0)

    def var(name: str) -> str:
        return scope.get_unique_variable_name(name)

    def node(op: str, inputs: list[str], output: str, **kw: Any) -> str:
        container.add_node(op, inputs, [output], name=scope.get_unique_operator_name(op), **kw)
        return output

    x = node("Cast", [operator.inputs[0].full_name], var("x"), to=TensorProto.DOUBLE)
    stat = var("statistics")
    container.add_initializer(stat, TensorProto.DOUBLE, [1, len(stats)], stats.tolist())
    missing = node("IsNaN", [x], var("missing"))
    parts = [node("Where", [missing, stat, x], var("filled"))]
    if not keep.all():
        cols = var("kept")
        container.add_initializer(
            cols, TensorProto.INT64, [int(keep.sum())], np.flatnonzero(keep).tolist()
        )
        parts[0] = node("Gather", [parts[0], cols], var("filled_kept"), axis=1)
    if indicator is not None and len(indicator):
        cols = var("indicator_columns")
        container.add_initializer(cols, TensorProto.INT64, [len(indicator)], indicator.tolist())
        flags = node("Gather", [missing, cols], var("flags"), axis=1)
        parts.append(node("Cast", [flags], var("indicators"), to=TensorProto.DOUBLE))
    out = operator.outputs[0].full_name
    if len(parts) == 1:
        node("Identity", parts, out)
    else:
        node("Concat", parts, out, axis=1)


class _DoubleTrees:
    """A converter container that writes tree ensembles with double thresholds and leaf
    values (``ai.onnx.ml`` 3 ``*_as_tensor`` attributes): skl2onnx writes float attributes,
    which move thresholds and round leaf sums."""

    _DOUBLE = ("nodes_values", "target_weights", "class_weights", "base_values")

    def __init__(self, container: Any, *, float32_thresholds: bool = False):
        self._container = container
        self._float32 = float32_thresholds

    def __getattr__(self, name: str) -> Any:
        return getattr(self._container, name)

    def add_node(
        self,
        op_type: str,
        inputs: Any,
        outputs: Any,
        op_domain: str = "",
        op_version: Any = None,
        **attrs: Any,
    ) -> Any:
        if op_domain == "ai.onnx.ml" and op_type.startswith("TreeEnsemble"):
            from onnx import numpy_helper

            for k in self._DOUBLE:
                if k in attrs:
                    values = np.asarray(attrs.pop(k), dtype=np.float64).ravel()
                    if k == "nodes_values" and self._float32:
                        values = values.astype(np.float32).astype(np.float64)
                    attrs[f"{k}_as_tensor"] = numpy_helper.from_array(values, name=f"{k}_as_tensor")
            attrs.pop("nodes_hitrates", None)
            op_version = 3
        return self._container.add_node(
            op_type, inputs, outputs, op_domain=op_domain, op_version=op_version, **attrs
        )


class _OperatorView:
    """An operator seen with other input / output variables (everything else shared)."""

    def __init__(self, operator: Any, inputs: list[Any], outputs: list[Any]):
        self._operator = operator
        self.inputs = inputs
        self.outputs = outputs

    def __getattr__(self, name: str) -> Any:
        return getattr(self._operator, name)

    @property
    def input_full_names(self) -> list[str]:
        return [v.full_name for v in self.inputs]

    @property
    def output_full_names(self) -> list[str]:
        return [v.full_name for v in self.outputs]


def _double_trees(convert: Any, *, float_input: bool = False) -> Any:
    """Wrap a skl2onnx tree converter: double input (cast if the graph declares float),
    double thresholds and leaf values (:class:`_DoubleTrees`), and the float outputs of
    ONNX tree ensembles cast to the double outputs the graph declares. ``float_input`` is
    for models that compare float32 features with float32 thresholds (scikit-learn's forests,
    XGBoost): the input is rounded to float32 and the thresholds are float32 values, both
    held in doubles, so comparisons are exact and leaf sums stay double."""

    def converter(scope: Any, operator: Any, container: Any) -> None:
        from onnx import TensorProto
        from skl2onnx.common._topology import Variable
        from skl2onnx.common.data_types import DoubleTensorType, FloatTensorType

        source = operator.inputs[0]
        name = source.full_name
        if float_input:  # float32(x), held exactly in a double tensor
            name = _cast(
                scope,
                container,
                source.full_name,
                scope.get_unique_variable_name("float_input"),
                TensorProto.FLOAT,
            )
        # the converter sees a float input where it adjusts thresholds to float32
        kind = FloatTensorType if float_input else DoubleTensorType
        x = Variable(
            "tree_input",
            scope.get_unique_variable_name("tree_input"),
            scope.name,
            kind(source.type.shape),
        )
        _cast(scope, container, name, x.full_name, TensorProto.DOUBLE)
        outputs, casts = [], []
        for o in operator.outputs:
            if isinstance(o.type, DoubleTensorType):
                tmp = Variable(
                    o.raw_name,
                    scope.get_unique_variable_name(f"{o.raw_name}_float"),
                    scope.name,
                    FloatTensorType(o.type.shape),
                )
                outputs.append(tmp)
                casts.append((tmp, o))
            else:
                outputs.append(o)
        target = _DoubleTrees(container, float32_thresholds=float_input)
        convert(scope, _OperatorView(operator, [x], outputs), target)
        for tmp, o in casts:
            _cast(scope, container, tmp.full_name, o.full_name, TensorProto.DOUBLE)

    return converter


def _hgb_classifier(regressor_convert: Any) -> Any:
    """Binary HistGradientBoostingClassifier as its raw score (the regressor converter on
    the same trees) and a double-precision sigmoid: ``probabilities = [1 - p, p]``."""

    def converter(scope: Any, operator: Any, container: Any) -> None:
        from onnx import TensorProto
        from skl2onnx.common._topology import Variable
        from skl2onnx.common.data_types import DoubleTensorType

        est = operator.raw_operator
        if est.n_trees_per_iteration_ != 1:
            raise NotImplementedError("multi-class HistGradientBoostingClassifier")

        def var(name: str) -> str:
            return scope.get_unique_variable_name(name)

        def node(op: str, inputs: list[str], output: str, **kw: Any) -> str:
            container.add_node(op, inputs, [output], name=scope.get_unique_operator_name(op), **kw)
            return output

        raw = Variable("raw_score", var("raw_score"), scope.name, DoubleTensorType([None, 1]))
        regressor_convert(scope, _OperatorView(operator, list(operator.inputs), [raw]), container)
        one, classes = var("one"), var("classes")
        container.add_initializer(one, TensorProto.DOUBLE, [], [1.0])
        container.add_initializer(classes, TensorProto.INT64, [2], [int(c) for c in est.classes_])
        p = node("Sigmoid", [raw.full_name], var("p"))
        q = node("Sub", [one, p], var("q"))
        proba = node("Concat", [q, p], var("proba"), axis=1)
        declared = (
            TensorProto.DOUBLE
            if isinstance(operator.outputs[1].type, DoubleTensorType)
            else TensorProto.FLOAT
        )
        node("Cast", [proba], operator.outputs[1].full_name, to=declared)
        best = node("ArgMax", [proba], var("best"), axis=1, keepdims=0)
        node("Gather", [classes, best], operator.outputs[0].full_name, axis=0)

    return converter


def _float_regressor_shape(operator: Any) -> None:
    """onnxmltools' tree regressors answer float32 whatever the input type."""
    from skl2onnx.common.data_types import FloatTensorType

    operator.outputs[0].type = FloatTensorType([None, 1])


def register_converters() -> None:
    """Register the LightGBM, XGBoost and platform converters with skl2onnx (once)."""
    global _registered
    if _registered:
        return
    from lightgbm import LGBMClassifier, LGBMRegressor
    from onnxmltools.convert.lightgbm.operator_converters.LightGbm import convert_lightgbm
    from onnxmltools.convert.xgboost.operator_converters.XGBoost import convert_xgboost
    from skl2onnx import update_registered_converter
    from skl2onnx.common.shape_calculator import (
        calculate_linear_classifier_output_shapes,
        calculate_linear_regressor_output_shapes,
    )
    from sklearn.compose import TransformedTargetRegressor
    from sklearn.ensemble import (
        ExtraTreesClassifier,
        HistGradientBoostingClassifier,
        HistGradientBoostingRegressor,
        RandomForestClassifier,
        RandomForestRegressor,
    )
    from sklearn.impute import SimpleImputer
    from xgboost import XGBClassifier, XGBRegressor

    from churn_assets.lib.models.estimators import (
        FrameCleaner,
        NaiveBaselineRegressor,
        NaiveBlendRegressor,
    )

    classifier_options = {"nocl": [True, False], "zipmap": [True, False, "columns"]}
    update_registered_converter(
        LGBMClassifier,
        "LightGbmLGBMClassifier",
        calculate_linear_classifier_output_shapes,
        _double_trees(convert_lightgbm),
        options=classifier_options,
    )
    update_registered_converter(
        LGBMRegressor,
        "LightGbmLGBMRegressor",
        calculate_linear_regressor_output_shapes,
        _double_trees(convert_lightgbm),
        options={"split": None},
    )
    update_registered_converter(
        XGBClassifier,
        "XGBoostXGBClassifier",
        calculate_linear_classifier_output_shapes,
        _double_trees(convert_xgboost, float_input=True),
        options=classifier_options,
    )
    update_registered_converter(
        XGBRegressor,
        "XGBoostXGBRegressor",
        calculate_linear_regressor_output_shapes,
        _double_trees(convert_xgboost, float_input=True),
    )
    update_registered_converter(
        FrameCleaner,
        "ChurnFrameCleaner",
        _frame_cleaner_shape,
        _frame_cleaner_convert,
        parser=_frame_cleaner_parser,
    )
    update_registered_converter(
        NaiveBaselineRegressor, "ChurnNaiveBaseline", _naive_shape, _naive_convert
    )
    # wrappers: the parser declares the inner graphs, then a final operator (a marker type)
    for wrapper, alias, parser, marker, final_convert in (
        (
            TransformedTargetRegressor,
            "ChurnLogTargetRegressor",
            _log_target_parser,
            _Expm1Nonneg,
            _expm1_convert,
        ),
        (
            NaiveBlendRegressor,
            "ChurnNaiveBlendRegressor",
            _naive_blend_parser,
            _NaiveBlend,
            _naive_blend_convert,
        ),
    ):
        update_registered_converter(
            wrapper,
            alias,
            _naive_shape,
            lambda scope, operator, container: None,
            parser=parser,
        )
        update_registered_converter(
            marker, f"Churn{marker.__name__[1:]}", _naive_shape, final_convert
        )
    update_registered_converter(SimpleImputer, "SklearnImputer", _imputer_shape, _imputer_convert)
    from skl2onnx.common._registration import (
        _converter_pool,
        get_converter,
        get_shape_calculator,
    )

    hgb_regressor = get_converter("SklearnHistGradientBoostingRegressor")
    # scikit-learn's own trees compare float32(x) with float64 thresholds: a float32 input and
    # skl2onnx's float32-adjusted thresholds reproduce that exactly
    forest = (RandomForestClassifier, ExtraTreesClassifier, RandomForestRegressor)
    for cls, convert in (
        *((c, None) for c in forest),
        (HistGradientBoostingRegressor, None),
        (HistGradientBoostingClassifier, _hgb_classifier(_double_trees(hgb_regressor))),
    ):
        alias = f"Sklearn{cls.__name__}"
        update_registered_converter(
            cls,
            alias,
            get_shape_calculator(alias),
            convert or _double_trees(get_converter(alias), float_input=cls in forest),
            options=_converter_pool[alias].get_allowed_options(),
        )
    _registered = True


class _Expm1Nonneg:
    """Marker type for the ``max(expm1(x), 0)`` operator (never instantiated)."""


class _NaiveBlend:
    """Marker type for the blend operator of ``NaiveBlendRegressor`` (never instantiated)."""


# --------------------------------------------------------- HistGradientBoosting trees


def _bitset_members(bitset: np.ndarray) -> set[int]:
    """Values whose bit is set in a scikit-learn 256-bit bitset (8 × uint32)."""
    out = set()
    for word, bits in enumerate(np.asarray(bitset, dtype=np.uint32).tolist()):
        for b in range(32):
            if bits >> b & 1:
                out.add(word * 32 + b)
    return out


def _hgb_known_categories(est: Any) -> None:
    """Remember, for every tree of ``est``, which input column each tree feature reads and
    the known categories of its categorical features as (code in the tree, input value).

    HistGradientBoosting re-encodes categorical inputs with its own ordinal encoder and puts
    those features first; its trees index that layout."""
    is_cat = getattr(est, "is_categorical_", None)
    n = int(est.n_features_in_)
    if is_cat is None or not np.any(is_cat):
        layout = (np.arange(n), {})
    else:
        is_cat = np.asarray(is_cat, dtype=bool)
        columns = np.concatenate([np.flatnonzero(is_cat), np.flatnonzero(~is_cat)])
        remapped = getattr(est, "_is_categorical_remapped", None)
        remapped = is_cat[columns] if remapped is None else np.asarray(remapped, dtype=bool)
        encoder = est._preprocessor.named_transformers_["encoder"]
        known_bitsets, f_idx_map = est._bin_mapper.make_known_categories_bitsets()
        known: dict[int, list[tuple[int, float]]] = {}
        for k, f in enumerate(np.flatnonzero(remapped)):
            values = list(encoder.categories_[k])
            codes = sorted(_bitset_members(known_bitsets[f_idx_map[f]]))
            known[int(f)] = [(c, float(values[c])) for c in codes if c < len(values)]
        layout = (columns, known)
    for trees in est._predictors:
        for tree in trees:
            _HGB_KNOWN[id(tree)] = layout


def _walk(model: Any, depth: int = 0) -> Iterator[Any]:
    """Every estimator inside ``model`` (pipelines, column transformers, voting, targets)."""
    if depth > 10 or model is None or isinstance(model, str):
        return
    yield model
    for attr in ("steps", "transformers_", "estimators_"):
        for item in getattr(model, attr, None) or []:
            sub = item[1] if isinstance(item, tuple) else item
            yield from _walk(sub, depth + 1)
    sub = getattr(model, "regressor_", None)
    if sub is not None:
        yield from _walk(sub, depth + 1)


def _hgb_tree(
    attr_pairs: dict[str, Any],
    is_classifier: bool,
    tree: Any,
    tree_id: int,
    tree_weight: float,
    weight_id_bias: int,
    leaf_weights_are_counts: bool,
    adjust_threshold_for_sklearn: bool = False,
    dtype: Any = None,
) -> None:
    """skl2onnx's HistGradientBoosting tree writer, with categorical splits as chains of
    equality nodes (see the module docstring)."""
    from skl2onnx.common.tree_ensemble import add_node

    nodes = tree.nodes
    if id(tree) not in _HGB_KNOWN:
        raise NotImplementedError("HistGradientBoosting tree without its feature layout")
    columns, known = _HGB_KNOWN[id(tree)]
    left_sets = getattr(tree, "raw_left_cat_bitsets", None)
    ids = itertools.count()
    rows: list[tuple[Any, ...]] = []

    def emit(i: int) -> int:
        node = nodes[i]
        if node["is_leaf"]:
            me = next(ids)
            rows.append((me, 0, "LEAF", 0.0, 0, 0, node["value"], 0))
            return me
        feature = int(node["feature_idx"])
        column = int(columns[feature])
        missing_left = bool(node["missing_go_to_left"])
        if not node["is_categorical"]:
            me = next(ids)
            left, right = emit(int(node["left"])), emit(int(node["right"]))
            threshold = float(node["num_threshold"])
            rows.append((me, column, "BRANCH_LEQ", threshold, left, right, 0.0, int(missing_left)))
            return me
        if feature not in known or left_sets is None:
            raise NotImplementedError("categorical split without known categories")
        goes_left = _bitset_members(left_sets[int(node["bitset_idx"])])
        cats = known[feature]
        # the known categories that do not take the missing-value direction
        if missing_left:
            chain, target, other = [v for c, v in cats if c not in goes_left], "right", "left"
        else:
            chain, target, other = [v for c, v in cats if c in goes_left], "left", "right"
        if not chain:  # every input takes the same side
            return emit(int(node[other]))
        me = current = next(ids)
        for k, v in enumerate(chain):
            true_child = emit(int(node[target]))
            false_child = next(ids) if k < len(chain) - 1 else emit(int(node[other]))
            rows.append((current, column, "BRANCH_EQ", v, true_child, false_child, 0.0, 0))
            current = false_child
        return me

    emit(0)
    for me, feature, mode, value, true_id, false_id, weight, missing in sorted(rows):
        add_node(
            attr_pairs,
            is_classifier,
            tree_id,
            tree_weight,
            me,
            feature,
            mode,
            value,
            true_id,
            false_id,
            np.asarray([weight], dtype=np.float64),
            weight_id_bias,
            leaf_weights_are_counts,
            adjust_threshold_for_sklearn=False,
            dtype=dtype,
            nodes_missing_value_tracks_true=missing,
        )


@contextmanager
def _hgb_categorical_support(pipeline: Any) -> Iterator[None]:
    from skl2onnx.operator_converters import random_forest

    for est in _walk(pipeline):
        if type(est).__name__.startswith("HistGradientBoosting"):
            _hgb_known_categories(est)
    try:
        with mock.patch.object(
            random_forest, "add_tree_to_attribute_pairs_hist_gradient_boosting", _hgb_tree
        ):
            yield
    finally:
        _HGB_KNOWN.clear()


# ------------------------------------------------------------------------ conversion


def initial_types(numeric: list[str], categorical: list[str]) -> list[tuple[str, Any]]:
    """The graph inputs: one ``(n, 1)`` tensor per feature, double or string."""
    from skl2onnx.common.data_types import DoubleTensorType, StringTensorType

    return [(c, DoubleTensorType([None, 1])) for c in numeric] + [
        (c, StringTensorType([None, 1])) for c in categorical
    ]


def _classifier_options(pipeline: Any) -> dict[int, dict[str, Any]]:
    """``zipmap: False`` for every classifier inside ``pipeline`` (and the pipeline)."""
    from sklearn.base import is_classifier

    return {id(est): {"zipmap": False} for est in _walk(pipeline) if is_classifier(est)}


def to_onnx(pipeline: Any, numeric: list[str], categorical: list[str]) -> bytes:
    """The serialized ONNX graph of a fitted deployed pipeline (raises when it does not
    convert)."""
    from skl2onnx import convert_sklearn

    register_converters()
    with warnings.catch_warnings(), _hgb_categorical_support(pipeline), ExitStack() as stack:
        warnings.simplefilter("ignore")
        for est in _walk(pipeline):
            if type(est).__name__ == "VotingClassifier":  # transform() only, not predict
                stack.enter_context(mock.patch.object(est, "flatten_transform", False))
        model = convert_sklearn(
            pipeline,
            initial_types=initial_types(numeric, categorical),
            target_opset=TARGET_OPSET,
            options=_classifier_options(pipeline),
        )
    return _pack_inputs(model, numeric, categorical).SerializeToString()


def _pack_inputs(model: Any, numeric: list[str], categorical: list[str]) -> Any:
    """Replace the per-feature inputs by two matrices (numeric double, categorical string)
    split into the feature columns inside the graph: one input conversion per kind instead of
    one per feature. Numeric values pass ``Where(IsInf(x), NaN, x)`` first (FrameCleaner)."""
    from onnx import TensorProto, helper, numpy_helper

    graph = model.graph
    names = {*numeric, *categorical}
    if names & {NUMERIC_INPUT, CATEGORICAL_INPUT}:
        raise ValueError(f"feature names clash with {NUMERIC_INPUT} / {CATEGORICAL_INPUT}")
    used = {i.name for i in graph.input}
    front: list[Any] = []
    inputs: list[Any] = []

    def split(source: str, columns: list[str], tag: str) -> None:
        outs = [c if c in used else f"{tag}_unused_{k}" for k, c in enumerate(columns)]
        if len(columns) == 1:
            front.append(helper.make_node("Identity", [source], outs, name=f"{tag}_split"))
            return
        sizes = f"{tag}_split_sizes"
        graph.initializer.append(
            numpy_helper.from_array(np.ones(len(columns), dtype=np.int64), name=sizes)
        )
        front.append(helper.make_node("Split", [source, sizes], outs, axis=1, name=f"{tag}_split"))

    if numeric:
        inputs.append(
            helper.make_tensor_value_info(NUMERIC_INPUT, TensorProto.DOUBLE, [None, len(numeric)])
        )
        graph.initializer.append(numpy_helper.from_array(np.array(np.nan), name="packed_nan"))
        front.append(
            helper.make_node("IsInf", [NUMERIC_INPUT], ["packed_is_inf"], name="packed_is_inf")
        )
        front.append(
            helper.make_node(
                "Where",
                ["packed_is_inf", "packed_nan", NUMERIC_INPUT],
                ["packed_numeric"],
                name="packed_where",
            )
        )
        split("packed_numeric", numeric, "numeric")
    if categorical:
        inputs.append(
            helper.make_tensor_value_info(
                CATEGORICAL_INPUT, TensorProto.STRING, [None, len(categorical)]
            )
        )
        split(CATEGORICAL_INPUT, categorical, "categorical")
    nodes = [*front, *graph.node]
    del graph.node[:]
    graph.node.extend(nodes)
    del graph.input[:]
    graph.input.extend(inputs)
    return model


# ---------------------------------------------------------------------- verification


def pipeline_predict(
    pipeline: Any, kind: str, num: np.ndarray, cat: np.ndarray, columns: tuple[list[str], list[str]]
) -> np.ndarray:
    """The pipeline's positive-class probability or value on the feature arrays."""
    import pandas as pd

    numeric, categorical = columns
    data: dict[str, Any] = {c: num[:, i] for i, c in enumerate(numeric)}
    data.update({c: cat[:, j] for j, c in enumerate(categorical)})
    frame = pd.DataFrame(data, columns=[*numeric, *categorical])
    if kind == "classifier":
        classes = list(pipeline.classes_)
        pos = classes.index(1) if 1 in classes else len(classes) - 1
        return np.asarray(pipeline.predict_proba(frame), dtype=np.float64)[:, pos]
    return np.asarray(pipeline.predict(frame), dtype=np.float64).reshape(-1)


def verification_rows(
    reference: Any, numeric: list[str], categorical: list[str], schema: dict[str, Any] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Up to :data:`VERIFY_ROWS` reference rows plus probe rows: every numeric missing,
    unseen and missing categories, numerics far outside (±1e6 ×) and at the edges of their
    training range, one feature missing at a time."""
    n_num = len(numeric)
    if reference is not None and len(reference):
        head = reference.head(VERIFY_ROWS)
        num = (
            np.column_stack([np.asarray(head[c], dtype=np.float64) for c in numeric]).reshape(
                len(head), n_num
            )
            if n_num
            else np.empty((len(head), 0))
        )
        cat = np.empty((len(head), len(categorical)), dtype=object)
        for j, c in enumerate(categorical):
            col = head[c].astype(object).to_numpy()
            cat[:, j] = [MISSING_CATEGORY if v is None or v != v else str(v) for v in col]
    else:
        num = np.zeros((1, n_num))
        cat = np.full((1, len(categorical)), MISSING_CATEGORY, dtype=object)
    num = num.copy()
    num[~np.isfinite(num)] = np.nan
    base_num, base_cat = num[:1], cat[:1]
    probes_num, probes_cat = [], []

    def probe(n: np.ndarray, c: np.ndarray) -> None:
        probes_num.append(n)
        probes_cat.append(c)

    probe(np.full_like(base_num, np.nan), base_cat.copy())
    probe(base_num.copy(), np.full_like(base_cat, UNSEEN_CATEGORY))
    probe(base_num.copy(), np.full_like(base_cat, MISSING_CATEGORY))
    probe(np.full_like(base_num, np.nan), np.full_like(base_cat, UNSEEN_CATEGORY))
    schema = schema or {}
    lo = np.asarray([_num(schema.get(c, {}).get("min"), 0.0) for c in numeric], dtype=np.float64)
    hi = np.asarray([_num(schema.get(c, {}).get("max"), 1.0) for c in numeric], dtype=np.float64)
    width = np.maximum(hi - lo, 1.0)
    for edge in (lo, hi, lo - 1e6 * width, hi + 1e6 * width):
        probe(edge.reshape(1, -1).copy(), base_cat.copy())
    for i in range(n_num):
        row = base_num.copy()
        row[0, i] = np.nan
        probe(row, base_cat.copy())
    for j in range(len(categorical)):
        row = base_cat.copy()
        row[0, j] = UNSEEN_CATEGORY
        probe(base_num.copy(), row)
    return np.vstack([num, *probes_num]), np.vstack([cat, *probes_cat])


def _num(v: Any, default: float) -> float:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return default
    return f if np.isfinite(f) else default


def verify(
    graph: bytes,
    expected: np.ndarray,
    kind: str,
    num: np.ndarray,
    cat: np.ndarray,
    columns: tuple[list[str], list[str]],
    threshold: float | None = None,
) -> dict[str, Any]:
    """Compare the graph's answers (whole batch and row by row for the first rows) with
    the pipeline's ``expected`` answers on the same rows (see :func:`compare_rows`)."""
    predictor = OnnxPredictor(graph, kind, *columns)
    got = predictor.predict(num, cat)
    single = np.concatenate(
        [predictor.predict(num[i : i + 1], cat[i : i + 1]) for i in range(min(16, len(num)))]
    )
    result = compare(got, expected, kind, threshold)
    single_result = compare(single, expected[: len(single)], kind, threshold)
    if result["ok"] and not single_result["ok"]:
        return {**single_result, "rows": result["rows"]}
    return result


def read_rows(
    data: bytes, columns: tuple[list[str], list[str]]
) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """(num, cat, expected answers per role) from a verification Parquet file."""
    from churn_serving.model import read_verification_rows

    return read_verification_rows(data, *columns)


# ------------------------------------------------------------------ a version's models


def _expected_column(role: str) -> str:
    return f"expected__{role}"


def export_version(
    artifacts: dict[str, bytes],
    models: dict[str, dict[str, Any]],
    pipelines: dict[str, Any],
    features: dict[str, list[str]],
    reference: Any = None,
    feature_schema: dict[str, Any] | None = None,
) -> tuple[dict[str, bytes], dict[str, dict[str, Any]]]:
    """Convert and verify every model of a version being written.

    ``models`` is the manifest's role → entry map, ``artifacts`` the version's files so far
    (the pipelines of roles missing from ``pipelines`` are loaded from there), ``reference``
    a pandas frame with the feature columns.

    Returns the artifacts to store with the version (``<role>.onnx`` for each graph that
    converted, and :data:`VERIFICATION_FILE` with the verification rows and each
    pipeline's answers) and, per role, the manifest entry ``models[role]["onnx"]``:
    ``file``/``sha256`` of the graph, ``serves`` (``"onnxruntime"`` when verified, else
    ``"pipeline"``), ``verified``, ``max_abs_diff``, ``labels_equal``, ``rows``, ``reason``
    (why the pipeline serves) and ``target_opset``.
    """
    from churn_assets.lib.deployment import sha256
    from churn_assets.lib.models.persistence import loads_pipeline

    columns = (list(features["numeric"]), list(features["categorical"]))
    num, cat = verification_rows(reference, *columns, schema=feature_schema)
    out: dict[str, bytes] = {}
    entries: dict[str, dict[str, Any]] = {}
    expected: dict[str, np.ndarray] = {}
    for role, model_entry in models.items():
        kind = ROLE_KIND.get(role, "classifier" if role.startswith("classifier") else "regressor")
        entry: dict[str, Any] = {
            "serves": "pipeline",
            "verified": False,
            "target_opset": dict(TARGET_OPSET),
            "tolerance": TOLERANCE,
        }
        entries[role] = entry
        try:
            pipeline = pipelines.get(role)
            if pipeline is None:
                pipeline = loads_pipeline(artifacts[model_entry["file"]])
            expected[role] = pipeline_predict(pipeline, kind, num, cat, columns)
            graph = to_onnx(pipeline, *columns)
        except Exception as e:  # a model that does not convert keeps serving as a pipeline
            entry["reason"] = f"conversion failed: {type(e).__name__}: {e}"[:500]
            continue
        name = f"{role}.onnx"
        out[name] = graph
        entry.update(file=name, sha256=sha256(graph), output_kind=kind)
        try:
            threshold = model_entry.get("threshold")
            result = verify(graph, expected[role], kind, num, cat, columns, threshold)
        except Exception as e:
            result = {"ok": False, "reason": f"ONNX Runtime failed: {type(e).__name__}: {e}"[:500]}
        entry.update({k: v for k, v in result.items() if k != "ok"})
        entry["verified"] = bool(result["ok"])
        if result["ok"]:
            entry["serves"] = "onnxruntime"
            entry.pop("reason", None)
    out[VERIFICATION_FILE] = verification_file(num, cat, columns, expected)
    return out, entries


def verification_file(
    num: np.ndarray,
    cat: np.ndarray,
    columns: tuple[list[str], list[str]],
    expected: dict[str, np.ndarray],
) -> bytes:
    """Verification rows and each role's pipeline answers as Parquet."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    numeric, categorical = columns
    arrays = {c: pa.array(num[:, i], type=pa.float64()) for i, c in enumerate(numeric)}
    arrays.update(
        {c: pa.array(cat[:, j].tolist(), type=pa.string()) for j, c in enumerate(categorical)}
    )
    arrays.update(
        {_expected_column(r): pa.array(v, type=pa.float64()) for r, v in expected.items()}
    )
    buf = io.BytesIO()
    pq.write_table(pa.table(arrays), buf)
    return buf.getvalue()


def check_version(storage: Any, manifest: dict[str, Any]) -> dict[str, Any]:
    """Repeat the comparison of a written version: for every model, the graph against the
    stored pipeline on the stored verification rows (and the stored expectations against
    the pipeline). Returns ``passed``, ``problems`` and per-role results.

    A model passes when its graph is verified and still agrees, or when the manifest
    records that the pipeline serves it and why.
    """
    from churn_assets.lib import deployment as dep
    from churn_assets.lib.models.persistence import loads_pipeline

    version = manifest["version"]
    features = manifest.get("features") or {}
    columns = (list(features.get("numeric", [])), list(features.get("categorical", [])))
    listing = manifest.get("artifacts") or {}
    problems: list[str] = []
    roles: dict[str, Any] = {}

    def read(name: str) -> bytes:
        data = storage.read_bytes(f"{dep.version_dir(version)}/{name}")
        if dep.sha256(data) != (listing.get(name) or {}).get("sha256"):
            raise dep.DeploymentError(f"{name}: sha256 differs from the manifest")
        return data

    try:
        num, cat, stored = read_rows(read(VERIFICATION_FILE), columns)
    except Exception as e:
        return {"passed": False, "problems": [f"verification rows unusable: {e}"], "roles": {}}
    for role, entry in (manifest.get("models") or {}).items():
        onnx = (entry or {}).get("onnx")
        if not onnx:
            problems.append(f"{role}: no ONNX record in the manifest")
            continue
        if not onnx.get("verified"):
            if not onnx.get("reason"):
                problems.append(f"{role}: serves the pipeline without a recorded reason")
            roles[role] = {"serves": "pipeline", "reason": onnx.get("reason")}
            continue
        kind = ROLE_KIND.get(role, "regressor")
        try:
            pipeline = loads_pipeline(read(entry["file"]))
            expected = pipeline_predict(pipeline, kind, num, cat, columns)
            result = verify(
                read(onnx["file"]), expected, kind, num, cat, columns, entry.get("threshold")
            )
            if role in stored:
                again = compare(stored[role], expected, kind, entry.get("threshold"))
                if not again["ok"]:
                    result = {
                        **result,
                        "ok": False,
                        "reason": "stored expectations differ from the pipeline",
                    }
        except Exception as e:
            result = {"ok": False, "reason": f"{type(e).__name__}: {e}"[:500]}
        roles[role] = {"serves": "onnxruntime", **result}
        if not result["ok"]:
            problems.append(f"{role}: {result.get('reason')}")
    return {"passed": not problems, "problems": problems, "roles": roles}
