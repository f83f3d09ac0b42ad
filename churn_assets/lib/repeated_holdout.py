"""Repeated holdout: how much a model set's holdout score depends on the split seed.

A single holdout of a few thousand customers moves by about a hundredth of ROC-AUC when
the customers are drawn differently. :func:`repeated_holdout` rebuilds the training set
with the same protocol (temporal or hashed, as ``training_set`` does) for each split
seed, trains the model set again with the shipped procedure (model seeds stay fixed; the
config's CV folds, which the selection uses) and reports the holdout metrics of the
champion (after its refit on train + validation) and of every candidate as fitted on train
(the "always pick this one" alternatives): mean, sd, min, max.  A candidate dropped at the
screen of a large train split was fitted on a subsample, so its figures understate it.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from typing import Any

import polars as pl

from churn_assets.lib.datasets import DatasetConfig
from churn_assets.lib.feature_sets import build_training_set, to_splits
from churn_assets.lib.model_sets import train_model_set

KINDS = ("classification", "regression")
#: Holdout metrics reported per model set (the primary metric is added when missing).
REPORTED = {"classification": ("roc_auc", "pr_auc"), "regression": ("r2", "r2_gain_vs_naive")}


def summarize(values: Sequence[float]) -> dict[str, Any]:
    """Mean, sample sd (0 for one value), min, max and the values themselves."""
    vals = [float(v) for v in values]
    if not vals:
        raise ValueError("nothing to summarize")
    return {
        "mean": statistics.fmean(vals),
        "sd": statistics.stdev(vals) if len(vals) > 1 else 0.0,
        "min": min(vals),
        "max": max(vals),
        "values": vals,
    }


def repeated_holdout(
    cfg: DatasetConfig,
    features: pl.DataFrame,
    customers: pl.DataFrame | None,
    transactions: pl.DataFrame | None,
    *,
    seeds: Sequence[int],
    kinds: Sequence[str] = KINDS,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Holdout metrics of each model set over ``seeds`` (the split seeds).

    Takes what ``training_set`` takes (labelled ``customer_features``, usable raw customers
    and transactions). Returns ``{"dataset", "protocol", "seeds", <kind>: {"primary_metric",
    "champions" (name per seed), "champion": {metric: summary}, "candidates": {name:
    {metric: summary}}}}``, each summary as :func:`summarize` gives it.
    """
    if not seeds:
        raise ValueError("give at least one split seed")
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        raise ValueError(f"unknown model set kinds {unknown}; known: {list(KINDS)}")
    per_kind: dict[str, dict[str, Any]] = {
        k: {"champions": [], "champion": {}, "candidates": {}} for k in kinds
    }
    protocol: dict[str, Any] = {}
    for seed in seeds:
        frame, protocol = build_training_set(
            cfg, features, customers, transactions, split_seed=int(seed)
        )
        splits = to_splits(frame)
        for kind in kinds:
            result, _ = train_model_set(kind, cfg, splits)
            acc = per_kind[kind]
            acc["primary_metric"] = result.primary_metric
            names = dict.fromkeys([result.primary_metric, *REPORTED[kind]])
            acc["champions"].append(result.champion)
            acc.setdefault("fallbacks", []).append(
                bool(result.selection.get("fallback_to_naive", False))
            )
            for metric in names:
                acc["champion"].setdefault(metric, []).append(
                    result.champion_result.metrics[metric]
                )
                for cand in result.candidates:
                    metrics = cand.metrics_before_refit or cand.metrics
                    if metric in metrics:
                        acc["candidates"].setdefault(cand.name, {}).setdefault(metric, []).append(
                            metrics[metric]
                        )
            if log:
                value = result.champion_result.metrics[result.primary_metric]
                log(
                    f"seed {seed}: {kind} champion {result.champion} holdout "
                    f"{result.primary_metric} {value:.4f}"
                )
    report: dict[str, Any] = {
        "dataset": cfg.name,
        "protocol": protocol.get("protocol"),
        "protocol_description": protocol.get("description"),
        "seeds": [int(s) for s in seeds],
    }
    for kind, acc in per_kind.items():
        report[kind] = {
            "primary_metric": acc["primary_metric"],
            "champions": acc["champions"],
            "fallbacks_to_naive": sum(acc.get("fallbacks", [])),
            "champion": {m: summarize(v) for m, v in acc["champion"].items()},
            "candidates": {
                name: {m: summarize(v) for m, v in metrics.items()}
                for name, metrics in acc["candidates"].items()
            },
        }
        report[kind]["criteria"] = criteria(report[kind])
    return report


#: The champion's mean may trail the best single candidate's by at most this much.
MEAN_TOLERANCE = 0.01


def criteria(block: dict[str, Any]) -> dict[str, Any]:
    """Whether the selection holds over the seeds: the champion's mean primary metric is
    within :data:`MEAN_TOLERANCE` of the best single candidate's, and (regression) its gain
    over the naive baseline is never negative."""
    from churn_assets.lib.models.metrics import greater_is_better

    metric = block["primary_metric"]
    greater = greater_is_better(metric)
    means = {n: m[metric]["mean"] for n, m in block["candidates"].items() if metric in m}
    best = (max if greater else min)(means, key=lambda n: means[n])
    champ = block["champion"][metric]["mean"]
    shortfall = means[best] - champ if greater else champ - means[best]
    out: dict[str, Any] = {
        "best_single_candidate": best,
        "best_single_mean": means[best],
        "champion_mean": champ,
        "shortfall": shortfall,
        "within_tolerance": shortfall <= MEAN_TOLERANCE,
    }
    gain = block["champion"].get("r2_gain_vs_naive")
    if gain is not None:
        out["champion_gain_min"] = gain["min"]
        out["gain_never_negative"] = gain["min"] >= 0
    return out


def format_report(report: dict[str, Any]) -> str:
    """A plain-text table of :func:`repeated_holdout`'s report."""
    lines = [
        f"data set {report['dataset']}: {report['protocol']} protocol, "
        f"{len(report['seeds'])} split seeds {report['seeds']}",
        f"  ({report['protocol_description']})",
    ]
    for kind in KINDS:
        if kind not in report:
            continue
        block = report[kind]
        metric = block["primary_metric"]
        lines.append(f"\n{kind} — holdout {metric}: mean ± sd [min, max]")
        rows = [("champion (as selected and refitted)", block["champion"][metric])]
        rows += [(name, m[metric]) for name, m in block["candidates"].items() if metric in m]
        width = max(len(r[0]) for r in rows)
        for name, s in rows:
            lines.append(
                f"  {name:<{width}}  {s['mean']:.4f} ± {s['sd']:.4f} "
                f"[{s['min']:.4f}, {s['max']:.4f}]"
            )
        if "r2_gain_vs_naive" in block["champion"]:
            g = block["champion"]["r2_gain_vs_naive"]
            lines.append(
                f"  champion R² gain over naive: {g['mean']:+.4f} ± {g['sd']:.4f} "
                f"[{g['min']:+.4f}, {g['max']:+.4f}]; fallbacks to naive: "
                f"{block.get('fallbacks_to_naive', 0)}"
            )
        c = block.get("criteria")
        if c:
            if c["shortfall"] <= 0:
                verdict = f"champion ahead by {-c['shortfall']:.4f}"
            else:
                within = "within" if c["within_tolerance"] else "beyond"
                verdict = f"shortfall {c['shortfall']:.4f} ({within} {MEAN_TOLERANCE})"
            lines.append(
                f"  champion mean {c['champion_mean']:.4f} vs best single candidate "
                f"{c['best_single_candidate']} {c['best_single_mean']:.4f}: {verdict}"
            )
        lines.append(f"  champions per seed: {', '.join(block['champions'])}")
    return "\n".join(lines)
