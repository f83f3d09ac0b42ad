"""Notifications to a Slack-compatible incoming webhook (no Dagster here).

The platform posts failed runs and failed asset checks to ``CHURN_ALERT_WEBHOOK_URL``
(Slack, Mattermost, Rocket.Chat and most chat tools accept the same JSON: ``text`` plus
optional ``blocks``). Each message names the run, the step, the asset, the reason and a link
into the Dagster UI (``CHURN_UI_URL``, default http://localhost:3000). Unset means off.
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any

WEBHOOK_ENV = "CHURN_ALERT_WEBHOOK_URL"
UI_ENV = "CHURN_UI_URL"
DEFAULT_UI_URL = "http://localhost:3000"
#: Slack rejects longer section texts; keep reasons readable anyway.
MAX_REASON_CHARS = 1500


class NotificationError(RuntimeError):
    """The webhook did not accept the message (after the retries, where retrying helps)."""


class WebhookRefused(NotificationError):
    """The webhook answered 4xx (bad URL or payload): sending the same again will not help."""


def webhook_url() -> str | None:
    """The configured webhook (``CHURN_ALERT_WEBHOOK_URL``), or None when notifications are
    off; a value that is not an http(s) URL is a setting error naming the variable."""
    from churn_assets.lib.settings import SettingError

    url = (os.environ.get(WEBHOOK_ENV) or "").strip() or None
    if url is not None and not url.lower().startswith(("http://", "https://")):
        raise SettingError(
            f"{WEBHOOK_ENV}={url!r}: it takes an http:// or https:// URL (the webhook's "
            "whole address, e.g. https://hooks.slack.com/services/…)"
        )
    return url


def ui_url() -> str:
    """Base URL of the Dagster UI for links (``CHURN_UI_URL``)."""
    return ((os.environ.get(UI_ENV) or "").strip() or DEFAULT_UI_URL).rstrip("/")


def ui_url_for_port(port: int, env: MutableMapping[str, str]) -> str:
    """Set ``CHURN_UI_URL`` in ``env`` to the UI ``churn dev`` serves on ``port`` unless it
    names one already, so that links in alerts follow ``churn dev --port``; returns it."""
    if not (env.get(UI_ENV) or "").strip():
        env[UI_ENV] = f"http://localhost:{port}"
    return env[UI_ENV]


def run_link(run_id: str, base: str | None = None) -> str:
    """The run's page in the Dagster UI."""
    return f"{base or ui_url()}/runs/{run_id}"


def asset_link(asset: str, base: str | None = None, view: str | None = None) -> str:
    """An asset's page (``asset`` as ``a/b``; ``view="checks"`` opens its checks tab)."""
    path = "/".join(urllib.parse.quote(p) for p in asset.split("/"))
    return f"{base or ui_url()}/assets/{path}" + (f"?view={view}" if view else "")


@dataclass(frozen=True)
class Alert:
    """One thing that went wrong, with where it happened and where to look."""

    title: str
    reason: str
    link: str
    severity: str = "error"
    run_id: str | None = None
    job: str | None = None
    steps: tuple[str, ...] = ()
    assets: tuple[str, ...] = ()
    details: dict[str, str] = field(default_factory=dict)

    def fields(self) -> list[tuple[str, str]]:
        """(name, value) pairs shown under the title; empty ones left out."""
        pairs = [
            ("Run", f"{self.run_id} ({self.job})" if self.job else self.run_id or ""),
            ("Step", ", ".join(self.steps)),
            ("Asset", ", ".join(self.assets)),
            ("Severity", self.severity),
            *self.details.items(),
        ]
        return [(k, v) for k, v in pairs if v]


def _clip(text: str, limit: int = MAX_REASON_CHARS) -> str:
    text = text.strip()
    return text if len(text) <= limit else text[: limit - 1] + "…"


def slack_message(alert: Alert) -> dict[str, Any]:
    """The Slack-compatible JSON: a plain ``text`` with everything (for receivers that only
    read it, and for notifications) and ``blocks`` with the same content laid out."""
    icon = ":rotating_light:" if alert.severity == "error" else ":warning:"
    reason = _clip(alert.reason)
    lines = [f"{icon} {alert.title}", *(f"{k}: {v}" for k, v in alert.fields())]
    lines += [f"Reason: {reason}", f"Open in Dagster: {alert.link}"]
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": alert.title[:150]}},
        {
            "type": "section",
            "fields": [
                {"type": "mrkdwn", "text": f"*{k}*\n{_clip(v, 300)}"} for k, v in alert.fields()
            ][:10],
        },
        {"type": "section", "text": {"type": "mrkdwn", "text": f"*Reason*\n```{reason}```"}},
        {
            "type": "actions",
            "elements": [
                {
                    "type": "button",
                    "text": {"type": "plain_text", "text": "Open in Dagster"},
                    "url": alert.link,
                }
            ],
        },
    ]
    return {"text": "\n".join(lines), "blocks": blocks}


def post_json(
    url: str,
    payload: dict[str, Any],
    *,
    timeout: float = 5.0,
    retries: int = 3,
    backoff: float = 0.5,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """POST ``payload`` as JSON; retries connection errors, timeouts, 429 and 5xx with
    exponential backoff (``backoff``, 2×, 4× ... seconds). Returns the HTTP status; raises
    :class:`WebhookRefused` on another 4xx (not retried) and :class:`NotificationError` when
    every attempt failed."""
    body = json.dumps(payload).encode()
    last = ""
    for attempt in range(retries + 1):
        if attempt:
            sleep(backoff * 2 ** (attempt - 1))
        request = urllib.request.Request(
            url, data=body, method="POST", headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return response.status
        except urllib.error.HTTPError as e:
            detail = e.read()[:300].decode(errors="replace")
            last = f"HTTP {e.code} {detail}".strip()
            if e.code != 429 and e.code < 500:
                raise WebhookRefused(f"webhook refused the message: {last}") from e
        except (urllib.error.URLError, TimeoutError, ConnectionError) as e:
            last = f"{type(e).__name__}: {getattr(e, 'reason', e)}"
    raise NotificationError(f"webhook unreachable after {retries + 1} attempts: {last}")


def post_alert(url: str, alert: Alert, **kw: Any) -> int:
    """Post ``alert`` as a Slack-compatible message to ``url``."""
    return post_json(url, slack_message(alert), **kw)
