"""A self-contained HTML drift report for a :class:`~churn_assets.lib.drift.DriftResult`.

:func:`render_html` returns one HTML document with inline CSS and inline SVG plots that it draws
itself: no JavaScript, no external stylesheet, font, image or CDN, so the file opens offline
and can be stored as an artifact or attached to an e-mail. It holds

* a summary: the verdict, the share of drifted features against its threshold, prediction
  drift, row counts, caller metadata (model version, cut-off, ...) and all thresholds;
* the per-column table (measure, threshold, JS, missing values, unseen categories, means),
  drifted rows highlighted, each column linking to its plot;
* one plot per column: for numeric columns the reference and current shares of the PSI bins
  (reference-quantile bins, equal width on screen, overlaid); for categorical columns side by
  side bars of the category shares (at most :data:`MAX_CATEGORIES` categories, the rest summed
  as "other"). Every bar has a tooltip with the exact shares and counts.

The plots use the bin counts the drift computation kept (``DriftResult.distributions``); a
column without them (e.g. a result rebuilt by hand) is recomputed from ``reference`` and
``current``. Neither this module nor :mod:`churn_assets.lib.drift` imports dagster or mlflow.
"""

from __future__ import annotations

import datetime as _dt
import html
import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import polars as pl

    from churn_assets.lib.drift import DriftResult

__all__ = ["MAX_CATEGORIES", "render_html"]

#: Categories drawn per categorical plot (by largest share on either side); the rest are summed.
MAX_CATEGORIES = 20

_REF_COLOUR = "#3b6fb6"
_CUR_COLOUR = "#e8833a"
_PLOT_W, _PLOT_H = 540, 250
_MARGIN_L, _MARGIN_R, _MARGIN_T, _MARGIN_B = 46, 10, 12, 78

_CSS = """
*{box-sizing:border-box}
body{font-family:-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;margin:0;
  background:#f5f6f8;color:#1f2328;font-size:14px;line-height:1.4}
header{background:#fff;border-bottom:1px solid #d0d7de;padding:18px 28px}
h1{margin:0 0 6px;font-size:22px}
h2{font-size:17px;margin:26px 0 10px}
main{padding:0 28px 40px}
.badge{display:inline-block;padding:3px 10px;border-radius:12px;font-weight:600;
  font-size:13px;color:#fff;vertical-align:middle}
.badge.drift{background:#cf222e}.badge.ok{background:#1a7f37}
.summary{display:flex;flex-wrap:wrap;gap:12px;margin-top:12px}
.card{background:#fff;border:1px solid #d0d7de;border-radius:8px;padding:12px 16px}
.kpi .v{font-size:22px;font-weight:600}.kpi .l{color:#57606a;font-size:12px}
table{border-collapse:collapse;background:#fff;width:100%}
th,td{border:1px solid #d0d7de;padding:4px 7px;text-align:left;white-space:nowrap;font-size:13px}
th{background:#f0f2f4;font-weight:600;font-size:13px}
td.n{text-align:right;font-variant-numeric:tabular-nums}
tr.drifted td{background:#ffebe9}
tr.drifted td.flag{color:#cf222e;font-weight:700}
td.flag{color:#1a7f37}
td.note{white-space:normal;min-width:140px}
.kv{width:auto}.kv th{background:#f6f8fa}
.plots{display:grid;grid-template-columns:repeat(auto-fill,minmax(480px,1fr));gap:14px}
.plot svg{width:100%;height:auto;max-width:640px;display:block}
.plot h3{margin:0 0 4px;font-size:15px}
.plot .sub{color:#57606a;font-size:12px;margin-bottom:4px}
.plot.drifted{border-color:#cf222e;box-shadow:0 0 0 1px #cf222e inset}
.legend span{display:inline-block;width:11px;height:11px;margin:0 4px 0 10px;
  vertical-align:-1px;border-radius:2px}
.scroll{overflow-x:auto}
.muted{color:#57606a}
svg text{font-family:inherit}
"""


# --------------------------------------------------------------------------- formatting
def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _num(value: Any, digits: int = 4) -> str:
    """Compact number for tables: '' for missing, integers with separators, floats 4 sig."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if math.isnan(value):
            return ""
        if math.isinf(value):
            return "∞" if value > 0 else "-∞"
        return f"{value:.{digits}g}"
    return str(value)


def _pct(share: float) -> str:
    return f"{100 * share:.1f}%"


def _anchor(column: str) -> str:
    return "plot-" + "".join(ch if ch.isalnum() else f"_{ord(ch):x}" for ch in column)


# --------------------------------------------------------------------------- SVG plots
def _y_scale(value: float) -> tuple[float, int]:
    """A round y-axis top (a share) and its number of grid steps (at most 5)."""
    value = min(max(value, 0.0), 1.0)
    for step in (0.001, 0.0025, 0.005, 0.01, 0.02, 0.025, 0.05, 0.1, 0.2, 0.25):
        steps = max(1, math.ceil(value / step - 1e-9))
        if steps <= 5:
            return steps * step, steps
    return 1.0, 4


def _axes(y_max: float, steps: int) -> list[str]:
    """Y grid lines with percentage labels; returns SVG elements."""
    inner_h = _PLOT_H - _MARGIN_T - _MARGIN_B
    parts: list[str] = []
    for i in range(steps + 1):
        share = y_max * i / steps
        y = _MARGIN_T + inner_h * (1 - i / steps)
        parts.append(
            f'<line x1="{_MARGIN_L}" x2="{_PLOT_W - _MARGIN_R}" y1="{y:.1f}" y2="{y:.1f}" '
            f'stroke="{"#8c959f" if i == 0 else "#e4e7eb"}" stroke-width="1"/>'
        )
        parts.append(
            f'<text x="{_MARGIN_L - 5}" y="{y + 4:.1f}" font-size="10" text-anchor="end" '
            f'fill="#57606a">{round(100 * share, 2):g}%</text>'
        )
    return parts


def _bar_chart(
    labels: Sequence[str],
    ref_shares: Sequence[float],
    cur_shares: Sequence[float],
    tooltips: Sequence[str],
    overlaid: bool,
    label_colours: Sequence[str] | None = None,
) -> str:
    """An SVG bar chart of reference vs current shares per slot (overlaid or side by side)."""
    n = max(len(labels), 1)
    inner_w = _PLOT_W - _MARGIN_L - _MARGIN_R
    inner_h = _PLOT_H - _MARGIN_T - _MARGIN_B
    y_max, steps = _y_scale(max([*ref_shares, *cur_shares, 0.0]))
    slot = inner_w / n
    parts = [
        f'<svg width="{_PLOT_W}" height="{_PLOT_H}" viewBox="0 0 {_PLOT_W} {_PLOT_H}" role="img">',
        *_axes(y_max, steps),
    ]

    def bar(x: float, w: float, share: float, colour: str, opacity: float, tip: str) -> str:
        h = inner_h * min(share / y_max, 1.0)
        y = _MARGIN_T + inner_h - h
        return (
            f'<rect x="{x:.1f}" y="{y:.1f}" width="{max(w, 0.5):.1f}" height="{h:.1f}" '
            f'fill="{colour}" fill-opacity="{opacity}"><title>{_esc(tip)}</title></rect>'
        )

    for i, label in enumerate(labels):
        x0 = _MARGIN_L + i * slot
        pad = min(slot * 0.12, 6)
        tip = tooltips[i]
        if overlaid:
            w = slot - 2 * pad
            parts.append(bar(x0 + pad, w, ref_shares[i], _REF_COLOUR, 0.55, tip))
            parts.append(bar(x0 + pad + w * 0.2, w * 0.6, cur_shares[i], _CUR_COLOUR, 0.75, tip))
        else:
            w = (slot - 2 * pad) / 2
            parts.append(bar(x0 + pad, w, ref_shares[i], _REF_COLOUR, 0.85, tip))
            parts.append(bar(x0 + pad + w, w, cur_shares[i], _CUR_COLOUR, 0.85, tip))
        cx = x0 + slot / 2
        ly = _PLOT_H - _MARGIN_B + 12
        colour = label_colours[i] if label_colours else "#24292f"
        text = label if len(label) <= 18 else label[:17] + "…"
        parts.append(
            f'<text x="{cx:.1f}" y="{ly:.1f}" font-size="10" fill="{colour}" text-anchor="end" '
            f'transform="rotate(-40 {cx:.1f} {ly:.1f})">{_esc(text)}<title>{_esc(label)}</title>'
            "</text>"
        )
    parts.append("</svg>")
    return "".join(parts)


def _numeric_plot(dist: Mapping[str, Any]) -> str:
    edges = [float(e) for e in dist["edges"]]
    ref = [int(c) for c in dist["reference"]]
    cur = [int(c) for c in dist["current"]]
    if not edges:
        return '<p class="muted">No reference values: nothing to plot.</p>'
    n_ref, n_cur = sum(ref) or 1, sum(cur) or 1
    labels = [f"< {edges[0]:.3g}"]
    labels += [f"[{a:.3g}, {b:.3g})" for a, b in zip(edges[:-1], edges[1:], strict=True)]
    labels += [f"= {edges[-1]:.3g}", f"> {edges[-1]:.3g}"]
    keep = [i for i in range(len(labels)) if ref[i] or cur[i]] or list(range(len(labels)))
    tips = [
        f"{labels[i]}: reference {_pct(ref[i] / n_ref)} ({ref[i]:,}), "
        f"current {_pct(cur[i] / n_cur)} ({cur[i]:,})"
        for i in keep
    ]
    return _bar_chart(
        [labels[i] for i in keep],
        [ref[i] / n_ref for i in keep],
        [cur[i] / n_cur for i in keep],
        tips,
        overlaid=True,
    )


def _categorical_plot(dist: Mapping[str, Any]) -> str:
    from churn_assets.lib.drift import NULL_LABEL

    cats = list(dist["categories"])
    ref = [int(c) for c in dist["reference"]]
    cur = [int(c) for c in dist["current"]]
    n_ref, n_cur = sum(ref) or 1, sum(cur) or 1
    order = sorted(range(len(cats)), key=lambda i: -max(ref[i] / n_ref, cur[i] / n_cur))
    shown, rest = order[:MAX_CATEGORIES], order[MAX_CATEGORIES:]
    labels, rs, cs, tips, colours = [], [], [], [], []
    for i in shown:
        name = NULL_LABEL if cats[i] is None else str(cats[i])
        unseen = ref[i] == 0 and cats[i] is not None
        label = f"{name} (new)" if unseen else name
        labels.append(label)
        rs.append(ref[i] / n_ref)
        cs.append(cur[i] / n_cur)
        colours.append("#cf222e" if unseen else "#24292f")
        tips.append(
            f"{label}: reference {_pct(ref[i] / n_ref)} ({ref[i]:,}), "
            f"current {_pct(cur[i] / n_cur)} ({cur[i]:,})"
        )
    if rest:
        r, c = sum(ref[i] for i in rest), sum(cur[i] for i in rest)
        label = f"other ({len(rest)})"
        labels.append(label)
        rs.append(r / n_ref)
        cs.append(c / n_cur)
        colours.append("#57606a")
        tips.append(
            f"{len(rest)} other categories: reference {_pct(r / n_ref)} ({r:,}), "
            f"current {_pct(c / n_cur)} ({c:,})"
        )
    return _bar_chart(labels, rs, cs, tips, overlaid=False, label_colours=colours)


# --------------------------------------------------------------------------- sections
def _summary(result: DriftResult, meta: Mapping[str, Any]) -> str:
    n_features = result.table.filter(result.table["kind"] != "prediction").height
    n_drifted_features = result.table.filter(
        (result.table["kind"] != "prediction") & result.table["drifted"]
    ).height
    kpis = [
        (_pct(result.share_drifted), f"features drifted ({n_drifted_features} of {n_features}); "
         f"threshold {_pct(result.thresholds.share_drifted)}"),
        ("yes" if result.prediction_drift else "no", "prediction drift"),
        (f"{result.reference_rows:,}", "reference rows"),
        (f"{result.current_rows:,}", "current rows"),
    ]  # fmt: skip
    cards = "".join(
        f'<div class="card kpi"><div class="v">{_esc(v)}</div><div class="l">{_esc(label)}</div>'
        "</div>"
        for v, label in kpis
    )
    drifted = (
        ", ".join(f'<a href="#{_anchor(c)}">{_esc(c)}</a>' for c in result.drifted_columns)
        or '<span class="muted">none</span>'
    )
    from churn_assets.lib.drift import verdict_reasons

    reasons = verdict_reasons(result)
    if reasons:
        drifted += f' <span class="muted">(verdict: {_esc("; ".join(reasons))})</span>'
    meta_rows = "".join(
        f"<tr><th>{_esc(k)}</th><td>{_esc(_num(v) if isinstance(v, float) else v)}</td></tr>"
        for k, v in meta.items()
    )
    t = result.thresholds
    threshold_rows = "".join(
        f"<tr><th>{_esc(k)}</th><td>{_esc(v)}</td></tr>"
        for k, v in (
            ("numeric: PSI >", t.psi),
            ("categorical: L1 (sum |p - q|, scale 0-2) >", t.l1),
            ("categorical: Jensen-Shannon divergence (base 2, scale 0-1) >", t.js),
            ("numeric prediction: PSI >", t.prediction_psi),
            ("data set: share of drifted features >", t.share_drifted),
            ("data set: any one numeric feature's PSI >", t.severe_psi),
            ("PSI bins (reference quantiles)", t.bins),
            ("PSI epsilon (min bin share)", t.epsilon),
        )
    )
    meta_table = (
        f'<div class="card"><h2 style="margin-top:0">Run</h2><table class="kv">{meta_rows}'
        "</table></div>"
        if meta_rows
        else ""
    )
    return (
        f'<div class="summary">{cards}</div>'
        f'<p>Drifted columns: {drifted}</p><div class="summary">{meta_table}'
        f'<div class="card"><h2 style="margin-top:0">Thresholds</h2><table class="kv">'
        f"{threshold_rows}</table></div></div>"
    )


def _pair(a: Any, b: Any) -> str:
    """'a → b' for reference/current pairs ('' when both are missing)."""
    if a is None and b is None:
        return ""
    return f"{_num(a)} → {_num(b)}"


def _table(result: DriftResult) -> str:
    head = [
        "column", "kind", "metric", "value", "threshold", "JS", "JS threshold", "drifted",
        "missing (ref → cur)", "unseen rows / values", "mean (ref → cur)", "note",
    ]  # fmt: skip
    body: list[str] = []
    for row in result.table.to_dicts():
        cls = ' class="drifted"' if row["drifted"] else ""
        unseen = (
            ""
            if row["unseen_categories"] is None
            else f"{_num(row['unseen_categories'])} / {_num(row['unseen_distinct'])}"
        )
        cells = [
            f'<td><a href="#{_anchor(row["column"])}">{_esc(row["column"])}</a></td>',
            f"<td>{_esc(row['kind'])}</td>",
            f"<td>{_esc(row['metric'])}</td>",
            *(
                f'<td class="n">{_esc(_num(row[k]))}</td>'
                for k in ("value", "threshold", "js", "js_threshold")
            ),
            f'<td class="flag">{"DRIFT" if row["drifted"] else "ok"}</td>',
            f'<td class="n">{_esc(_pair(row["reference_nulls"], row["current_nulls"]))}</td>',
            f'<td class="n">{_esc(unseen)}</td>',
            f'<td class="n">{_esc(_pair(row["reference_mean"], row["current_mean"]))}</td>',
            f'<td class="note">{_esc(row["note"] or "")}</td>',
        ]
        body.append(f"<tr{cls}>{''.join(cells)}</tr>")
    header = "".join(f"<th>{_esc(h)}</th>" for h in head)
    return (
        f'<div class="scroll"><table><thead><tr>{header}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table></div>"
    )


def _plots(result: DriftResult, reference: pl.DataFrame, current: pl.DataFrame) -> str:
    from churn_assets.lib.drift import compute_drift

    cards: list[str] = []
    for row in result.table.to_dicts():
        col = row["column"]
        dist = result.distributions.get(col)
        if dist is None and col in reference.columns and col in current.columns:
            numeric = row["metric"] == "psi"
            again = compute_drift(
                reference.select(col),
                current.select(col),
                numeric=[col] if numeric else [],
                categorical=[] if numeric else [col],
                thresholds=result.thresholds,
            )
            dist = again.distributions[col]
        if dist is None:
            svg = '<p class="muted">No distribution available.</p>'
        elif dist["kind"] == "numeric":
            svg = _numeric_plot(dist)
        else:
            svg = _categorical_plot(dist)
        measure = (
            f"{row['metric'].upper()} {_num(row['value'])} (threshold {_num(row['threshold'])})"
        )
        if row["js"] is not None:
            measure += f", JS {_num(row['js'])} (threshold {_num(row['js_threshold'])})"
        if row["reference_mean"] is not None or row["current_mean"] is not None:
            measure += f"; mean {_num(row['reference_mean'])} → {_num(row['current_mean'])}"
        verdict = (
            '<span class="badge drift">drift</span>'
            if row["drifted"]
            else '<span class="badge ok">ok</span>'
        )
        cls = "card plot drifted" if row["drifted"] else "card plot"
        cards.append(
            f'<div class="{cls}" id="{_anchor(col)}"><h3>{_esc(col)} {verdict}</h3>'
            f'<div class="sub">{_esc(row["kind"])} · {_esc(measure)}</div>{svg}</div>'
        )
    legend = (
        f'<p class="legend muted"><span style="background:{_REF_COLOUR}"></span>reference'
        f'<span style="background:{_CUR_COLOUR}"></span>current · numeric columns: PSI bins '
        "(reference quantiles, drawn with equal width; outer bins hold values outside the "
        "reference range) · categorical: share of rows per category, "
        '<span style="background:#cf222e;width:6px"></span>new = unseen in the reference</p>'
    )
    return legend + f'<div class="plots">{"".join(cards)}</div>'


def render_html(
    result: DriftResult,
    reference: pl.DataFrame,
    current: pl.DataFrame,
    title: str,
    meta: Mapping[str, Any] | None = None,
) -> str:
    """Render a drift result as one self-contained HTML document (returned as a string).

    Args:
        result: The output of :func:`churn_assets.lib.drift.compute_drift`.
        reference: The reference sample the result was computed from (used only for columns
            whose bin counts are not in ``result.distributions``).
        current: The current sample, likewise.
        title: Page title and heading.
        meta: Extra key/value pairs shown in the summary, e.g. ``{"model version": "7",
            "cut-off": "2025-03-26"}``. Values are shown with ``str()``.

    Returns:
        HTML5 text with inline CSS and SVG only: no scripts, no external resources.
    """
    meta = dict(meta or {})
    badge = (
        '<span class="badge drift">DRIFT DETECTED</span>'
        if result.drifted
        else '<span class="badge ok">NO DRIFT</span>'
    )
    generated = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_esc(title)}</title><style>{_CSS}</style></head><body>"
        f"<header><h1>{_esc(title)} {badge}</h1>"
        f'<div class="muted">Generated {generated} · reference {result.reference_rows:,} rows, '
        f"current {result.current_rows:,} rows</div>"
        f"{_summary(result, meta)}</header><main>"
        f"<h2>Columns</h2>{_table(result)}"
        f"<h2>Distributions</h2>{_plots(result, reference, current)}"
        "</main></body></html>\n"
    )
