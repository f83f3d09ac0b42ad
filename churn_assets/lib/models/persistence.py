"""Saving and loading model pipelines with skops (never pickle).

Loading only accepts the non-default types that the project's own pipelines contain
(:data:`ALLOWED_TYPES`, an explicit allow-list); any other type in a file is refused with
:class:`UntrustedTypesError` before anything is instantiated.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

#: Types beyond skops' defaults that the model-set pipelines use (see
#: ``tests/model/test_persistence.py``, which checks every candidate against this list).
ALLOWED_TYPES: frozenset[str] = frozenset(
    {
        # our own building blocks
        "churn_assets.lib.models.estimators.FrameCleaner",
        "churn_assets.lib.models.estimators.NaiveBaselineRegressor",
        "churn_assets.lib.models.estimators.NaiveBlendRegressor",
        "churn_assets.lib.models.estimators.expm1_nonneg",
        "churn_assets.lib.models.estimators.log1p_nonneg",
        # stdlib / numpy / sklearn internals
        "collections.OrderedDict",
        "functools.partial",
        "numpy.dtype",
        "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
        "sklearn.tree._tree.Tree",
        "sklearn.utils._bunch.Bunch",
        "sklearn.utils.validation.check_array",
        # boosters
        "lightgbm.basic.Booster",
        "lightgbm.sklearn.LGBMClassifier",
        "lightgbm.sklearn.LGBMRegressor",
        "xgboost.core.Booster",
        "xgboost.sklearn.XGBClassifier",
        "xgboost.sklearn.XGBRegressor",
    }
)


class UntrustedTypesError(ValueError):
    """A model file contains types outside the allow-list."""

    def __init__(self, types: Iterable[str]):
        self.types = sorted(types)
        super().__init__(
            "refusing to load model: it contains types outside the allow-list: "
            + ", ".join(self.types)
            + " (if these are legitimate, add them to "
            "churn_assets.lib.models.persistence.ALLOWED_TYPES or pass extra_trusted)"
        )


def sha256_bytes(data: bytes) -> str:
    """Hex sha256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of the file at ``path`` (streamed)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def dumps_pipeline(pipeline: Any) -> bytes:
    """Serialise ``pipeline`` with skops."""
    import skops.io as sio

    return sio.dumps(pipeline)


def _check_types(untrusted: Iterable[str], extra_trusted: Iterable[str]) -> list[str]:
    untrusted = list(untrusted)
    allowed = ALLOWED_TYPES | set(extra_trusted)
    refused = [t for t in untrusted if t not in allowed]
    if refused:
        raise UntrustedTypesError(refused)
    return untrusted


def loads_pipeline(data: bytes, *, extra_trusted: Iterable[str] = ()) -> Any:
    """Load a skops payload, trusting only :data:`ALLOWED_TYPES` (+ ``extra_trusted``).

    Raises:
        UntrustedTypesError: the payload contains any other non-default type.
    """
    import skops.io as sio

    trusted = _check_types(sio.get_untrusted_types(data=data), extra_trusted)
    return sio.loads(data, trusted=trusted)


def save_pipeline(pipeline: Any, path: str | os.PathLike[str]) -> str:
    """Write ``pipeline`` to ``path`` with skops (atomically); return the file's sha256.

    Parent directories are created.  The conventional suffix is ``.skops``.
    """
    data = dumps_pipeline(pipeline)
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return sha256_bytes(data)


def load_pipeline(
    path: str | os.PathLike[str],
    *,
    expected_sha256: str | None = None,
    extra_trusted: Iterable[str] = (),
) -> Any:
    """Load a pipeline saved by :func:`save_pipeline`.

    Only :data:`ALLOWED_TYPES` (+ ``extra_trusted``) are trusted; anything else raises
    :class:`UntrustedTypesError`.  With ``expected_sha256`` a mismatching file raises
    ``ValueError`` before it is parsed.
    """
    data = Path(path).read_bytes()
    if expected_sha256 is not None and sha256_bytes(data) != expected_sha256.lower():
        raise ValueError(f"sha256 mismatch for {path}: expected {expected_sha256}")
    return loads_pipeline(data, extra_trusted=extra_trusted)
