"""The Dagster UI in a real browser (Debian's chromium driven by Playwright), against the
shared `churn dev` of ``conftest.py`` once it has deployed its first version: the lineage
shows every asset group, `drift_report` materializes from its asset page and the run
succeeds, and `classification_models` shows its leaderboard and the champion's metrics."""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator

import pytest

from tests.integration.conftest import Deployed, DevPlatform

pytestmark = [pytest.mark.integration, pytest.mark.browser]

CHROMIUM = shutil.which("chromium")
NEWSLETTER = "Join the Dagster community"
GROUPS = "{ assetNodes { groupName } }"
RUNS = "{ runsOrError { ... on Runs { results { runId status assetSelection { path } } } } }"


def metadata_value(table, key: str) -> str:
    """The value the asset page's metadata table shows for ``key`` (a row is key | timestamp
    | value; the row is matched by its first cell, not by a nested table's column header)."""
    row = table.locator(f"xpath=.//tr[normalize-space(td[1])='{key}']")
    return row.locator("xpath=./td[last()]").inner_text().strip()


@pytest.fixture(scope="module")
def browser() -> Iterator:
    if CHROMIUM is None:
        pytest.skip("Debian's chromium is not installed (make test installs it when root)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        # --no-sandbox: chromium refuses its sandbox when run as root (CI containers)
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield b
        b.close()


@pytest.fixture
def page(browser, deployed_dev: Deployed) -> Iterator:
    from playwright.sync_api import expect

    assert deployed_dev.bootstrap_status == "SUCCESS", deployed_dev.dev.tail()
    context = browser.new_context(
        base_url=deployed_dev.dev.url, viewport={"width": 1600, "height": 1000}
    )
    page = context.new_page()
    page.set_default_timeout(60_000)
    expect.set_options(timeout=60_000)  # a busy 2-core machine renders slowly
    # Dagster's newsletter dialog covers the page on an instance that has never dismissed
    # it; dismiss it whenever it shows up (our dagster.yaml turns it off, see below)
    page.add_locator_handler(
        page.get_by_role("dialog").filter(has_text=NEWSLETTER),
        lambda dialog: dialog.get_by_role("button", name="Skip").click(),
    )
    yield page
    context.close()


def test_fresh_instance_shows_no_newsletter_dialog(platform_dev: DevPlatform):
    """The instance `churn dev` prepares from dagster.yaml sets ``nux.enabled: false``, so
    the UI of a fresh `make dev` is told not to open the newsletter dialog."""
    assert platform_dev.query("{ shouldShowNux }") == {"shouldShowNux": False}


@pytest.mark.timeout(2400)
def test_lineage_shows_every_group(page, deployed_dev: Deployed):
    """Timeout 2400 s: see above."""
    from playwright.sync_api import expect

    groups = {n["groupName"] for n in deployed_dev.dev.query(GROUPS)["assetNodes"]}
    assert groups == {"raw", "features", "models", "deployment", "monitoring"}
    page.goto("/asset-groups")
    expect(page.get_by_text("Global asset lineage")).to_be_visible()
    for group in sorted(groups):
        expect(page.get_by_text(group, exact=True).first).to_be_visible()


@pytest.mark.timeout(2400)
def test_materialize_drift_report_from_its_page(page, deployed_dev: Deployed):
    """Timeout 2400 s: see above."""
    from playwright.sync_api import expect

    dev = deployed_dev.dev
    before = {r["runId"] for r in dev.query(RUNS)["runsOrError"]["results"]}
    page.goto("/assets/drift_report")
    # the header button (its icon is part of the accessible name; the caret beside it opens
    # other options)
    page.get_by_role("button").filter(has_text=re.compile(r"^Materialize$")).click()

    def launched() -> list[dict]:
        return [
            r
            for r in dev.query(RUNS)["runsOrError"]["results"]
            if r["runId"] not in before
            and [a["path"] for a in r["assetSelection"] or []] == [["drift_report"]]
        ]

    (run,) = dev.wait(launched, 60, "the run launched from the asset page")
    page.goto(f"/runs/{run['runId']}")
    # the run page's status tag turns to Success when the run has finished
    expect(page.get_by_text("Success", exact=True).first).to_be_visible(timeout=300_000)
    assert dev.finished(run["runId"]) == "SUCCESS"


@pytest.mark.timeout(2400)
def test_classification_models_shows_leaderboard_and_champion_metrics(page, deployed_dev: Deployed):
    """Timeout 2400 s: see above."""
    from playwright.sync_api import expect

    dev = deployed_dev.dev
    ((_, meta),) = dev.materializations("classification_models")
    champion = meta["champion"]
    numeric = {k: v for k, v in meta.items() if k.startswith("champion_") and k != "champion"}
    assert {"champion_roc_auc", "champion_pr_auc", "champion_brier"} <= set(numeric)
    assert all(isinstance(v, float) for v in numeric.values()), numeric
    board_rows = [line.split("|")[1].strip() for line in meta["leaderboard"].splitlines()[2:]]
    assert f"{champion} (champion)" in board_rows and len(board_rows) >= 3, board_rows

    page.goto("/assets/classification_models")
    table = page.locator("table").filter(has_text="champion_roc_auc")
    expect(table).to_be_visible()

    assert metadata_value(table, "champion") == champion
    for key, value in numeric.items():
        assert float(metadata_value(table, key)) == pytest.approx(value, rel=1e-9), key

    # the leaderboard is markdown: the UI opens it as a table in a dialog
    row = table.locator("tr").filter(has=page.get_by_text("leaderboard", exact=True))
    row.get_by_text("[Show Markdown]").click()
    board = page.get_by_role("dialog").filter(has_text="leaderboard")
    expect(board.locator("table")).to_be_visible()
    names = board.locator("table tbody tr td:first-child").all_inner_texts()
    assert [n.strip() for n in names] == board_rows
    champion_row = board.locator("table tbody tr").filter(has_text=f"{champion} (champion)")
    roc_auc = champion_row.locator("td").nth(1).inner_text()  # the roc_auc column
    assert float(roc_auc) == pytest.approx(numeric["champion_roc_auc"], abs=5e-5)


@pytest.mark.timeout(2400)
def test_realized_performance_page_shows_realized_next_to_deployed(page, deployed_dev: Deployed):
    """After the held-back days landed (``test_realized_performance.py``), the asset page of
    ``realized_performance`` shows the realized ROC-AUC, PR-AUC and Brier score next to the
    deployment-time figures. Timeout 2400 s: see above."""
    from playwright.sync_api import expect

    dev = deployed_dev.dev
    ((_, meta),) = dev.materializations("realized_performance")
    assert meta["status"] == "ok", meta
    numeric = {
        k: meta[k]
        for k in ("realized_roc_auc", "deployed_roc_auc", "realized_pr_auc", "realized_brier")
    }
    assert all(isinstance(v, float) for v in numeric.values()), numeric
    assert numeric["realized_roc_auc"] > 0.8, numeric

    page.goto("/assets/realized_performance")
    table = page.locator("table").filter(has_text="realized_roc_auc")
    expect(table).to_be_visible()
    for key, value in numeric.items():
        assert float(metadata_value(table, key)) == pytest.approx(value, rel=1e-9), key
