"""run_failure_reporter: a failed run is reported to the log and to a webhook on loopback."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import dagster as dg
import pytest

from coder_assets.core.notify import failure_report
from coder_assets.resources.notify import FailureNotifierResource
from coder_assets.sensors import run_failure_reporter


class _Receiver(BaseHTTPRequestHandler):
    received: list[tuple[dict[str, str], str]] = []
    status = 200

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"])).decode()
        type(self).received.append((dict(self.headers), body))
        self.send_response(type(self).status)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        """Quiet."""


@pytest.fixture
def webhook() -> Iterator[tuple[str, type[_Receiver]]]:
    handler = type("Receiver", (_Receiver,), {"received": [], "status": 200})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/homelab-alerts", handler
    finally:
        server.shutdown()
        server.server_close()


@dg.asset
def always_fails() -> None:
    raise dg.Failure(description="repo homelab/broken has no commit on 'main'")


def _failed_run_context(instance: dg.DagsterInstance) -> dg.RunFailureSensorContext:
    result = dg.materialize([always_fails], instance=instance, raise_on_error=False)
    assert not result.success
    return dg.build_run_status_sensor_context(
        sensor_name="run_failure_reporter",
        dagster_event=result.get_run_failure_event(),
        dagster_instance=instance,
        dagster_run=result.dagster_run,
    ).for_run_failure()


def test_failed_run_is_posted_to_the_webhook_with_its_reason(instance, webhook, monkeypatch):
    url, receiver = webhook
    monkeypatch.setenv("CODER_ASSETS_FAILURE_WEBHOOK_URL", url)
    context = _failed_run_context(instance)

    run_failure_reporter(context, failure_notifier=FailureNotifierResource())

    [(headers, body)] = receiver.received
    assert headers["Title"].startswith("coder_assets:") and "failed" in headers["Title"]
    assert "always_fails" in body and "has no commit on 'main'" in body
    assert f"/runs/{context.dagster_run.run_id}" in body


def test_without_a_webhook_the_failure_is_only_logged(instance, webhook, monkeypatch):
    _, receiver = webhook
    monkeypatch.delenv("CODER_ASSETS_FAILURE_WEBHOOK_URL", raising=False)

    run_failure_reporter(_failed_run_context(instance), failure_notifier=FailureNotifierResource())

    assert receiver.received == []


def test_a_broken_webhook_never_raises_and_never_logs_its_url(webhook, monkeypatch, caplog):
    url, receiver = webhook
    receiver.status = 500
    monkeypatch.setenv("CODER_ASSETS_FAILURE_WEBHOOK_URL", url)
    report = failure_report(
        job_name="repo_job",
        run_id="0123456789abcdef",
        partition_key="homelab~svc",
        failed_steps=["repo_snapshots"],
        reason="boom",
        ui_url="http://127.0.0.1:3000",
    )

    assert FailureNotifierResource().send(report) is False
    assert "HTTP 500" in caplog.text and "homelab-alerts" not in caplog.text


def test_failure_report_is_short_and_names_job_partition_step_and_link():
    report = failure_report(
        job_name="repo_job",
        run_id="0123456789abcdef",
        partition_key="homelab~svc",
        failed_steps=["repo_snapshots"],
        reason="line one\n   line two " + "x" * 2000,
        ui_url="http://dagster.lan/",
    )

    assert report.title == "coder_assets: repo_job [homelab~svc] failed"
    assert report.body.startswith("Run 01234567 of repo_job [homelab~svc] failed in ")
    assert "line one line two" in report.body and len(report.body) < 800
    assert report.body.endswith("http://dagster.lan/runs/0123456789abcdef")
