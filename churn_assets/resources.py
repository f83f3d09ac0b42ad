"""Dagster resources: storage, the landing zone and the data set, all read at run time.

Every field defaults to ``None``, meaning "take it from the environment" (``CHURN_*``
variables via :class:`~churn_assets.lib.settings.ChurnSettings`) when a run starts, so the
same definitions serve the local default and the compose stack.
"""

from __future__ import annotations

import dagster as dg

from churn_assets.lib.datasets import DatasetConfig, load_dataset_config
from churn_assets.lib.settings import ChurnSettings, join_url
from churn_assets.lib.storage import Storage


class ChurnPlatform(dg.ConfigurableResource):
    """Storage root, landing zone and data set of the platform (unset fields: environment)."""

    storage_url: str | None = None
    landing_url: str | None = None
    s3_endpoint_url: str | None = None
    dataset: str | None = None

    def settings(self) -> ChurnSettings:
        """Environment settings with this resource's explicit values on top."""
        overrides = {
            k: v
            for k, v in {
                "storage_url": self.storage_url,
                "landing_url": self.landing_url,
                "s3_endpoint_url": self.s3_endpoint_url,
                "dataset": self.dataset,
            }.items()
            if v is not None
        }
        return ChurnSettings(**overrides)

    def dataset_config(self) -> DatasetConfig:
        """The data set config named by ``dataset`` / ``CHURN_DATASET``."""
        return load_dataset_config(self.settings().dataset)

    def storage(self) -> Storage:
        """This data set's folder under the storage root."""
        s = self.settings()
        return Storage(
            join_url(s.resolved_storage_url, self.dataset_config().name), s.storage_options()
        )

    def landing_url_for_dataset(self) -> str:
        """The landing zone folder of the data set (relative source paths live here)."""
        s = self.settings()
        return join_url(s.resolved_landing_url, self.dataset_config().name)

    def landing_storage_options(self) -> dict:
        s = self.settings()
        return s.storage_options(s.resolved_landing_url)
