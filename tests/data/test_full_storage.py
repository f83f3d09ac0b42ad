"""A full disk (or quota) while the platform writes: what was stored before stays readable,
no part of a file and no temporary file is left, and the error names the file, the storage
being full and what to do.

A file system with no room left cannot be made without privileges, so the writer here
raises what one answers (``ENOSPC``) after writing a first part, as a real one does."""

from __future__ import annotations

import errno
from pathlib import Path

import dagster as dg
import polars as pl
import pytest
from upath import UPath

import churn_assets.io_managers as io_managers
from churn_assets.io_managers import TableIOManager
from churn_assets.lib.storage import Storage, write_local_atomically
from churn_assets.retries import STORAGE_RETRY


def _full_disk(f) -> None:
    f.write(b"PAR1 half a file")
    raise OSError(errno.ENOSPC, "No space left on device")


def _leftovers(folder: Path) -> list[str]:
    return [p.name for p in folder.rglob("*") if ".tmp-" in p.name]


def test_a_full_disk_leaves_the_file_as_it_was_and_says_what_to_do(tmp_path):
    target = tmp_path / "deployments" / "current.json"
    target.parent.mkdir()
    target.write_text('{"version": "v1"}')

    with pytest.raises(OSError) as raised:
        write_local_atomically(str(target), _full_disk)

    assert raised.value.errno == errno.ENOSPC
    message = str(raised.value)
    assert str(target) in message and "the storage is full" in message
    assert "MB free there" in message and "re-execute the failed run" in message
    assert target.read_text() == '{"version": "v1"}'
    assert _leftovers(tmp_path) == []


def test_a_full_disk_seen_by_polars_reads_the_same(tmp_path):
    """Polars writing Parquet straight into the file reports the file system's error as
    its own ComputeError (as a full disk under `dagster dev` did): it is still the full
    disk, with the same message and errno."""

    def polars_full(f):
        f.write(b"PAR1")
        raise pl.exceptions.ComputeError(
            "parquet: File out of specification: underlying IO error: No space left on "
            "device (os error 28)"
        )

    target = tmp_path / "customer_features.parquet"
    with pytest.raises(OSError, match="the storage is full") as raised:
        write_local_atomically(str(target), polars_full)
    assert raised.value.errno == errno.ENOSPC and str(target) in str(raised.value)
    assert not target.exists() and _leftovers(tmp_path) == []


def test_other_write_errors_pass_unchanged_and_leave_nothing(tmp_path):
    target = tmp_path / "a.parquet"

    def broken(f):
        f.write(b"x")
        raise ValueError("cannot encode")

    with pytest.raises(ValueError, match="^cannot encode$"):
        write_local_atomically(str(target), broken)
    assert not target.exists() and _leftovers(tmp_path) == []


def test_storage_writes_go_through_it(tmp_path, monkeypatch):
    """Every write of the storage layer (pointers, versions, state, reports) is atomic."""
    import churn_assets.lib.storage as storage_module

    s = Storage(str(tmp_path))
    s.write_json("state/state.json", {"batches": ["a"]})
    real = storage_module.write_local_atomically
    monkeypatch.setattr(
        storage_module, "write_local_atomically", lambda path, write: real(path, _full_disk)
    )
    with pytest.raises(OSError, match="state.json"):
        s.write_json("state/state.json", {"batches": ["a", "b"]})
    assert s.read_json("state/state.json") == {"batches": ["a"]}
    assert _leftovers(tmp_path) == []


def test_an_asset_written_on_a_full_disk_keeps_its_previous_value(tmp_path, monkeypatch):
    """The IO manager writes every asset whole or not at all: a step that fails while
    writing (full disk, killed) leaves the previous materialization readable, where a
    write in place left a truncated Parquet file that every later run failed to read."""
    frames = iter([pl.DataFrame({"customer_id": ["C1", "C2"]}), pl.DataFrame({"x": [1]})])

    @dg.asset(retry_policy=STORAGE_RETRY)  # as the platform's assets: transient errors retry
    def current_features() -> pl.DataFrame:
        return next(frames)

    manager = TableIOManager(base_path=UPath(str(tmp_path)))
    assert dg.materialize([current_features], resources={"io_manager": manager}).success
    stored = tmp_path / "current_features.parquet"
    before = stored.read_bytes()

    real = io_managers.write_local_atomically
    monkeypatch.setattr(
        io_managers, "write_local_atomically", lambda path, write: real(path, _full_disk)
    )
    result = dg.materialize(
        [current_features], resources={"io_manager": manager}, raise_on_error=False
    )

    assert not result.success
    # a full disk is not transient: no retry, and the step's error is the cause itself
    # (it used to be retried three times and end as "Exceeded max_retries of 3")
    assert not [e for e in result.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]
    failure = result.get_step_failure_events()[0].step_failure_data.error
    assert "No space left on device writing" in failure.message
    assert "the storage is full" in failure.message and "current_features.parquet" in str(failure)
    assert stored.read_bytes() == before
    assert pl.read_parquet(stored)["customer_id"].to_list() == ["C1", "C2"]
    assert _leftovers(tmp_path) == []


def test_a_file_name_near_the_limit_is_written(tmp_path):
    """A 244-character landing file name gives a 252-byte partition file name: its
    temporary twin (the name plus .tmp-<32 hex>) passed the file system's 255-byte limit,
    so the file could never be ingested ("File name too long")."""
    from churn_assets.lib.storage import write_local_atomically

    path = tmp_path / ("L" * 240 + ".csv.parquet")  # 252 bytes
    write_local_atomically(str(path), lambda f: f.write(b"data"))
    assert path.read_bytes() == b"data"
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # nothing else left
