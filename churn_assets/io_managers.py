"""IO manager writing every asset into the storage root through fsspec (local dir or S3).

Polars and pandas frames are stored as Parquet, other values as JSON. Paths are
``<storage root>/<data set>/assets/<asset key>.<ext>``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import IO, Any

import dagster as dg
from upath import UPath

from churn_assets.lib.settings import ChurnSettings, join_url
from churn_assets.lib.storage import info_stamp, write_local_atomically
from churn_assets.retries import fail_fast_unless_transient


def _set_aside_as_copies(context: dg.InputContext, keys: list[str]) -> set[str]:
    """The partitions among ``keys`` set aside as copies of another landing file
    (:func:`~churn_assets.partitions.copies_set_aside`); none without an instance (a value
    loaded outside a run)."""
    from churn_assets.partitions import copies_set_aside

    try:
        instance = context.instance
    except dg.DagsterInvariantViolationError:
        return set()
    return set(copies_set_aside(instance, context.asset_key, keys))


class TableIOManager(dg.UPathIOManager):
    """Parquet for frames, JSON for everything else, on any fsspec file system."""

    extension = ""

    def get_asset_relative_path(self, context: dg.InputContext | dg.OutputContext) -> UPath:
        """The asset's path under ``<data set>/assets/``: the key without this code location's
        prefix, so every data set's storage has the same layout (``telco/current_features``
        is stored at ``<storage>/telco/assets/current_features``)."""
        from churn_assets.scope import strip_prefix

        return UPath(*strip_prefix(context.asset_key.path))

    def _suffix(self, path: UPath) -> list[UPath]:
        return [_with_ext(path, ".parquet"), _with_ext(path, ".json")]

    def get_metadata(self, context: dg.OutputContext, obj: Any) -> dict[str, Any]:
        """The ``path`` of the file written (with its extension; Dagster's own is the path
        without it, which names no file)."""
        if obj is None:
            return {}
        if context.has_asset_partitions:
            path = next(iter(self._get_paths_for_partitions(context).values()))
        else:
            path = self._get_path(context)
        ext = ".parquet" if _is_table(obj) else ".json"
        return {"path": dg.MetadataValue.path(str(_with_ext(path, ext)))}

    def dump_to_path(self, context: dg.OutputContext, obj: Any, path: UPath) -> None:
        import polars as pl

        if isinstance(obj, pl.LazyFrame):
            obj = obj.collect()
        if hasattr(obj, "to_parquet") and not isinstance(obj, pl.DataFrame):
            obj = pl.from_pandas(obj)
        if _is_table(obj):
            _write(_with_ext(path, ".parquet"), lambda f: obj.write_parquet(f, compression="zstd"))
            stale = _with_ext(path, ".json")
        else:
            data = json.dumps(obj, default=str, indent=1).encode()
            _write(_with_ext(path, ".json"), lambda f: f.write(data))
            stale = _with_ext(path, ".parquet")
        if stale.exists():
            stale.unlink()

    def load_from_path(self, context: dg.InputContext, path: UPath) -> Any:
        """A Parquet asset as a ``pl.DataFrame``, or as a ``pl.LazyFrame`` scan when the input
        asks for one (:func:`lazy_input`, or a ``pl.LazyFrame`` annotation; then only the
        columns and rows the consumer uses are read); anything else from JSON."""
        parquet = _with_ext(path, ".parquet")
        if parquet.exists():
            import polars as pl

            if _wants_lazy(context):
                return _scan_parquet(parquet)
            with parquet.open("rb") as f:
                return pl.read_parquet(f)
        stored = _with_ext(path, ".json")
        if not stored.exists():
            asset = "/".join(context.asset_key.path) if context.has_asset_key else path.stem
            raise FileNotFoundError(
                f"{asset} has not been materialized yet (nothing at {parquet} or {stored}): "
                f"materialize it first, or the assets it comes from with it (in the UI: "
                f"select it and its upstream assets, then Materialize)"
            )
        with stored.open("r") as f:
            return json.load(f)

    def handle_output(self, context: dg.OutputContext, obj: Any) -> None:
        """Write the asset (see :meth:`dump_to_path`). As in the asset bodies, only a
        transient error reaches the retry policy; any other (a full disk, a value that
        cannot be stored) fails the step at once, naming its cause."""
        with fail_fast_unless_transient():
            super().handle_output(context, obj)

    def load_input(self, context: dg.InputContext) -> Any:
        """An unpartitioned asset reading a partitioned one gets every partition written to
        storage as one table (a lazy scan for :func:`lazy_input`), in key order: the storage,
        not the instance's partition list, says what exists, so a run on another instance
        (a worker, a fresh ``dagster dev``) reads the same table. Partitions the instance
        knows but storage lacks (their run failed) are named in a warning, except files set
        aside as copies of another landing file (no lines of their own, by design). None
        written: None.
        Errors other than transient ones fail the step at once, as in :meth:`handle_output`."""
        with fail_fast_unless_transient():
            return self._load_input(context)

    def _load_input(self, context: dg.InputContext) -> Any:
        if not (context.has_asset_key and context.has_asset_partitions):
            return super().load_input(context)
        import polars as pl

        folder = self._get_path_without_extension(context)
        found = sorted(folder.glob("*.parquet"), key=lambda p: p.name) if folder.exists() else []
        names = {p.name for p in found}
        missing = [k for k in context.asset_partition_keys if f"{k}.parquet" not in names]
        if missing:
            copies = _set_aside_as_copies(context, missing)
            missing = [k for k in missing if k not in copies]
        if missing:
            context.log.warning(
                f"{context.asset_key.to_user_string()}: {len(missing)} partition(s) not "
                f"materialized, left out: {', '.join(missing[:10])}"
            )
        if not found:
            return None
        if (getattr(context, "definition_metadata", None) or {}).get(PARTS_KEY) is True:
            return {p.name[: -len(".parquet")]: (_stamp(p), _scan_parquet(p)) for p in found}
        if _wants_lazy(context):
            return pl.concat([_scan_parquet(p) for p in found], how="diagonal_relaxed")
        frames = []
        for p in found:
            with p.open("rb") as f:
                frames.append(pl.read_parquet(f))
        return pl.concat(frames, how="diagonal_relaxed", rechunk=False)

    def path_exists(self, path: UPath) -> bool:
        return any(p.exists() for p in self._suffix(path))

    def has_output(self, context: dg.OutputContext) -> bool:
        return self.path_exists(self._get_path(context))


#: Input metadata asking for a partitioned asset as its partitions (see :func:`parts_input`).
PARTS_KEY = "churn/partitions"


def parts_input() -> dg.AssetIn:
    """An input of a partitioned asset loaded as ``{partition key: (stamp, lazy scan)}``,
    in key order; the stamp (size and modification time) changes when a partition is written
    again. For consumers that keep per-partition state."""
    return dg.AssetIn(metadata={PARTS_KEY: True})


def _stamp(path: UPath) -> str:
    """Size and modification time (local) or last-modified / ETag (object stores)."""
    return info_stamp(path.fs.info(path.path))


def _write(target: UPath, write: Callable[[IO[bytes]], Any]) -> None:
    """Write an asset's file whole or not at all: a local file through a temporary file
    renamed into place (a killed step or a full disk leaves the previous value readable), an
    object in one PUT."""
    if target.protocol in ("", "file", "local"):
        write_local_atomically(target.path, write)
    else:
        with target.open("wb") as f:
            write(f)


def _is_table(obj: Any) -> bool:
    """Whether ``obj`` is stored as Parquet (a polars or pandas frame) rather than JSON."""
    return hasattr(obj, "to_parquet") or type(obj).__name__ in ("DataFrame", "LazyFrame")


def _with_ext(path: UPath, ext: str) -> UPath:
    """``path`` with ``ext`` appended (a partition key such as ``batch-1.csv`` keeps its dot)."""
    return path.with_name(path.name + ext)


#: Input metadata asking for a lazy Parquet scan (see :func:`lazy_input`).
LAZY_KEY = "churn/lazy"


def lazy_input() -> dg.AssetIn:
    """An asset input loaded as a ``pl.LazyFrame`` scan: only the columns and rows the asset
    uses are read. (Metadata rather than a ``pl.LazyFrame`` annotation, so that loading the
    code location does not import polars.)"""
    return dg.AssetIn(metadata={LAZY_KEY: True})


def _wants_lazy(context: dg.InputContext) -> bool:
    """Whether the input asks for a lazy scan: :func:`lazy_input` metadata, or an input
    annotated ``pl.LazyFrame`` (as dagster-polars decides)."""
    if (getattr(context, "definition_metadata", None) or {}).get(LAZY_KEY) is True:
        return True
    dagster_type = getattr(context, "dagster_type", None)
    typing_type = getattr(dagster_type, "typing_type", None)
    return getattr(typing_type, "__name__", None) == "LazyFrame" and getattr(
        typing_type, "__module__", ""
    ).startswith("polars")


def _scan_parquet(path: UPath) -> Any:
    """A lazy scan of a Parquet file: local files are scanned in place (projection and
    predicate pushdown); remote ones are read into memory first, with fsspec's options."""
    import io

    import polars as pl

    if path.protocol in ("", "file", "local"):
        return pl.scan_parquet(path.path)
    with path.open("rb") as f:
        return pl.scan_parquet(io.BytesIO(f.read()))


class ChurnIOManager(dg.ConfigurableIOManagerFactory):
    """Stores assets under ``<CHURN_STORAGE_URL>/<data set>/assets`` (resolved at run time)."""

    storage_url: str | None = None
    s3_endpoint_url: str | None = None
    dataset: str | None = None

    def create_io_manager(self, context) -> TableIOManager:
        from churn_assets.lib.datasets import load_dataset_config

        overrides = {
            k: v
            for k, v in {
                "storage_url": self.storage_url,
                "s3_endpoint_url": self.s3_endpoint_url,
                "dataset": self.dataset,
            }.items()
            if v is not None
        }
        s = ChurnSettings(**overrides)
        name = load_dataset_config(s.dataset).name
        url = join_url(s.resolved_storage_url, name, "assets")
        return TableIOManager(base_path=UPath(url, **s.storage_options()))
