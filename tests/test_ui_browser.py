"""The Prefect UI of a server on a port other than 4200: it talks to that port's API, and, as a
person sees it in headless Chromium, one `dvc repro`'s runs are found by their shared `repro:` tag
and the pruning-iterations table opens.

The browser tests are optional: skipped where playwright or a Chromium (Debian's
chromium-headless-shell or chromium) is not installed.
"""

from __future__ import annotations

import json
import os
import shutil
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import drain_prefect_services, unused_port

from runtime.server import LocalServer, start, stop

pytestmark = [pytest.mark.slow, pytest.mark.long(9)]
CHROMIUM = next(
    (
        found
        for name in (os.environ.get("DC_CHROMIUM", ""), "chromium-headless-shell", "chromium")
        if name and (found := shutil.which(name))
    ),
    None,
)
REPRO = "repro:2026-12-06-030000-4242"
OTHER = "repro:2026-12-05-030000-4141"
ROWS = [
    {
        "iteration": i,
        "density": f"{100 / (i + 1):.2f}%",
        "val error after prune": "1.20%",
        "val error after retrain": f"0.9{i}%",
    }
    for i in range(1, 4)
]


def _record_runs(api_url: str) -> str:
    """A scheduled rerun and its prune stage (one repro tag), another repro's stage; returns the
    id of the prune stage's iterations table."""
    from prefect import flow, tags
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from runtime.artifacts import publish_table

    @flow(name="scheduled-rerun", flow_run_name="rerun-main-2026-12-06-0300")
    def rerun() -> None:
        """Stands in for the rerun's record."""

    @flow(name="prune", flow_run_name="prune-lenet5")
    def prune() -> str:
        publish_table("lenet5-prune-iterations", ROWS, "prune lenet5: per iteration")
        return "pruned"

    @flow(name="train", flow_run_name="train-lenet5-yesterday")
    def train() -> None:
        """Another night's stage."""

    with temporary_settings({PREFECT_API_URL: api_url, "flows.heartbeat_frequency": None}):
        with tags(REPRO, "scheduled-rerun"):
            rerun()
        with tags(REPRO, "stage:prune", "model:lenet5"):
            prune()
        with tags(OTHER, "stage:train"):
            train()
        from prefect.client.orchestration import get_client

        with get_client(sync_client=True) as client:
            (table,) = client.read_artifacts()
        drain_prefect_services()  # they would post to this server after it is gone
        return str(table.id) if table.key == "lenet5-prune-iterations" else ""


@pytest.fixture(scope="module")
def ui(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalServer, str]]:
    """A real server with its UI on a free port, holding the runs above."""
    local = LocalServer(port=unused_port(), home=tmp_path_factory.mktemp("ui") / ".prefect")
    start(timeout_s=180, server=local, prepare=False)
    try:
        yield local, _record_runs(local.api_url)
    finally:
        stop(local, grace_s=1)


@pytest.fixture
def page(tmp_path: Path) -> Iterator[object]:
    """A headless Chromium page; a screenshot of it stays in tmp_path."""
    sync_api = pytest.importorskip("playwright.sync_api")
    if CHROMIUM is None:
        pytest.skip("no Chromium: apt-get install chromium-headless-shell")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM)
        tab = browser.new_page(viewport={"width": 1400, "height": 900})
        try:
            yield tab
        finally:
            tab.screenshot(path=str(tmp_path / "page.png"))
            browser.close()


def test_the_ui_talks_to_the_api_on_its_own_port(ui) -> None:
    local, _ = ui
    with urllib.request.urlopen(f"{local.ui_url}/ui-settings", timeout=10) as reply:
        settings = json.loads(reply.read())
    assert settings["api_url"] == local.api_url


def test_one_repro_s_runs_are_found_by_their_tag(ui, page) -> None:
    local, _ = ui
    page.goto(f"{local.ui_url}/v2/runs?tab=flow-runs&tags={REPRO}")
    page.get_by_text("prune-lenet5").wait_for(timeout=30_000)
    body = page.inner_text("body")
    assert "rerun-main-2026-12-06-0300" in body, "the rerun is found with its stages"
    assert "train-lenet5-yesterday" not in body, "another repro's runs are filtered out"
    assert "Can't connect" not in body


def test_the_iterations_table_opens(ui, page) -> None:
    local, table_id = ui
    assert table_id, "the iterations table was recorded"
    page.goto(f"{local.ui_url}/artifacts/artifact/{table_id}")
    page.get_by_text("val error after retrain").wait_for(timeout=30_000)
    body = page.inner_text("body")
    assert all(row["val error after retrain"] in body for row in ROWS), body
    assert "prune-lenet5" in body, "the table links to its stage run"
