"""Inputs marked with ``lazy_input()`` (or annotated ``pl.LazyFrame``) are lazy Parquet
scans; the feature code gives the same tables from a scan as from an eager frame."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import dagster as dg
import polars as pl
from upath import UPath

from churn_assets.io_managers import TableIOManager, lazy_input
from churn_assets.lib.datasets import load_dataset_config
from churn_assets.lib.feature_sets import features_at, scoring_cutoff, usable

TX = pl.DataFrame(
    {
        "customer_id": ["a", "a", "b", "b", None, "c"],
        "timestamp": [dt.datetime(2024, 1, d) for d in (1, 5, 2, 20, 3, 25)],
        "amount": [10.0, -2.0, 5.5, 7.25, 1.0, 3.0],
        "invoice_id": ["i1", "C1", "i2", "i3", "i4", None],
        "category": ["x", "x", "y", None, "x", "y"],
        "country": ["FR", "FR", "DE", "DE", None, "FR"],
        "is_return": [False, True, False, False, False, False],
        "_source_file": ["f"] * 6,
        "_parse_errors": [None] * 6,
        "_quarantined": [False, False, False, True, False, False],
    },
    schema_overrides={"_parse_errors": pl.String},
)


def test_io_manager_scans_inputs_marked_or_annotated_lazy(tmp_path: Path) -> None:
    seen: dict[str, object] = {}

    @dg.asset
    def table() -> pl.DataFrame:
        return TX

    @dg.asset
    def lazy_user(table: pl.LazyFrame) -> dict:
        seen["lazy"] = table
        return {"rows": table.select(pl.len()).collect().item()}

    @dg.asset(ins={"table": lazy_input()})
    def marked_user(table) -> dict:
        seen["marked"] = table
        return {"rows": table.select(pl.len()).collect().item()}

    @dg.asset
    def eager_user(table) -> dict:
        seen["eager"] = table
        return {"rows": table.height}

    io = TableIOManager(base_path=UPath(str(tmp_path)))
    assets = [table, lazy_user, marked_user, eager_user]
    result = dg.materialize(assets, resources={"io_manager": io})
    assert result.success
    assert isinstance(seen["lazy"], pl.LazyFrame)
    assert isinstance(seen["marked"], pl.LazyFrame)
    assert isinstance(seen["eager"], pl.DataFrame)
    assert seen["lazy"].collect().equals(TX)
    assert seen["eager"].equals(TX)
    # each materialization's path names the file written, which opens as it says
    paths = {
        m.materialization.asset_key.to_user_string(): m.materialization.metadata["path"].value
        for m in result.get_asset_materialization_events()
    }
    assert paths["table"] == str(tmp_path / "table.parquet")
    assert pl.read_parquet(paths["table"]).equals(TX)
    assert paths["eager_user"] == str(tmp_path / "eager_user.json")
    assert Path(paths["eager_user"]).read_text().strip().startswith("{")


def test_usable_on_a_scan_equals_usable_on_the_frame(tmp_path: Path) -> None:
    path = tmp_path / "tx.parquet"
    TX.write_parquet(path)
    eager, bad = usable(TX)
    lazy, lazy_bad = usable(pl.scan_parquet(path))
    assert isinstance(lazy, pl.LazyFrame)
    assert bad == lazy_bad == 1
    assert lazy.collect().equals(eager)
    assert "_source_file" not in lazy.collect_schema().names()


def test_features_from_a_scan_equal_features_from_the_frame(tmp_path: Path) -> None:
    cfg = load_dataset_config("synthetic")
    path = tmp_path / "tx.parquet"
    TX.write_parquet(path)
    eager, _ = usable(TX)
    lazy, _ = usable(pl.scan_parquet(path))
    assert scoring_cutoff(lazy) == scoring_cutoff(eager) == dt.date(2024, 1, 26)
    cutoff = dt.date(2024, 1, 10)
    for with_labels in (True, False):
        a = features_at(cfg, None, eager, cutoff, with_labels=with_labels, categories=("x", "y"))
        b = features_at(cfg, None, lazy, cutoff, with_labels=with_labels, categories=("x", "y"))
        assert a.height == 2
        assert a.equals(b)


def test_every_consumer_of_the_raw_transactions_scans_them() -> None:
    """No asset loads the whole stacked transaction table eagerly: at 54M lines that alone
    held 6 GB (the deployment step peaked at 11.8 GB)."""
    from churn_assets.definitions import defs
    from churn_assets.io_managers import LAZY_KEY, PARTS_KEY

    graph = defs.resolve_asset_graph()
    consumers = []
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        if not node.is_materializable:
            continue
        assets_def = node.assets_def
        for name, in_key in assets_def.keys_by_input_name.items():
            if in_key.path[-1] == "raw_transactions":
                meta = assets_def.node_def.input_def_named(name).metadata or {}
                consumers.append(
                    (key.to_user_string(), bool(meta.get(LAZY_KEY) or meta.get(PARTS_KEY)))
                )
    assert len(consumers) >= 5, consumers
    assert all(lazy for _, lazy in consumers), [c for c, lazy in consumers if not lazy]
