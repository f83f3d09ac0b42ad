"""The deployment pointer: pinning and unpinning change the pin, nothing else."""

from __future__ import annotations

from pathlib import Path

from churn_assets.lib import deployment as dep
from churn_assets.lib.storage import Storage


def deploy(storage: Storage, *names: str) -> None:
    for name in names:
        dep.write_version(storage, name, {"model.bin": name.encode()}, {"models": {}})
        dep.set_current(storage, name, reason=f"test deploy {name}")


def test_unpin_and_pin_keep_when_the_version_was_deployed(tmp_path: Path):
    """A rollback pins v1; unpinning (UI: deployed_model_version with ``unpin: true``, or
    ``churn unpin``) rewrote ``updated_at`` though v1 stayed deployed, so the pointer said
    it was deployed at the unpin. Only the pin changes now, and so does pinning again."""
    storage = Storage(str(tmp_path / "synthetic"))
    deploy(storage, "v20260101-000000", "v20260102-000000")
    rolled_back = dep.rollback(storage)
    assert rolled_back["pinned"] == "v20260101-000000"

    unpinned = dep.unpin(storage)
    assert unpinned["pinned"] is None
    assert dep.read_current(storage) == {**rolled_back, "pinned": None}

    pinned = dep.pin_current(storage)
    assert pinned["pinned"] == "v20260101-000000"
    assert dep.read_current(storage) == rolled_back
