"""The Dagster UI in Debian's Chromium, driven by Playwright: after the demo, `dagster dev` shows
every asset of the graph, and a person can launch one repo partition and watch it succeed.
Screenshots are saved under test-artifacts/ui/."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
import requests
from playwright.sync_api import expect, sync_playwright

from coder_assets_tests.conftest import free_port

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = Path(os.environ.get("CODER_ASSETS_TEST_ARTIFACTS", ROOT / "test-artifacts")) / "ui"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
PARTITION = "homelab~homelab-adrs"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

pytestmark = pytest.mark.slow


def _wait_for(predicate, *, timeout: float, what: str, interval: float = 1.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


@pytest.fixture(scope="module")
def ui(full_demo) -> Iterator[tuple[str, Path]]:
    """`dagster dev` on a loopback port, on the instance the whole demo has filled."""
    demo, env, tmp = full_demo
    dagster_home = tmp / "dagster_home"
    assert demo.returncode == 0, demo.stdout + demo.stderr

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = (tmp / "dagster-dev.log").open("w")
    dev = subprocess.Popen(
        [
            str(Path(sys.executable).with_name("dagster")),
            "dev",
            "-w",
            str(ROOT / "workspace.yaml"),
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
        ],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:

        def serving() -> bool:
            try:
                return requests.get(f"{url}/server_info", timeout=2).ok
            except requests.RequestException:
                return False

        _wait_for(serving, timeout=240, what="dagster dev to serve")
        yield url, dagster_home
    finally:
        os.killpg(dev.pid, signal.SIGTERM)
        try:
            dev.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(dev.pid, signal.SIGKILL)
        log.close()


@pytest.fixture
def page(ui):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1600, "height": 1000})
        page.set_default_timeout(60_000)
        try:
            yield page
        finally:
            browser.close()


def _open(page, url: str) -> None:
    page.goto(url)
    # A fresh browser profile gets Dagster's newsletter prompt once; dismiss it if it shows.
    skip = page.get_by_role("button", name="Skip")
    try:
        skip.click(timeout=5_000)
    except Exception:  # noqa: BLE001 - the prompt is optional
        pass


def test_asset_graph_shows_every_asset_and_every_one_is_materialized(ui, page):
    from coder_assets.definitions import defs

    url, dagster_home = ui
    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        missing = [
            spec.key.to_user_string()
            for spec in defs.resolve_all_asset_specs()
            if instance.get_latest_materialization_event(spec.key) is None
        ]
    assert missing == [], "the demo left these assets unmaterialized"
    groups: dict[str, list[str]] = {}
    unpartitioned: dict[str, int] = {}
    for spec in defs.resolve_all_asset_specs():
        groups.setdefault(spec.group_name, []).append(spec.key.to_user_string())
        unpartitioned[spec.group_name] = unpartitioned.get(spec.group_name, 0) + (
            spec.partitions_def is None
        )

    _open(page, f"{url}/asset-groups")
    for group in groups:
        page.get_by_text(group, exact=True).first.wait_for(state="visible")
    page.screenshot(path=str(ARTIFACTS / "asset-graph.png"), full_page=True)
    # The global graph collapses groups; each group's own graph shows its assets.
    for group, keys in sorted(groups.items()):
        _open(page, f"{url}/locations/coder_assets/asset-groups/{group}")
        for key in keys:
            page.get_by_text(key, exact=True).first.wait_for(state="visible")
        # Every node's status loaded, and none is missing a materialization (the graph is green).
        expect(page.get_by_text("Loading...")).to_have_count(0, timeout=90_000)
        expect(page.get_by_text("Never materialized")).to_have_count(0)
        expect(page.get_by_text("Materialized", exact=True)).to_have_count(unpartitioned[group])
        page.screenshot(path=str(ARTIFACTS / f"group-{group}.png"), full_page=True)


def test_one_repo_partition_launched_from_the_ui_succeeds(ui, page):
    url, dagster_home = ui

    _open(page, f"{url}/assets/repo_snapshots")
    page.get_by_role("button", name="Materialize…").first.click()
    dialog = page.locator("[role=dialog]")
    dialog.get_by_text("Select a partition or create one").click()
    page.locator("label").filter(has_text=PARTITION).first.click()
    page.keyboard.press("Escape")
    page.screenshot(path=str(ARTIFACTS / "launch-dialog.png"))
    dialog.get_by_role("button", name="Launch 1 run").click()

    def launched_run():
        with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
            runs = instance.get_runs(dg.RunsFilter(tags={"dagster/partition": PARTITION}), limit=10)
        by_ui = [r for r in runs if "coder_assets/trigger" not in r.tags]
        return by_ui[0] if by_ui and by_ui[0].is_finished else None

    run = _wait_for(launched_run, timeout=300, what=f"the UI's run of {PARTITION} to finish")
    assert run.status == dg.DagsterRunStatus.SUCCESS

    _open(page, f"{url}/runs/{run.run_id}")
    page.get_by_text("Success").first.wait_for(state="visible")
    page.screenshot(path=str(ARTIFACTS / "run-succeeded.png"), full_page=True)
    _open(page, f"{url}/assets/repo_snapshots?view=partitions&partition={PARTITION}")
    page.get_by_text("commit_sha").first.wait_for(state="visible")
    page.screenshot(path=str(ARTIFACTS / "partition-metadata.png"), full_page=True)
