"""The data set this code location serves, and the instance-wide names derived from it.

One Dagster instance holds several data sets side by side, one code location each
(``workspace.yaml``):

- ``churn_assets.definitions`` (location ``churn_assets``) serves ``CHURN_DATASET`` with plain
  asset keys (``current_features``);
- ``churn_assets.locations`` with ``attribute: <name>`` serves data set ``<name>`` with its keys
  under the prefix ``<name>/`` (``telco/current_features``), see :mod:`churn_assets.locations`.

Job, sensor and schedule names belong to their code location, but asset keys, pools and
dynamic partition sets are global in an instance: every one of them is built here, from the
prefix read once when the location loads (``CHURN_ASSET_PREFIX``, set by
:mod:`churn_assets.locations`), so that two data sets never share one. Storage, the landing
folder and MLflow names are per data set already (``<storage>/<data set>/``,
``<data set>-churn-classifier``).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import dagster as dg

if TYPE_CHECKING:
    from churn_assets.lib.datasets import DatasetConfig

#: Environment variable naming the key prefix of this code location (unset: plain keys).
PREFIX_ENV = "CHURN_ASSET_PREFIX"
#: Run tag naming the data set of every run our sensors and schedules request.
DATASET_TAG = "churn/dataset"


class ScopeError(ValueError):
    """A data set name that cannot be used as an asset-key prefix."""


def check_name(name: str) -> str:
    """``name`` if it can prefix asset keys, else a :class:`ScopeError` saying why."""
    from churn_assets.lib.datasets import prefix_name_problem

    if problem := prefix_name_problem(name):
        raise ScopeError(problem)
    return name


def _prefix_from_env() -> str | None:
    value = (os.environ.get(PREFIX_ENV) or "").strip()
    return check_name(value) if value else None


#: The key prefix of this code location, fixed when it loads (None: plain keys).
PREFIX: str | None = _prefix_from_env()


def _configured() -> DatasetConfig | None:
    try:
        from churn_assets.lib.datasets import load_dataset_config
        from churn_assets.lib.settings import get_settings

        return load_dataset_config(get_settings().dataset)
    except Exception:  # a broken config must not stop the location loading: runs report it
        return None


#: This location's data set config as it loads (None when it cannot be read now).
CONFIG: DatasetConfig | None = _configured()
#: The name of this location's data set, as its runs are tagged (``churn/dataset``).
DATASET: str = PREFIX or (CONFIG.name if CONFIG else os.environ.get("CHURN_DATASET") or "synthetic")


def key(name: str) -> dg.AssetKey:
    """The asset key of asset ``name`` in this code location."""
    return dg.AssetKey([PREFIX, name] if PREFIX else [name])


def pool(name: str) -> str:
    """The pool ``name`` of this data set (``retraining``, ``telco/retraining``)."""
    return f"{PREFIX}/{name}" if PREFIX else name


def partitions_name(name: str, prefix: str | None = PREFIX) -> str:
    """The name of a dynamic partition set of this data set (of the location with key
    prefix ``prefix``, for a caller outside the code location, such as the CLI)."""
    return f"{prefix}__{name}" if prefix else name


def strip_prefix(path: list[str] | tuple[str, ...]) -> list[str]:
    """An asset key's path without this location's prefix (the storage path of the asset)."""
    parts = list(path)
    return parts[1:] if PREFIX and len(parts) > 1 and parts[0] == PREFIX else parts


def dataset_tags() -> dict[str, str]:
    """Run tags naming this location's data set (several data sets share one instance)."""
    return {DATASET_TAG: DATASET}
