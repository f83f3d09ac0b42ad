"""One code location per extra data set: ``attribute: <name>`` in ``workspace.yaml``.

::

    load_from:
      - python_module: {module_name: churn_assets.definitions, location_name: churn_assets}
      - python_module: {module_name: churn_assets.locations, attribute: telco,
                        location_name: telco}

The attribute names the data set: a built-in config (``churn_assets/datasets/``) or
``<name>.yaml`` in ``CHURN_DATASETS_DIR``. Its location is the whole platform for that data
set alone — the same asset graph under the key prefix ``<name>/``, its own checks, jobs,
sensors and schedules, pools ``<name>/retraining`` and ``<name>/ingest``, storage folder,
landing folder and MLflow names. A code location is its own process, so its data set is
fixed when it loads: this module sets ``CHURN_DATASET`` and ``CHURN_ASSET_PREFIX`` and then
builds :mod:`churn_assets.definitions`; the run and step processes Dagster starts for it load
the same attribute again and so see the same data set.
"""

from __future__ import annotations

import os
import sys
from typing import Any

#: Same as ``churn_assets.scope``, which must not be imported before the data set is set.
PREFIX_ENV = "CHURN_ASSET_PREFIX"


class LocationError(RuntimeError):
    """A data set location that cannot load (a bad name or config, or two data sets in one
    process). Not an ``AttributeError``: Dagster looks the attribute up with ``hasattr``,
    which would swallow it and show only "<name> not found in module"; the reason itself
    reaches the location's error in the UI."""


def definitions_for(name: str) -> Any:
    """The ``Definitions`` of data set ``name`` with its keys under the prefix ``name/``."""
    from churn_assets.lib.datasets import (
        DatasetConfigError,
        load_dataset_config,
        prefix_name_problem,
    )

    if problem := prefix_name_problem(name):
        raise LocationError(problem)
    # the prefix is read when churn_assets.scope is first imported: nothing may import it
    # (or the definitions) in this process before the environment says which data set
    built = sys.modules.get("churn_assets.scope")
    if built is not None:
        if name != built.PREFIX:
            raise LocationError(
                "this process already holds the definitions of "
                f"{'data set ' + repr(built.PREFIX) if built.PREFIX else 'the default location'}"
                f": data set {name!r} needs a code location (process) of its own"
            )
        from churn_assets.definitions import defs

        return defs
    try:  # a bad config stops the location here, naming its field
        cfg = load_dataset_config(name)
    except DatasetConfigError as e:
        raise LocationError(str(e)) from e
    if cfg.name != name:
        raise LocationError(
            f"data set config {name!r} is named {cfg.name!r}: the attribute must be the "
            "config's name (storage, landing folder and MLflow names follow it)"
        )
    os.environ["CHURN_DATASET"] = name
    os.environ[PREFIX_ENV] = name
    from churn_assets.definitions import defs

    return defs


def __getattr__(name: str) -> Any:
    if name.startswith("_"):  # Python's and other libraries' probes: no data set
        raise AttributeError(name)
    built = sys.modules.get("churn_assets.scope")
    if built is not None and name != built.PREFIX:
        # a library's probe of every loaded module (pickle's and skops' ``whichmodule`` look
        # a function's name, e.g. scipy's ``agm``, up in each): in a process that holds a
        # data set it finds nothing here. A LocationError failed every drift report of a
        # data set location once its deployed model was loaded with skops.
        raise AttributeError(
            f"module {__name__!r} has no attribute {name!r}: this process holds data set "
            f"{built.PREFIX or 'of the default location'!r}"
        )
    return definitions_for(name)
