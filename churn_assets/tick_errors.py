"""Failed sensor and schedule ticks → the alert webhook.

A sensor or schedule that raises on every tick (an unreachable store, a config that no
longer loads, an instance that cannot be read) starts no run, so no run-failure notification
ever tells anyone: the UI's tick history is the only trace. :func:`posting_errors` wraps a
sensor or schedule function so that its failed tick is posted to ``CHURN_ALERT_WEBHOOK_URL``,
once per distinct error (again after a tick that succeeds), and still fails in the UI.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

#: The error each sensor last posted, in this code server process: a sensor failing the
#: same way on every tick is posted once, again after a tick that succeeds.
_POSTED_ERRORS: dict[str, str] = {}


def post_tick_error(
    sensor: str, consequence: str, error: BaseException, kind: str = "Sensor"
) -> bool:
    """Post a failed tick of ``sensor`` (a sensor or schedule, ``kind``; ``consequence``: what
    stops while it fails) to the webhook unless this error was the last one posted for it;
    True when posted."""
    from churn_assets.lib import notify
    from churn_assets.retries import describe

    text = describe(error)
    if _POSTED_ERRORS.get(sensor) == text:
        return False
    _POSTED_ERRORS[sensor] = text
    url = notify.webhook_url()
    if url is None:
        return False
    alert = notify.Alert(
        title=f"{kind} {sensor} failed: {consequence}",
        reason=text,
        link=f"{notify.ui_url()}/overview/automation",
        details={kind: sensor, "Next": "it retries every tick; posted once per error"},
    )
    try:
        notify.post_alert(url, alert)
    except Exception:  # noqa: BLE001 - the tick's own error is what the UI must show
        return False
    return True


def posting_errors(
    sensor: str, consequence: str, kind: str = "Sensor"
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Wrap the function of sensor (or schedule, ``kind``) ``sensor``: a tick that raises is posted
    (:func:`post_tick_error`) and raised again, so it still fails in the UI; a tick that
    succeeds ends the episode."""

    def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def tick(*args: Any, **kwargs: Any) -> Any:
            try:
                result = fn(*args, **kwargs)
            except Exception as e:
                post_tick_error(sensor, consequence, e, kind)
                raise
            _POSTED_ERRORS.pop(sensor, None)
            return result

        return tick

    return wrap
