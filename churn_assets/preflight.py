"""Every setting read from the environment, checked once before the platform starts.

``churn dev`` runs this before it starts anything: a wrong value (a cron that never fires, a
blank or negative number, a URL missing a slash, a webhook without a scheme) ends in one line
naming the variable, instead of a code location that fails to load, a sensor failing every
tick, or an error at the end of a run (the served-drift window) or when an alert is due (the
webhook).
"""

from __future__ import annotations

#: ``(module, function)`` reading each group of settings, in the order they are checked.
CHECKS = (
    ("churn_assets.preflight", "storage_locations"),
    ("churn_serving.settings", "ServingSettings"),
    ("churn_assets.schedules", "retraining_cron"),
    ("churn_assets.lib.settings", "landing_sensor_seconds"),
    ("churn_assets.lib.settings", "landing_settle_seconds"),
    ("churn_assets.lib.settings", "landing_wait_seconds"),
    ("churn_assets.lib.served_drift", "ServedWindow.from_env"),
    ("churn_assets.lib.retention", "RetentionPolicy.from_env"),
    ("churn_assets.lib.notify", "webhook_url"),
    ("churn_assets.lib.models._common", "training_threads"),
)


def storage_locations() -> tuple[str, str]:
    """The storage root and the landing zone as the settings resolve them."""
    from churn_assets.lib.settings import ChurnSettings

    s = ChurnSettings()
    return s.resolved_storage_url, s.resolved_landing_url


def settings_problems() -> list[str]:
    """One line per environment setting that cannot be used (empty when all can)."""
    import importlib

    from pydantic import ValidationError

    from churn_assets.lib.settings import validation_message

    problems: list[str] = []
    for module, name in CHECKS:
        try:  # a module reading a setting as it loads fails to import: the same problem
            check = importlib.import_module(module)
            for part in name.split("."):
                check = getattr(check, part)
            check()
        except ValidationError as e:
            said = validation_message(e)
        except ValueError as e:  # SettingError and the older checks' ValueError
            said = str(e)
        else:
            continue
        if said not in problems:
            problems.append(said)
    return problems
