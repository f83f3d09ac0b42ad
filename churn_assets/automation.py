"""Declarative automation: which assets Dagster keeps up to date on its own, and the sensor
that evaluates their conditions.

``churn_scores`` is refreshed whenever the deployed version or the current features change
(``AutomationCondition.eager()``): a landing batch gives fresh scores without waiting for a
retraining, and a rollback re-scores with the version rolled back to. The retraining itself
stays a job started by a schedule and sensors (``schedules.py``, ``sensors.py``): it runs as one
run of its whole selection (both model sets, the gate, the deployment) in the `retraining`
pool with its preloaded forkserver, and its triggers read more than asset states (a drift
episode is a deployed reference and the columns drifted against it; "new data since the last
*successful* retraining run" looks at run status), which a condition per asset cannot say.
"""

import dagster as dg

from churn_assets import scope
from churn_assets.jobs import RETRAINING_TAG

#: A parent's update that asks for new scores: not one made by a run that scored itself (a
#: retraining run materializes churn_scores after the deployment, as does a run selecting
#: churn_scores with its parents), else one planned in the same evaluation.
DEPS_UPDATED = dg.AutomationCondition.any_deps_match(
    (
        dg.AutomationCondition.newly_updated()
        & ~dg.AutomationCondition.executed_with_root_target()
        & ~dg.AutomationCondition.executed_with_tags(tag_keys={RETRAINING_TAG})
    )
    | dg.AutomationCondition.will_be_requested()
).with_label("any_deps_updated")

#: What ends a pending refresh: a request, or the scores' own update when no parent updated
#: in the same evaluation. (Dagster's eager condition counts the scores' update alone: with
#: ``churn_automation`` switched off, scores made meanwhile (a rollback's re-scoring, by hand)
#: and features landed after them are seen in one evaluation once it is back on, and the
#: scores' update cancelled the features': they stayed behind until the next change.)
HANDLED = (
    dg.AutomationCondition.newly_requested()
    | (dg.AutomationCondition.newly_updated() & ~DEPS_UPDATED)
    | dg.AutomationCondition.initial_evaluation()
).with_label("handled")

#: Dagster's eager condition with :data:`DEPS_UPDATED` and :data:`HANDLED`: refresh when a
#: parent updated since the last request or materialization, once no parent is missing or in
#: progress (e.g. not in the middle of a retraining run).
SCORES_CONDITION = (
    dg.AutomationCondition.in_latest_time_window()
    & (dg.AutomationCondition.newly_missing() | DEPS_UPDATED).since(HANDLED)
    & ~dg.AutomationCondition.any_deps_missing()
    & ~dg.AutomationCondition.any_deps_in_progress()
    & ~dg.AutomationCondition.in_progress()
).with_label("eager")

churn_automation = dg.AutomationConditionSensorDefinition(
    "churn_automation",
    target=dg.AssetSelection.assets(scope.key("churn_scores")),
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=30,
    # like every run of the platform, its runs name their data set (run filters, alerts)
    run_tags={"churn/trigger": "automation", **scope.dataset_tags()},
    description="Evaluates the automation conditions of the churn graph every 30 s: "
    "churn_scores is re-materialized when deployed_model_version or current_features changed "
    "(eager).",
)
