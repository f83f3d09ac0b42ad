"""`churn versions`: the stored model versions an operator can roll back to, newest first,
with the deployed, pinned and rollback-target ones marked."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from churn_assets.cli import main
from churn_assets.lib import deployment as dep
from churn_assets.lib.storage import Storage


def _version(s: Storage, i: int, value_from: str | None = None) -> str:
    name = f"v202611{1 + i:02d}-000000"
    models = {
        "classifier": {
            "candidate": "xgboost",
            "metrics": {"roc_auc": 0.9 + i / 100},
            "from_version": name,
        },
        "regressor": {
            "candidate": "ridge",
            "metrics": {"r2_gain_vs_naive": 0.05},
            "from_version": value_from or name,
        },
    }
    dep.write_version(s, name, {"classifier.skops": f"model {i}".encode()}, {"models": models})
    return name


def test_versions_lists_what_a_rollback_can_go_to(isolated_env: Path):
    empty = CliRunner().invoke(main, ["versions"])
    assert empty.exit_code == 0 and "no model version is stored" in empty.output

    s = Storage(str(isolated_env / "synthetic"))
    v0 = _version(s, 0)
    v1 = _version(s, 1, value_from=v0)  # its value model kept from v0
    v2 = _version(s, 2)
    for v in (v0, v1, v2):
        dep.set_current(s, v, reason="promoted")
    dep.rollback(s)  # to v1, pinned: a plain rollback would go on to v0

    listed = CliRunner().invoke(main, ["versions"])
    assert listed.exit_code == 0, listed.output
    lines = listed.output.splitlines()
    assert [line.split()[0] if not line.startswith("*") else line.split()[1] for line in lines] == [
        v2,
        v1,
        v0,
    ]
    assert lines[1].startswith(f"* {v1}") and lines[1].endswith("[deployed, pinned]")
    assert f"value: ridge +0.0500 (from {v0})" in lines[1]
    assert "churn: xgboost 0.9100" in lines[1]
    assert lines[2].endswith("[rollback target]") and "[" not in lines[0]

    rows = json.loads(CliRunner().invoke(main, ["versions", "--json"]).output)
    assert [r["version"] for r in rows if r["rollback_target"]] == [v0]
    assert dep.rollback(s, pin=False)["version"] == v0  # where the listing said it goes
