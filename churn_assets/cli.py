"""The ``churn`` command-line tool: seed the landing zone, run the graph, benchmark, develop."""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import click


class _Group(click.Group):
    """The ``churn`` commands: a wrong setting (an unknown data set, an unreachable storage
    endpoint, a damaged deployment pointer) ends in one line naming it, not a traceback
    (``CHURN_DEBUG=1`` shows the traceback)."""

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except Exception as e:
            from churn_assets.lib.settings import env_flag

            hint = setting_hint(e, ctx.meta.get(DATASET_OPTION))
            if hint is None or env_flag("CHURN_DEBUG"):
                raise
            raise click.ClickException(hint) from e


#: Key of ``click.Context.meta`` (shared by a command's context and the group's) holding the
#: ``--dataset`` a command was given, which then is the setting an error names.
DATASET_OPTION = "churn.dataset_option"


def remember_dataset(ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    """``--dataset`` callback: keep the value for :func:`setting_hint`."""
    if value:
        ctx.meta[DATASET_OPTION] = value
    return value


def dataset_option(help_text: str = "Data set (default: CHURN_DATASET or synthetic).") -> Any:
    """The ``--dataset`` option, kept for :func:`setting_hint` (:func:`remember_dataset`)."""
    return click.option("--dataset", default=None, callback=remember_dataset, help=help_text)


def setting_hint(e: BaseException, given_dataset: str | None = None) -> str | None:
    """One line for an error a setting causes, naming the setting (``--dataset`` when the
    command was given one, else ``CHURN_DATASET``, for a data set config); None for others."""
    from pydantic import ValidationError

    from churn_assets.lib.datasets import DatasetConfigError
    from churn_assets.lib.deployment import DeploymentError
    from churn_assets.lib.settings import ENV_PREFIXES, SettingError, validation_message
    from churn_assets.lib.storage import access_refusal

    kind = type(e).__name__
    if kind in ("ServingSettingError", "TrackingUnavailableError") or isinstance(
        e, SettingError
    ):  # they name the setting
        return str(e)
    if isinstance(e, ValidationError) and e.title in ENV_PREFIXES:
        return validation_message(e)
    if isinstance(e, DatasetConfigError):
        if given_dataset:
            return f"{e} (--dataset {given_dataset})"
        return f"{e} (CHURN_DATASET={os.environ.get('CHURN_DATASET', 'synthetic')})"
    if isinstance(e, DeploymentError):
        return f"{e} (storage: CHURN_STORAGE_URL)"
    if kind == "NoCredentialsError" or (
        isinstance(e, ValueError) and str(e).startswith("Invalid endpoint")
    ):
        return (
            f"{kind}: {e}: the S3 storage cannot be reached as configured; set "
            f"CHURN_S3_ENDPOINT_URL ({os.environ.get('CHURN_S3_ENDPOINT_URL', 'unset')}) to a "
            "URL with its scheme (http://host:port) and AWS_ACCESS_KEY_ID / "
            "AWS_SECRET_ACCESS_KEY"
        )
    if isinstance(e, FileNotFoundError) and "bucket does not exist" in str(e):
        return (
            f"{e}: create the bucket, or fix CHURN_STORAGE_URL "
            f"({os.environ.get('CHURN_STORAGE_URL', 'unset')})"
        )
    refusal = access_refusal(e)
    if refusal is not None:  # before the local folders' PermissionError below
        return f"{kind}: {e}: {refusal} (CHURN_STORAGE_URL={os.environ.get('CHURN_STORAGE_URL')})"
    if kind in ("EndpointConnectionError", "ConnectTimeoutError", "ReadTimeoutError"):
        return (
            f"{kind}: {e}: the storage is unreachable or refuses the credentials; check "
            f"CHURN_STORAGE_URL ({os.environ.get('CHURN_STORAGE_URL', 'unset')}), "
            f"CHURN_S3_ENDPOINT_URL ({os.environ.get('CHURN_S3_ENDPOINT_URL', 'unset')}) "
            "and AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY"
        )
    if isinstance(e, NotADirectoryError | PermissionError | FileExistsError | IsADirectoryError):
        where = ", ".join(
            f"{name}={os.environ[name]}"
            for name in ("CHURN_STORAGE_URL", "CHURN_LANDING_URL", "DAGSTER_HOME")
            if os.environ.get(name)
        )
        return (
            f"{kind}: {e}: a folder of the platform cannot be created or written there; "
            f"check the paths it is given ({where or 'the defaults under .churn/'})"
        )
    return None


def json_text(obj: Any) -> str:
    """``obj`` as one line of strict JSON: NaN and infinities (a metric that was not
    computed) become null, which every JSON parser reads; other values as ``str``."""

    def clean(v: Any) -> Any:
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        if isinstance(v, list | tuple):
            return [clean(x) for x in v]
        if isinstance(v, float) and not math.isfinite(v):
            return None
        return v

    return json.dumps(clean(obj), default=str, allow_nan=False)


@click.group(cls=_Group)
def main() -> None:
    """Churn platform: a Dagster asset graph for customer churn."""


def _landing(dataset: str = "synthetic"):
    from churn_assets.lib.settings import get_settings, join_url

    s = get_settings()
    url = join_url(s.resolved_landing_url, dataset)
    return url, s.storage_options(url)


def landing_has_data(url: str, storage_options: dict) -> bool:
    """True when the landing zone folder already holds customer files."""
    import fsspec

    fs, path = fsspec.core.url_to_fs(url, **storage_options)
    return fs.exists(f"{path}/customers") and bool(fs.ls(f"{path}/customers"))


@main.command()
@click.option("--customers", default=10_000, show_default=True, help="Number of customers.")
@click.option("--days", default=540, show_default=True, help="Days of history.")
@click.option("--seed", default=42, show_default=True, help="Random seed (deterministic).")
@click.option(
    "--format", "fmt", type=click.Choice(["parquet", "csv"]), default="parquet", show_default=True
)
@click.option("--drift", is_flag=True, help="Write a drifted recent batch beside the data.")
@click.option("--if-empty", is_flag=True, help="Do nothing when the landing zone has data.")
@click.option("--force", is_flag=True, help="Replace existing synthetic landing data.")
@click.option(
    "--hold-back-days",
    type=click.IntRange(min=1),
    default=None,
    help="Land the history without its last N days (kept aside under the storage's "
    "held-back/ folder); `churn seed --land-held-back` lands them later, so the scores made "
    "at the earlier cut-off meet their outcomes (realized_performance).",
)
@click.option(
    "--land-held-back",
    is_flag=True,
    help="Land the days a previous `--hold-back-days` kept aside, as a new batch.",
)
@click.pass_context
def seed(
    ctx: click.Context,
    customers: int,
    days: int,
    seed: int,
    fmt: str,
    drift: bool,
    if_empty: bool,
    force: bool,
    hold_back_days: int | None,
    land_held_back: bool,
) -> None:
    """Write synthetic raw files into the landing zone (data set ``synthetic``). A drift
    batch (``--drift``) extends the data there: it takes the --customers, --days and --seed
    the data was written with, and refuses other values."""
    import fsspec

    from churn_assets.lib.generator import generate

    url, opts = _landing("synthetic")
    if land_held_back:
        _land_held_back(url, opts)
        return
    if hold_back_days is not None and (drift or fmt != "parquet"):
        raise click.UsageError("--hold-back-days writes parquet history: not with --drift/--format")
    has = landing_has_data(url, opts)
    if has and if_empty and not drift:
        click.echo(f"landing zone {url} already has data: nothing to do")
        return
    if has and not (force or drift):
        raise click.ClickException(
            f"landing zone {url} already has data: use --force to replace it or --drift to "
            "add a drifted batch"
        )
    if force and has:
        fs, path = fsspec.core.url_to_fs(url, **opts)
        fs.rm(path, recursive=True)
    if hold_back_days is not None:
        _seed_holding_back(url, opts, customers, days, seed, hold_back_days)
        _record_base(url, opts, customers, days, seed)
        return
    batch, claim = "batch-0000", None
    if drift:
        from churn_assets.lib.batch_names import claim_drift_batch, release_claim

        customers, days, seed = _as_the_base(ctx, url, opts, customers, days, seed)
        fs, path = fsspec.core.url_to_fs(url, **opts)
        batch, claim = claim_drift_batch(fs, path)  # never a name another batch has
    try:
        summary = generate(
            url,
            customers=customers,
            days=days,
            seed=seed,
            fmt=fmt,
            drift=drift,
            storage_options=opts,
            batch_name=batch,
        )
    finally:
        if claim is not None:
            release_claim(fs, claim)
    if not drift:
        _record_base(url, opts, customers, days, seed)
    click.echo(
        f"wrote {summary.customers:,} customers and {summary.transactions:,} transactions "
        f"({summary.start} to {summary.end}, seed {summary.seed}{', drifted' if drift else ''}) "
        f"to {url}" + (f" as batch {batch}" if drift else "")
    )


#: What the synthetic base data was generated with, beside it in the landing zone (a dot
#: name: the landing sensor and ingestion leave it out).
BASE_PARAMETERS = ".seeded-with.json"


def _record_base(url: str, opts: dict, customers: int, days: int, seed: int) -> None:
    """Write the parameters of the base data beside it, for later drift batches."""
    import json

    import fsspec

    with fsspec.open(f"{url.rstrip('/')}/{BASE_PARAMETERS}", "w", **opts) as f:
        json.dump({"customers": customers, "days": days, "seed": seed}, f)


def _as_the_base(
    ctx: click.Context, url: str, opts: dict, customers: int, days: int, seed: int
) -> tuple[int, int, int]:
    """--customers, --days and --seed for a drift batch: those of the base data (a drift
    batch needs them: another seed revives churned customers, other counts add customers
    nobody landed), refusing values given that differ. Unknown base (written before the
    parameters were recorded): the values given."""
    import json

    import fsspec

    try:
        with fsspec.open(f"{url.rstrip('/')}/{BASE_PARAMETERS}", "r", **opts) as f:
            base = json.load(f)
    except (FileNotFoundError, ValueError):
        return customers, days, seed
    given = {"customers": customers, "days": days, "seed": seed}
    clash = [
        name
        for name, value in given.items()
        if ctx.get_parameter_source(name) != click.core.ParameterSource.DEFAULT
        and value != base.get(name, value)
    ]
    if clash:
        wrote = " ".join(f"--{k} {base[k]}" for k in ("customers", "days", "seed") if k in base)
        raise click.UsageError(
            f"the data in {url} was written with {wrote}: a drift batch extends it and needs "
            f"the same values (leave out {', '.join('--' + c for c in clash)} to take them)"
        )
    return tuple(base.get(k, v) for k, v in given.items())  # type: ignore[return-value]


def _held_back_url() -> tuple[str, dict]:
    from churn_assets.lib.settings import get_settings, join_url

    s = get_settings()
    url = join_url(s.resolved_storage_url, "held-back/synthetic")
    return url, s.storage_options(url)


def _seed_holding_back(
    url: str, opts: dict, customers: int, days: int, seed: int, hold_back: int
) -> None:
    """Generate a history aside, land it up to ``end - hold_back`` days, keep the rest."""
    import json

    import fsspec

    from churn_assets.lib.realized import land_history_holding_back

    if hold_back >= days:
        raise click.BadParameter(f"must be below --days ({days})", param_hint="--hold-back-days")
    stage, stage_opts = _held_back_url()
    fs, path = fsspec.core.url_to_fs(stage, **stage_opts)
    if fs.exists(path):
        fs.rm(path, recursive=True)
    summary, cutoff, landed = land_history_holding_back(
        stage,
        url,
        customers=customers,
        days=days,
        seed=seed,
        hold_back_days=hold_back,
        stage_options=stage_opts,
        storage_options=opts,
    )
    with fs.open(f"{path}/held-back.json", "w") as f:
        json.dump({"cutoff": cutoff.isoformat(), "end": summary.end.isoformat()}, f)
    click.echo(
        f"landed {landed['customers']:,} customers and {landed['transactions']:,} transactions "
        f"({summary.start} to {cutoff}) to {url}; the last {hold_back} days (to {summary.end}) "
        f"are held back under {stage}: `churn seed --land-held-back` lands them"
    )


def _land_held_back(url: str, opts: dict) -> None:
    """Land what ``--hold-back-days`` kept aside, as batch ``batch-0001``, then drop it."""
    import datetime as dt
    import json

    import fsspec

    from churn_assets.lib.realized import land_window

    stage, stage_opts = _held_back_url()
    fs, path = fsspec.core.url_to_fs(stage, **stage_opts)
    if not fs.exists(f"{path}/held-back.json"):
        raise click.ClickException(
            f"nothing is held back under {stage}: run `churn seed --hold-back-days N` first"
        )
    with fs.open(f"{path}/held-back.json") as f:
        info = json.load(f)
    cutoff = dt.date.fromisoformat(info["cutoff"])
    landed = land_window(stage, url, start=cutoff, batch_name="batch-0001", storage_options=opts)
    fs.rm(path, recursive=True)
    click.echo(
        f"landed the held-back {landed['transactions']:,} transactions ({cutoff} to "
        f"{info['end']}) and {landed['customers']:,} customers to {url}"
    )


@main.command()
@dataset_option("Built-in data set name or YAML config path.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option(
    "--seed-if-empty/--no-seed",
    default=True,
    show_default=True,
    help="Seed the synthetic landing zone first when it is empty.",
)
def demo(dataset: str | None, as_json: bool, seed_if_empty: bool) -> None:
    """Materialize the whole asset graph in-process once and print a summary."""
    from churn_assets.demo import run_demo

    given_dataset = dataset
    dataset = dataset or os.environ.get("CHURN_DATASET") or "synthetic"
    try:
        report = run_demo(dataset, seed_if_empty=seed_if_empty, log=None if as_json else click.echo)
    except Exception as e:  # noqa: BLE001 - before any run (config, landing files): say why
        from churn_assets.lib.storage import with_refusal

        said = with_refusal(f"{type(e).__name__}: {e}", e)
        if not as_json:
            from churn_assets.lib.settings import env_flag

            if env_flag("CHURN_DEBUG"):
                raise
            raise click.ClickException(setting_hint(e, given_dataset) or said) from e
        error = {"dataset": dataset, "success": False, "error": said}
        click.echo(json_text(error))
        sys.exit(1)
    if as_json:
        click.echo(json_text(report))
    else:
        from churn_assets.demo import format_report

        click.echo(format_report(report))
    if not report["success"]:
        sys.exit(1)


@main.command("draft-config")
@click.argument("file", type=click.Path())
@click.option("--label", default=None, help="Churn label column (a snapshot table).")
@click.option("--value", default=None, help="Value label column (snapshot; optional).")
@click.option(
    "--labels-file",
    default=None,
    type=click.Path(dir_okay=False),
    help="A file of its own holding --label (and --value), joined by customer id.",
)
@click.option(
    "--transactions",
    "transactions_file",
    default=None,
    type=click.Path(dir_okay=False),
    help="Transactions of the snapshot's customers (with --label and --timestamp): their "
    "behaviour becomes features.",
)
@click.option("--id", "id_column", default=None, help="Customer id column (default: by name).")
@click.option("--timestamp", default=None, help="Timestamp column (a table of transactions).")
@click.option(
    "--timestamp-format",
    default=None,
    help="strptime format of --timestamp when no common one reads it ('%d %b %Y %H:%M').",
)
@click.option("--amount", default=None, help="Amount column (transactions; default: by name).")
@click.option("--quantity", default=None, help="Quantity column (with --price).")
@click.option("--price", "unit_price", default=None, help="Unit price column (with --quantity).")
@click.option("--invoice", default=None, help="Invoice id column (default: by name).")
@click.option(
    "--name", default=None, help="Data set name (default: --out's file name, else the data's)."
)
@click.option("--out", default=None, type=click.Path(dir_okay=False), help="Write it here.")
def draft_config_command(
    file: str,
    label: str | None,
    value: str | None,
    labels_file: str | None,
    transactions_file: str | None,
    id_column: str | None,
    timestamp: str | None,
    timestamp_format: str | None,
    amount: str | None,
    quantity: str | None,
    unit_price: str | None,
    invoice: str | None,
    name: str | None,
    out: str | None,
) -> None:
    """Draft a data set config (YAML) for a CSV, Parquet or spreadsheet FILE (compressed or
    not): a snapshot with a churn column (--label, in FILE or in --labels-file; its
    customers' payments or events in --transactions) or transactions (--timestamp). Column
    types, separator, encoding, decimal comma and timestamp format come from the data;
    every choice is commented."""
    from churn_assets.lib.config_draft import DraftError, draft_config
    from churn_assets.lib.datasets import DatasetConfigError

    if name is None and out is not None and re.fullmatch(r"[A-Za-z0-9_]+", Path(out).stem):
        name = Path(out).stem  # CHURN_DATASETS_DIR finds a config by its file's name
    try:
        text = draft_config(
            file,
            name=name,
            label=label,
            value=value,
            labels_file=labels_file,
            transactions_file=transactions_file,
            id_column=id_column,
            timestamp=timestamp,
            timestamp_format=timestamp_format,
            amount=amount,
            quantity=quantity,
            unit_price=unit_price,
            invoice=invoice,
        )
    except (DraftError, DatasetConfigError) as e:
        raise click.ClickException(str(e)) from None
    if out is None:
        click.echo(text, nl=False)
        return
    Path(out).write_text(text)
    click.echo(f"wrote {out}; check it, then: churn demo --dataset {out}", err=True)


def _deployment_storage(dataset: str | None):
    from churn_assets.lib.datasets import load_dataset_config
    from churn_assets.lib.settings import ChurnSettings, join_url
    from churn_assets.lib.storage import Storage

    settings = ChurnSettings(**({"dataset": dataset} if dataset else {}))
    name = load_dataset_config(settings.dataset).name
    return (
        settings,
        name,
        Storage(join_url(settings.resolved_storage_url, name), settings.storage_options()),
    )


@main.command()
@dataset_option()
@click.option("--json", "as_json", is_flag=True, help="Print one JSON list.")
def versions(dataset: str | None, as_json: bool) -> None:
    """List the stored model versions, newest first: which is deployed, pinned, and where a
    plain `churn rollback` goes, with each version's churn and value models."""
    import json

    from churn_assets.lib.deployment import version_rows

    _, name, storage = _deployment_storage(dataset)
    rows = version_rows(storage)
    if as_json:
        click.echo(json.dumps(rows, indent=2, default=str))
        return
    if not rows:
        click.echo(f"no model version is stored for data set '{name}' yet")
        return

    def model(row: dict, role: str, metric: str, fmt: str) -> str:
        if row[f"{role}_model"] is None:
            return "-"
        figure = row[metric]
        said = f"{row[f'{role}_model']} {format(figure, fmt) if figure is not None else ''}"
        kept = row[f"{role}_from"]
        return said.strip() + (f" (from {kept})" if kept and kept != row["version"] else "")

    for row in rows:
        if "problem" in row:
            click.echo(f"  {row['version']}  cannot be read: {row['problem']}")
            continue
        marks = [
            m
            for m, on in (
                ("deployed", row["deployed"]),
                ("pinned", row["pinned"]),
                ("rollback target", row["rollback_target"]),
                ("never deployed", row["never_deployed"]),
            )
            if on
        ]
        click.echo(
            f"{'*' if row['deployed'] else ' '} {row['version']}  "
            f"{str(row['created_at'] or '')[:19]}  "
            f"churn: {model(row, 'churn', 'churn_roc_auc', '.4f')}  "
            f"value: {model(row, 'value', 'value_r2_gain_vs_naive', '+.4f')}"
            + (f"  [{', '.join(marks)}]" if marks else "")
        )


@main.command()
@dataset_option()
def unpin(dataset: str | None) -> None:
    """Turn automatic promotion back on after a rollback (the deployed version stays)."""
    from churn_assets.lib.deployment import DeploymentError
    from churn_assets.lib.deployment import unpin as unpin_pointer

    _, _, storage = _deployment_storage(dataset)
    try:
        pointer = unpin_pointer(storage)
    except DeploymentError as e:
        raise click.ClickException(str(e)) from e
    click.echo(f"{pointer['version']} stays deployed; automatic promotion is on")


@main.command()
@click.option("--to", "to", default=None, help="Version to deploy (default: the previous one).")
@dataset_option()
@click.option("--no-pin", is_flag=True, help="Leave automatic promotion on.")
def rollback(to: str | None, dataset: str | None, no_pin: bool) -> None:
    """Move the deployed model version (pointer and MLflow aliases) back and pin it:
    automatic promotion stays off until `churn unpin`."""
    from churn_assets.lib.deployment import DeploymentError
    from churn_assets.lib.rollback import aliases_problem, rollback_deployment

    settings, name, storage = _deployment_storage(dataset)
    try:
        pointer = rollback_deployment(storage, settings, name, to, pin=not no_pin)
    except DeploymentError as e:
        raise click.ClickException(str(e)) from e
    problem = aliases_problem(pointer)
    if problem:
        raise click.ClickException(problem)
    pinned = "pinned until `churn unpin`" if pointer.get("pinned") else "not pinned"
    now = "is already" if pointer.get("already_deployed") else "is now"
    click.echo(
        f"deployed version {now} {pointer['version']} "
        f"(MLflow aliases {pointer['mlflow_aliases']}; {pinned})"
    )


@main.command()
@dataset_option()
@click.option("--seeds", default=10, show_default=True, help="Number of split seeds (0, 1, ...).")
@click.option(
    "--kind",
    "kinds",
    type=click.Choice(["classification", "regression"]),
    multiple=True,
    help="Model set(s) to evaluate (default: both).",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def evaluate(dataset: str | None, seeds: int, kinds: tuple[str, ...], as_json: bool) -> None:
    """Repeated holdout: retrain the model sets over several split seeds and report the
    spread of their holdout metrics. Reads the materialized raw tables and
    customer_features of the data set (run `churn demo` or materialize them first)."""
    from churn_assets.lib.datasets import load_dataset_config
    from churn_assets.lib.feature_sets import usable
    from churn_assets.lib.repeated_holdout import KINDS, format_report, repeated_holdout
    from churn_assets.lib.settings import ChurnSettings, join_url
    from churn_assets.lib.storage import Storage

    if seeds < 1:
        raise click.BadParameter("must be at least 1", param_hint="--seeds")
    settings = ChurnSettings(**({"dataset": dataset} if dataset else {}))
    cfg = load_dataset_config(settings.dataset)
    storage = Storage(join_url(settings.resolved_storage_url, cfg.name), settings.storage_options())
    tables = {}
    for name in ("customer_features", "raw_customers", "raw_transactions"):
        table = storage.read_asset(name)
        if table is None and (name != "raw_transactions" or cfg.transactions is not None):
            raise click.ClickException(
                f"{name} of data set '{cfg.name}' is not materialized under "
                f"{storage.url('assets')}: run `churn demo --dataset {cfg.name}` (or "
                "materialize it in the Dagster UI) first"
            )
        tables[name], _ = usable(table)
    report = repeated_holdout(
        cfg,
        tables["customer_features"],
        tables["raw_customers"] if cfg.customers is not None else None,
        tables["raw_transactions"] if cfg.transactions is not None else None,
        seeds=list(range(seeds)),
        kinds=list(kinds) or list(KINDS),
        log=None if as_json else click.echo,
    )
    click.echo(json_text(report) if as_json else format_report(report))


@main.group()
def bench() -> None:
    """Benchmarks (ratios against a reference measured in the same run)."""


@bench.command("features")
@click.option("--transactions", default=10_000_000, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@click.option("--skip-pandas", is_flag=True, help="Measure polars only.")
def bench_features(transactions: int, as_json: bool, skip_pandas: bool) -> None:
    """customer_features (polars) vs a straightforward pandas groupby, same data."""
    from benchmarks.features import run

    result = run(transactions=transactions, with_pandas=not skip_pandas)
    click.echo(json.dumps(result, indent=None if as_json else 2))


@bench.command("drift")
@click.option("--rows", default=1_000_000, show_default=True)
@click.option("--json", "as_json", is_flag=True)
def bench_drift(rows: int, as_json: bool) -> None:
    """Drift (polars PSI / L1 / JS) vs Evidently's DataDriftPreset on the same data."""
    from benchmarks.drift import run

    click.echo(json.dumps(run(rows=rows), indent=None if as_json else 2))


@bench.command("serving")
@click.option("--json", "as_json", is_flag=True)
@click.option("--seconds", default=10.0, show_default=True, help="Per load phase.")
def bench_serving(as_json: bool, seconds: float) -> None:
    """The sidecar vs `mlflow models serve` on the same champion, loopback only."""
    from benchmarks.serving import run

    click.echo(json.dumps(run(seconds=seconds), indent=None if as_json else 2))


@bench.command("training")
@click.option(
    "--customers",
    default=10_000,
    show_default=True,
    type=click.IntRange(min=100),
    help="Synthetic customers (at least 100).",
)
@click.option(
    "--training-set",
    default=None,
    type=click.Path(exists=True, dir_okay=False, readable=True),
    help="Use this training_set.parquet instead (e.g. the training_set of an earlier run).",
)
@click.option(
    "--procedure",
    "procedures",
    type=click.Choice(["staged", "exhaustive"]),
    multiple=True,
    help="Procedure(s) to run (default: both, side by side).",
)
@click.option("--json", "as_json", is_flag=True)
def bench_training(
    customers: int, training_set: str | None, procedures: tuple[str, ...], as_json: bool
) -> None:
    """Model-set training: the staged procedure vs the exhaustive one on the same data
    (wall, CPU, peak RSS, per-phase and per-candidate seconds, champion holdout metrics)."""
    from benchmarks.training import PROCEDURES, run

    report = run(customers, training_set=training_set, procedures=procedures or PROCEDURES)
    click.echo(json.dumps(report, indent=None if as_json else 2, default=float))


@bench.command("ingest")
@click.option(
    "--customers",
    default=210_000,
    show_default=True,
    help="Synthetic customers of the history (210,000: ~10.4M transaction lines).",
)
@click.option("--no-full-reference", is_flag=True, help="Skip the full-rebuild reference row.")
@click.option("--json", "as_json", is_flag=True)
def bench_ingest(customers: int, no_full_reference: bool, as_json: bool) -> None:
    """A new 50,000-line hourly file on a long history: ingestion and current features,
    incrementally, against the same file into an empty history (ratio) and a full rebuild."""
    from benchmarks.ingest import run

    report = run(customers, full_reference=not no_full_reference)
    click.echo(json.dumps(report, indent=None if as_json else 2, default=float))


def _dagster_home() -> Path:
    return Path(os.environ.get("DAGSTER_HOME") or Path(".churn") / "dagster_home").resolve()


def _workspace_file(home: Path) -> Path:
    """The workspace of the instance at ``home``: the one ``churn dev`` writes there (with
    CHURN_DATASETS_DIR), the repository's ``./workspace.yaml``, or the one beside ``home``
    (the compose image: /opt/dagster/workspace.yaml beside /opt/dagster/home)."""
    candidates = [home / "workspace.yaml", Path("workspace.yaml"), home.parent / "workspace.yaml"]
    for path in candidates:
        if path.exists():
            return path
    raise click.ClickException(
        f"no workspace.yaml found (looked at {', '.join(str(c) for c in candidates)}): "
        "pass --workspace with the instance's workspace file"
    )


@main.command()
@click.option("--since", required=True, type=click.DateTime(["%Y-%m-%d"]), help="First day.")
@click.option("--until", required=True, type=click.DateTime(["%Y-%m-%d"]), help="Last day.")
@dataset_option()
@click.option(
    "--job",
    default="ingest_features_drift",
    show_default=True,
    help="Job run for each file (transactions_features_drift skips the customer table).",
)
@click.option(
    "--workspace",
    default=None,
    type=click.Path(exists=True, dir_okay=False),
    help="The instance's workspace.yaml (default: $DAGSTER_HOME/workspace.yaml, "
    "./workspace.yaml, then the one beside $DAGSTER_HOME, as in the compose image).",
)
@click.option("--dry-run", is_flag=True, help="List the files; launch nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def backfill(
    since: dt.datetime,
    until: dt.datetime,
    dataset: str | None,
    job: str,
    workspace: str | None,
    dry_run: bool,
    as_json: bool,
) -> None:
    """Re-ingest a date range: one queued run of JOB per landing file with a line from SINCE to
    UNTIL (inclusive), through `dagster job backfill` on the running instance (DAGSTER_HOME);
    the daemon runs them one after the other (pool `ingest`)."""
    import subprocess

    from churn_assets.lib.backfill import files_between
    from churn_assets.lib.datasets import load_dataset_config
    from churn_assets.lib.settings import ChurnSettings, join_url

    settings, name, storage = _deployment_storage(dataset)
    if load_dataset_config(settings.dataset).transactions is None:
        raise click.ClickException(
            f"data set {name} has no transaction files (a snapshot): nothing to re-ingest by "
            "date; materialize raw_customers (the UI, or `dagster asset materialize`) to read "
            "its table again"
        )
    try:
        files = files_between(storage, since.date(), until.date())
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--until") from e
    # a partition whose file has left the landing zone (removed, or moved to quarantine by
    # its checks) cannot be ingested again: named, not launched to fail
    from churn_assets.lib.ingest import transaction_files

    landed = transaction_files(
        load_dataset_config(settings.dataset),
        join_url(settings.resolved_landing_url, name),
        settings.storage_options(settings.resolved_landing_url),
    )
    gone = [f.key for f in files if f.key not in landed]
    files = [f for f in files if f.key in landed]
    default = load_dataset_config(ChurnSettings().dataset).name
    location = "churn_assets" if name == default else name
    home = _dagster_home()
    report = {
        "dataset": name,
        "location": location,
        "job": job,
        "since": str(since.date()),
        "until": str(until.date()),
        "files": [
            {"key": f.key, "first": str(f.first), "last": str(f.last), "lines": f.lines}
            for f in files
        ],
        "not_in_landing_zone": gone,
        "launched": False,
    }
    if not files:
        message = f"no ingested file of {name} has a line from {since.date()} to {until.date()}"
        if gone:
            message += f" and is still in the landing zone (gone: {', '.join(gone[:10])})"
        if as_json:
            click.echo(json.dumps(report | {"message": message}))
        raise click.ClickException(message)
    if not dry_run:
        workspace_file = Path(workspace) if workspace else _workspace_file(home)
        cmd = [
            str(Path(sys.executable).parent / "dagster"),
            *("job", "backfill", "-w", str(workspace_file), "-l", location, "-j", job),
            *("--partitions", ",".join(f.key for f in files), "--noprompt"),
        ]
        env = {**os.environ, "DAGSTER_HOME": str(home)}
        out = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if out.returncode != 0:
            raise click.ClickException(
                f"dagster job backfill failed ({out.returncode}): "
                f"{(out.stderr or out.stdout).strip()[-2000:]}"
            )
        report["launched"] = True
        report["backfill"] = out.stdout.strip()[-500:]
    if as_json:
        click.echo(json.dumps(report))
        return
    for f in files:
        click.echo(f"{f.key}: {f.lines:,} lines, {f.first} to {f.last}")
    if gone:
        click.echo(
            f"left out, no longer in the landing zone (removed, or in quarantine): "
            f"{', '.join(gone)}; their ingested lines stay as they are"
        )
    verb = "queued" if not dry_run else "would queue"
    click.echo(f"{verb} {len(files)} run(s) of {job} in location {location}")


@main.command("remove-file")
@click.argument("keys", nargs=-1, required=True)
@dataset_option()
def remove_file(keys: tuple[str, ...], dataset: str | None) -> None:
    """Take back the lines of ingested transaction files (KEYS: their raw_transactions
    partitions, e.g. 2011-03.csv): their stored lines and their partitions in the Dagster
    instance (DAGSTER_HOME) are deleted, so the next landing run (or current_features
    materialized in the UI) rebuilds the features without them, with no warning about a
    partition missing. The landing file itself is left where it is."""
    import dagster as dg

    from churn_assets import scope
    from churn_assets.lib.datasets import load_dataset_config
    from churn_assets.lib.ingest import transaction_files
    from churn_assets.lib.landed_sources import forget_source
    from churn_assets.lib.settings import join_url

    settings, name, storage = _deployment_storage(dataset)
    cfg = load_dataset_config(settings.dataset)
    if cfg.transactions is None:
        raise click.ClickException(f"data set {name} has no transaction files (a snapshot)")
    home = _dagster_home()
    if not (home / "dagster.yaml").exists():
        raise click.ClickException(
            f"no Dagster instance at {home} (DAGSTER_HOME): run this where the platform runs, "
            "with its DAGSTER_HOME"
        )
    os.environ["DAGSTER_HOME"] = str(home)
    instance = dg.DagsterInstance.get()
    # a data set of a location of its own has its partitions under its name; the one the
    # default location serves (CHURN_DATASET where the platform runs), plain
    partitions = scope.partitions_name("transaction_files", prefix=name)
    if not instance.get_dynamic_partitions(partitions):
        partitions = scope.partitions_name("transaction_files", prefix=None)
    known = set(instance.get_dynamic_partitions(partitions))
    rel = {k: f"assets/raw_transactions/{k}.parquet" for k in keys}
    unknown = [k for k in keys if k not in known and not storage.exists(rel[k])]
    if unknown:
        listed = ", ".join(sorted(known)[:10]) or "none"
        raise click.ClickException(
            f"no ingested transaction file {', '.join(map(repr, unknown))} in data set {name} "
            f"(its files: {listed}{' ...' if len(known) > 10 else ''}); nothing was removed"
        )
    from churn_assets.partitions import runs_ingesting

    busy = runs_ingesting(instance, list(keys), name)
    if busy:  # deleted underneath, the run fails ("partition range … is not valid")
        said = "; ".join(
            f"{k}: run {r.run_id[:8]} ({r.job_name}, {r.status.value.lower()})"
            for k, r in busy.items()
        )
        raise click.ClickException(
            f"a run is ingesting {', '.join(map(repr, busy))} now ({said}): removing the file "
            "underneath would fail it. Run this again once the run has ended (or terminate "
            "it in the UI first); nothing was removed"
        )
    landed = transaction_files(
        cfg,
        join_url(settings.resolved_landing_url, name),
        settings.storage_options(settings.resolved_landing_url),
    )
    for key in keys:
        lines = 0
        if storage.exists(rel[key]):
            lines = storage.read_parquet(rel[key], columns=["_quarantined"]).height
            storage.delete(rel[key])
        forget_source(storage, key)
        if key in known:
            instance.delete_dynamic_partition(partitions, key)
        click.echo(
            f"removed {key} ({lines:,} stored line(s))"
            + (
                "; its landing file is still in the landing zone: a new version of it would "
                "be ingested again"
                if key in landed
                else ""
            )
        )
    click.echo(
        "the next landing run, or materializing current_features in the UI, rebuilds the "
        "features without them"
    )


@main.command()
@click.option("--host", default=None, help="Bind address (default CHURN_SERVING_HOST).")
@click.option("--port", default=None, type=int, help="Port (default CHURN_SERVING_PORT).")
def serve(host: str | None, port: int | None) -> None:
    """Start the HTTP prediction sidecar (uvicorn) on the deployed model version."""
    from churn_serving.server import run

    run(host=host, port=port)


@main.command()
@click.option("--port", default=3000, show_default=True)
@click.option("--no-seed", is_flag=True, help="Do not seed an empty landing zone.")
def dev(port: int, no_seed: bool) -> None:
    """Start the platform: Dagster UI + daemon (``dagster dev``); Ctrl-C stops everything."""
    from churn_assets.devserver import run_dev

    if not no_seed:
        url, opts = _landing("synthetic")
        if not landing_has_data(url, opts):
            click.echo(f"seeding the landing zone {url} with synthetic data ...")
            # in a process of its own: this one supervises the platform for as long as it
            # runs, and the generator's libraries and tables would stay in it (~250 MB)
            done = subprocess.run([sys.executable, "-m", "churn_assets.cli", "seed", "--if-empty"])
            if done.returncode != 0:
                sys.exit(done.returncode)
    sys.exit(run_dev(port=port))


@main.command(
    "fail-interrupted-runs",
    context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False},
)
@click.option("--location", default=None, help="Only the runs of this code location.")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
def fail_interrupted(location: str | None, command: tuple[str, ...]) -> None:
    """Mark failed the runs the Dagster instance still shows in progress (of one code
    location with --location): run it when the processes that executed them are gone, as
    the code server that ran them starts. Then, given ``-- COMMAND ...``, become COMMAND:
    compose's code-location runs ``churn fail-interrupted-runs --location churn_assets --
    dagster code-server start ...``. An instance that cannot be reached is reported and
    COMMAND still starts."""
    from churn_assets.interrupted_runs import fail_interrupted_runs, say_failed

    when = (
        f"the code server of {location!r} started again"
        if location
        else "`churn fail-interrupted-runs` was run"
    )
    try:
        say_failed(fail_interrupted_runs(location, when=when))
    except Exception as e:
        if not command:
            raise
        from churn_assets.retries import describe

        # the root cause: dagster-postgres says only "too many retries for DB connection"
        # where PostgreSQL said "password authentication failed" or "Connection refused"
        why = " ".join(describe(e).split())
        click.echo(f"runs left in progress not checked ({why}); starting anyway", err=True)
    if command:
        sys.stdout.flush()
        os.execvp(command[0], list(command))


if __name__ == "__main__":
    main()
