"""Several data sets in one Dagster instance, one code location each (``churn_assets.locations``).

Asset keys, pools and dynamic partition sets are global in an instance: a data set's location
must never share one with another. Its data set is fixed when the location loads, so each
probe loads a location in a fresh process, as Dagster's code server does.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from churn_assets.lib.datasets import BUILTIN_DIR

REPO = Path(__file__).resolve().parents[2]

PROBE = r"""
import importlib, json, sys
module, attr = sys.argv[1], sys.argv[2]
defs = getattr(importlib.import_module(module), attr)
repo = defs.get_repository_def()
g = repo.asset_graph
keys = g.get_all_asset_keys()
print(json.dumps({
    "assets": sorted(k.to_user_string() for k in keys),
    "checks": sorted(k.to_user_string() for k in g.asset_check_keys),
    "pools": sorted({p for k in keys for p in g.get(k).pools}),
    "partitions": sorted({g.get(k).partitions_def.name for k in keys if g.get(k).partitions_def}),
    "job_tags": {j.name: j.tags.get("churn/dataset") for j in repo.get_all_jobs()
                 if not j.name.startswith("__")},
    "sensor_assets": sorted(s.asset_key.to_user_string() for s in repo.sensor_defs
                            if getattr(s, "asset_key", None)),
}))
"""


def python(code: str, *args: str, **env: str) -> subprocess.CompletedProcess:
    """``code`` run by a fresh Python process of this environment (plus ``env``)."""
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        env={**os.environ, **env},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )


def last_json(out: subprocess.CompletedProcess) -> dict:
    """The JSON object a successful process printed last."""
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def load_location(module: str, attr: str, **env: str) -> subprocess.CompletedProcess:
    return python(PROBE, module, attr, **env)


def probe(module: str, attr: str, **env: str) -> dict:
    return last_json(load_location(module, attr, **env))


def test_a_data_set_location_shares_no_instance_wide_name_with_the_default():
    default = probe("churn_assets.definitions", "defs")
    telco = probe("churn_assets.locations", "telco")
    assert "deployed_model_version" in default["assets"]
    assert telco["assets"] == [f"telco/{k}" for k in default["assets"]]
    assert telco["checks"] == [f"telco/{k}" for k in default["checks"]]
    assert default["pools"] == ["ingest", "retraining"]
    assert telco["pools"] == ["telco/ingest", "telco/retraining"]
    assert default["partitions"] == ["transaction_files"]
    assert telco["partitions"] == ["telco__transaction_files"]
    assert set(default["job_tags"].values()) == {"synthetic"}
    assert set(telco["job_tags"].values()) == {"telco"}
    assert telco["job_tags"].keys() == default["job_tags"].keys()  # same jobs, own location
    assert telco["sensor_assets"] == [f"telco/{k}" for k in default["sensor_assets"]]


def test_a_location_for_your_own_config_and_the_errors_it_can_give(tmp_path: Path):
    """A config in CHURN_DATASETS_DIR gets a location by its name; a name that cannot prefix
    keys, an unknown data set and a config named otherwise than its file fail to load with
    the reason (the UI shows it on the location, the others keep running)."""
    text = (BUILTIN_DIR / "synthetic.yaml").read_text()
    (tmp_path / "shop_eu.yaml").write_text(text.replace("name: synthetic", "name: shop_eu"))
    (tmp_path / "other.yaml").write_text(text.replace("name: synthetic", "name: not_other"))
    own = {"CHURN_DATASETS_DIR": str(tmp_path)}
    mine = probe("churn_assets.locations", "shop_eu", **own)
    assert mine["pools"] == ["shop_eu/ingest", "shop_eu/retraining"]
    assert all(k.startswith("shop_eu/") for k in mine["assets"])

    renamed = load_location("churn_assets.locations", "other", **own)
    assert renamed.returncode != 0
    assert "data set config 'other' is named 'not_other'" in renamed.stderr
    unknown = load_location("churn_assets.locations", "nope", **own)
    assert unknown.returncode != 0
    assert "unknown data set 'nope': no nope.yaml in" in unknown.stderr


def test_a_broken_config_s_reason_reaches_dagster_s_location_error(tmp_path: Path):
    """Dagster loads a location's attribute through ``hasattr``, which swallowed the reason
    (an ``AttributeError``): the UI said only "broken not found in module". The reason, the
    config field at fault, now reaches Dagster's load error."""
    (tmp_path / "broken.yaml").write_text(
        (BUILTIN_DIR / "synthetic.yaml")
        .read_text()
        .replace("name: synthetic", "name: broken")
        .replace("id_column:", "id_colum:", 1)
    )
    code = (
        "from dagster._core.code_pointer import CodePointer\n"
        "CodePointer.from_module('churn_assets.locations', 'broken', None).load_target()\n"
    )
    out = python(code, CHURN_DATASETS_DIR=str(tmp_path))
    assert out.returncode != 0
    assert "LocationError" in out.stderr and "id_colum" in out.stderr, out.stderr[-2000:]
    assert "not found in module" not in out.stderr


def test_a_data_set_location_survives_libraries_probing_every_module():
    """pickle's and skops' ``whichmodule`` look a function's name up in every loaded
    module. In a process holding telco (a landing run), loading the deployed model with
    skops looked scipy's ``agm`` up here and got a LocationError: every drift report of a
    data set location failed once a version was deployed. Such names are now plain misses;
    the data set itself is still found."""
    code = (
        "import json, pickle, churn_assets.locations as L\n"
        "defs = L.telco\n"
        "import skops.io, scipy.special\n"
        "print(json.dumps({'agm': hasattr(L, 'agm'), 'telco': L.telco is defs,\n"
        "  'where': pickle.whichmodule(scipy.special.agm, 'agm')}))\n"
    )
    found = last_json(python(code))
    assert found["agm"] is False and found["telco"] is True
    assert found["where"].startswith("scipy.special"), found


def test_one_process_holds_one_data_set():
    """This test process holds the default location's definitions (other tests loaded
    them): a second data set here is refused, not silently given the default's names."""
    import churn_assets.definitions  # noqa: F401  (the default location, plain keys)
    from churn_assets.locations import LocationError, definitions_for

    with pytest.raises(LocationError, match="needs a code location \\(process\\) of its own"):
        definitions_for("telco")
    with pytest.raises(LocationError, match="cannot prefix asset keys"):
        definitions_for("tel-co")


MATERIALIZE = r"""
import json, sys
import dagster as dg
from churn_assets.locations import telco as defs
with dg.instance_for_test() as instance:
    result = defs.get_job_def("customers_features_drift").execute_in_process(instance=instance)
    print(json.dumps({
        "success": result.success,
        "materialized": sorted(
            e.asset_key.to_user_string() for e in result.get_asset_materialization_events()
        ),
        "checks": sorted(
            f"{c.asset_key.to_user_string()}:{c.check_name}:{c.passed}"
            for c in result.get_asset_check_evaluations()
        ),
    }))
"""


def test_a_data_set_location_writes_its_own_storage_folder(real_data: Path, tmp_path: Path):
    """telco's landing job in its own location: prefixed keys in the instance, the usual
    layout in storage (``<storage>/telco/assets/<asset>``), nothing in the default's folder."""
    storage = tmp_path / "storage"
    result = last_json(
        python(MATERIALIZE, CHURN_STORAGE_URL=str(storage), CHURN_REAL_DATA_DIR=str(real_data))
    )
    assert result["success"]
    assert {"telco/raw_customers", "telco/current_features", "telco/drift_report"} <= set(
        result["materialized"]
    )
    assert "telco/raw_customers:expectations_met:True" in result["checks"]
    assert (storage / "telco" / "assets" / "raw_customers.parquet").exists()
    assert (storage / "telco" / "assets" / "current_features.parquet").exists()
    assert not (storage / "telco" / "assets" / "telco").exists()
    assert not (storage / "synthetic").exists()


def test_churn_dev_adds_a_location_per_config_in_the_data_sets_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
):
    """Adding a data set is adding its YAML file (and restarting `churn dev`): the workspace
    `churn dev` loads is workspace.yaml plus a location for each new config, and every data
    set's retraining pool gets its limit of 1 before the daemon starts."""
    from churn_assets.devserver import pool_limits, prepare_workspace

    home = tmp_path / "home"
    home.mkdir()
    path, datasets = prepare_workspace(REPO, home)
    assert path == REPO / "workspace.yaml" and datasets == ["telco"]  # the repository's own

    own = tmp_path / "datasets"
    own.mkdir()
    text = (BUILTIN_DIR / "synthetic.yaml").read_text()
    (own / "shop_eu.yaml").write_text(text.replace("name: synthetic", "name: shop_eu"))
    (own / "synthetic.yaml").write_text(text)  # the default data set: already served
    (own / "telco.yaml").write_text((BUILTIN_DIR / "telco.yaml").read_text())  # listed
    (own / "subs.yml").write_text(text.replace("name: synthetic", "name: subs"))  # not read
    monkeypatch.setenv("CHURN_DATASETS_DIR", str(own))
    path, datasets = prepare_workspace(REPO, home)
    assert "subs.yml is not read: a data set config is <name>.yaml" in capsys.readouterr().out
    assert path == home / "workspace.yaml"
    assert datasets == ["telco", "shop_eu"]
    entries = [e["python_module"] for e in yaml.safe_load(path.read_text())["load_from"]]
    assert [e.get("attribute") for e in entries] == [None, "telco", "shop_eu"]
    assert entries[2]["location_name"] == "shop_eu"
    assert all(e["working_directory"] == str(REPO) for e in entries)
    assert pool_limits(datasets) == {
        "retraining": 1,
        "ingest": 1,
        "telco/retraining": 1,
        "telco/ingest": 1,
        "shop_eu/retraining": 1,
        "shop_eu/ingest": 1,
    }


def test_the_default_data_set_is_not_loaded_twice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
):
    """``CHURN_DATASET=telco``: the default location serves telco, so workspace.yaml's telco
    location is left out (both retrained telco at once, each in its own pool, into the same
    storage), and said."""
    from churn_assets.devserver import pool_limits, prepare_workspace

    monkeypatch.setenv("CHURN_DATASET", "telco")
    monkeypatch.delenv("CHURN_DATASETS_DIR", raising=False)
    path, datasets = prepare_workspace(REPO, tmp_path)
    assert path == tmp_path / "workspace.yaml" and datasets == []
    entries = [e["python_module"] for e in yaml.safe_load(path.read_text())["load_from"]]
    assert [e.get("attribute") for e in entries] == [None]  # the default location alone
    assert pool_limits(datasets) == {"retraining": 1, "ingest": 1}
    assert "its own location in workspace.yaml is left out" in capsys.readouterr().out


def test_churn_dev_keeps_an_instance_s_own_dagster_yaml(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
):
    """A DAGSTER_HOME whose dagster.yaml ``churn dev`` did not write (PostgreSQL storage, an
    instance's limits) was overwritten without a word: it is kept beside, and said; the
    copy ``churn dev`` wrote itself is replaced quietly."""
    from churn_assets.devserver import prepare_dagster_home

    home = tmp_path / "home"
    home.mkdir()
    own = "storage:\n  postgres: {}\n"
    (home / "dagster.yaml").write_text(own)
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    prepare_dagster_home(REPO)
    kept = list(home.glob("dagster.yaml.before-churn-dev-*"))
    assert len(kept) == 1 and kept[0].read_text() == own
    assert kept[0].name in capsys.readouterr().out
    assert (home / "dagster.yaml").read_text().endswith((REPO / "dagster.yaml").read_text())
    prepare_dagster_home(REPO)  # its own copy: replaced, nothing more kept
    assert len(list(home.glob("dagster.yaml.before-*"))) == 1
    assert capsys.readouterr().out == ""


def test_an_unknown_default_data_set_still_lists_the_others(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """A broken CHURN_DATASET is reported by its own location; `churn dev` still adds the
    folder's data sets."""
    from churn_assets.devserver import prepare_workspace

    own = tmp_path / "datasets"
    own.mkdir()
    (own / "shop_eu.yaml").write_text(
        (BUILTIN_DIR / "synthetic.yaml").read_text().replace("name: synthetic", "name: shop_eu")
    )
    monkeypatch.setenv("CHURN_DATASETS_DIR", str(own))
    monkeypatch.setenv("CHURN_DATASET", "does_not_exist")
    _, datasets = prepare_workspace(REPO, tmp_path)
    assert datasets == ["telco", "shop_eu"]
