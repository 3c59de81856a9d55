"""Where failure reports go: always the log, and a webhook (e.g. an ntfy topic) when configured."""

from __future__ import annotations

import logging
import os

import dagster as dg
import requests
from pydantic import Field

from coder_assets.core.notify import FailureReport

logger = logging.getLogger(__name__)


class FailureNotifierResource(dg.ConfigurableResource):
    """Posts failure reports to a webhook. The URL is read from an environment variable when a
    report is sent, so a private ntfy topic never shows in the UI's resource config."""

    webhook_url_env: str = Field(
        default="CODER_ASSETS_FAILURE_WEBHOOK_URL",
        description="Environment variable that holds the webhook URL; unset means log only.",
    )
    timeout_seconds: float = Field(default=10.0, description="Limit for one webhook request.")

    def send(self, report: FailureReport) -> bool:
        """Post `report`; True when a webhook accepted it. Never raises: a broken notifier must
        not hide the failure it reports, which is in the log either way."""
        url = os.environ.get(self.webhook_url_env, "")
        if not url:
            return False
        try:
            response = requests.post(
                url,
                data=report.body.encode(),
                headers={
                    "Title": report.title,
                    "Tags": "warning",
                    "Content-Type": "text/plain; charset=utf-8",
                },
                timeout=self.timeout_seconds,
            )
            response.raise_for_status()
        except requests.RequestException as exc:
            status = getattr(getattr(exc, "response", None), "status_code", None)
            logger.warning(
                "could not post the failure report to the webhook in %s (%s)",
                self.webhook_url_env,
                f"HTTP {status}" if status else type(exc).__name__,
            )
            return False
        return True
