"""Compare page helpers: an experiment's results (from :mod:`engine.summaries`), the figures that show them, and
the page's tabs.

Figures take engine objects (summaries, metrics) and return plotly figures, without widgets; each ``*_tab``
function draws one tab of the page (its options and figures), and the page runs only the open one.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
import streamlit as st

from engine import experiments, exports, owners, summaries, verdicts
from engine.experiments import ExperimentSummary
from engine.metrics import Metrics
from engine.mixes import SYNTHETIC_KINDS
from ui.figures import memo

PALETTE = px.colors.qualitative.Safe
FONT = {"size": 13}
State = tuple[str, summaries.Signature]  # an experiment and the state of its runs (state_of)
RunMetrics = Mapping[tuple[str, int], Metrics]
SCORE_WORDS = {
    "recall": "recall: share of the class's test images found",
    "f1": "F1: balance of recall and precision",
}


def results_of(exp_id: str) -> summaries.Results:
    """The experiment's results for the current state of its runs, shared by every session (and usually
    computed already: a job computes them when one of its runs ends)."""
    state = summaries.signature(exp_id)
    if summaries.is_ready(exp_id, state):
        return summaries.results(exp_id, state)
    with st.spinner("Comparing runs and judging the synthetic mix against every control…"):
        return summaries.results(exp_id, state)


def state_of(results: summaries.Results) -> State:
    """What the page's figures depend on: the experiment and the state of its runs (a key for ``memo``)."""
    return results.summary.experiment.id, results.signature


def warnings_of(results: summaries.Results) -> list[str]:
    """The health warnings, the first saying how many runs were interrupted, if any."""
    note = interrupted_note(results)
    return ([note] if note else []) + list(results.warnings)


def interrupted_note(results: summaries.Results) -> str:
    """ "2 of 6 runs were interrupted: resume them on the Train page", or "" when none was."""
    status, record = results.status, results.summary.experiment
    cut = sum(state == "interrupted" for state in status.values())
    if not cut:
        return ""
    if owners.owner_of(record.owner) != owners.owner_name():  # shared with this user: only its owner resumes
        return f"{cut} of {len(status)} runs were interrupted; only {record.owner}, who ran it, can resume them"
    return f"{cut} of {len(status)} runs were interrupted: resume them on the Train page"


def no_figures_text(results: summaries.Results) -> str:
    """What the page says while no run has finished: interrupted runs wait for a Resume, not for time."""
    note = interrupted_note(results)
    if note:
        return f"No run of this experiment has finished yet: {note}, and the figures appear as they finish."
    return "No run of this experiment has finished yet: figures appear as runs finish (see the Train page)."


def show_headline(head: verdicts.Headline | None, warnings: list[str]) -> None:
    """The answer first: green for yes, red for no, amber for can't tell; then what makes the answer unsound."""
    if head is not None:
        box = {"yes": st.success, "no": st.error}.get(head.answer, st.warning)
        box(f"**Did the synthetic images beat every cheap control?** {head.sentence}")
        rows = [
            {
                "against": opponent,
                f"Δ {verdicts.METRIC_WORDS.get(head.metric, head.metric)} (points)": _points(c.diff),
                "95% interval": f"[{_points(c.ci_low)}, {_points(c.ci_high)}]",
                "verdict": experiments.verdict_word(c),
                **{
                    f"Δ {verdicts.METRIC_WORDS.get(m, m)}": _points(head.others[m][opponent].diff)
                    for m in head.others
                    if opponent in head.others[m]
                },
            }
            for opponent, c in head.against.items()
        ]
        if rows:
            st.dataframe(pd.DataFrame(rows), hide_index=True)
        st.caption(
            f"{head.mix!r} against the real baseline and every control, on {head.metric.replace('_', ' ')} (chosen "
            "from the dataset before the runs: minority recall when classes were cut, else macro-F1). Yes needs "
            "an interval above zero against each of them; the best control is never picked afterwards."
        )
    for warning in warnings:
        st.warning(f"{warning[0].upper()}{warning[1:]}.")


def _points(value: float) -> str:
    return f"{100 * value:+.1f}" if np.isfinite(value) else "—"


def results_frame(results: summaries.Results) -> pd.DataFrame:
    """One row per mix, in words and percentage points: verdicts, differences with their 95% intervals, means.

    The same numbers as :func:`engine.experiments.results_table` (the CSV export), rounded for reading.
    """
    summary, status = results.summary, results.status
    minority = [experiments.MINORITY_RECALL] if summary.minority else []
    compared = [*minority, *experiments.COMPARED]
    rows = []
    for mix in summary.mixes:
        baseline = mix.kind == "real"
        ids = [run_id for label, _, run_id in summary.experiment.run_ids if label == mix.label]
        cut = sum(status.get(run_id) == "interrupted" for run_id in ids)
        finished = f"{mix.runs_done}/{mix.runs_total}" + (f" ({cut} interrupted)" if cut else "")
        row: dict[str, object] = {"mix": mix.label, "finished runs": finished}
        for metric in compared:
            comp = mix.comparisons.get(metric)
            row[f"verdict: {verdicts.METRIC_WORDS[metric]}"] = (
                experiments.verdict_word(comp) if comp else ("baseline" if baseline else "waiting for runs")
            )
        row["synthetic or augmented share"] = f"{100 * mix.synthetic_share:.0f}%" if mix.runs_done else "—"
        for metric in compared:
            comp = mix.comparisons.get(metric)
            row[f"Δ {verdicts.METRIC_WORDS[metric]} (points, 95% interval)"] = (
                f"{_points(comp.diff)} [{_points(comp.ci_low)}, {_points(comp.ci_high)}]"
                if comp and experiments.measured(comp)
                else ("baseline" if baseline else "—")
            )
        for metric in ("accuracy", "balanced_accuracy", "f1_macro"):
            mean = mix.means[metric]
            row[f"{verdicts.METRIC_WORDS[metric]} (%)"] = (
                "—" if np.isnan(mean) else f"{100 * mean:.1f} ± {100 * mix.stds[metric]:.1f}"
            )
        rows.append(row)
    return pd.DataFrame(rows)


def _ticks(summary: ExperimentSummary) -> list[str]:
    return [f"{n} ★" if n in summary.minority else n for n in summary.class_names]


def per_class_figure(summary: ExperimentSummary, metrics: RunMetrics, score: str) -> go.Figure:
    """Per-class recall or F1 per mix (mean over seeds, std as error bars); ★ marks minority classes."""
    fig = go.Figure()
    for i, mix in enumerate(summary.mixes):
        values = np.array(
            [[getattr(c, score) for c in m.per_class] for (lab, _), m in metrics.items() if lab == mix.label]
        )
        if not len(values):
            continue
        fig.add_bar(
            x=_ticks(summary),
            y=values.mean(0),
            error_y={"array": values.std(0)},
            name=mix.label,
            marker_color=PALETTE[i % len(PALETTE)],
        )
    words = SCORE_WORDS.get(score, score)
    fig.update_layout(
        barmode="group",
        height=380,
        title=f"Per-class {score} (mean ± std over seeds; ★ minority)",
        margin={"t": 50, "b": 10},
        yaxis={"range": [0, 1.05], "tickformat": ".0%", "title": words},
        xaxis_title="class (★ = minority class)",
        legend_title_text="training mix",
        font=FONT,
    )
    fig.update_xaxes(type="category")
    return fig


def recall_gain_figure(summary: ExperimentSummary) -> go.Figure:
    """Per-class recall difference to the baseline for each mix, paired by seed."""
    fig = go.Figure()
    for i, mix in enumerate(summary.mixes):
        if mix.recall_diff:
            fig.add_bar(
                x=_ticks(summary),
                y=[100 * d for d in mix.recall_diff],
                error_y={"array": [100 * d for d in mix.recall_diff_std]},
                name=mix.label,
                marker_color=PALETTE[i % len(PALETTE)],
            )
    fig.add_hline(y=0, line_color="#888")
    fig.update_layout(
        barmode="group",
        height=360,
        title="Recall gain over the real baseline (± std over seeds; ★ minority)",
        margin={"t": 50, "b": 10},
        yaxis_title="recall change (percentage points)",
        xaxis_title="class (★ = minority class)",
        legend_title_text="training mix",
        font=FONT,
    )
    fig.update_xaxes(type="category")
    return fig


def runs_table(results: summaries.Results) -> pd.DataFrame:
    """One row per run of the experiment: mix, seed, id, status and test accuracy."""
    status, metrics = results.status, results.metrics
    rows = [
        {
            "mix": label,
            "seed": seed,
            "run": run_id,
            "status": status.get(run_id, ""),
            "test accuracy": round(metrics[(label, seed)].accuracy, 3) if (label, seed) in metrics else None,
        }
        for label, seed, run_id in results.summary.experiment.run_ids
    ]
    return pd.DataFrame(rows)


def classifier_download(results: summaries.Results) -> None:
    """A finished run's classifier as a download: safetensors weights, config.json, load.py and a README."""
    status = results.status
    done = [(lab, seed, rid) for lab, seed, rid in results.summary.experiment.run_ids if status[rid] == "done"]
    if not done:
        return
    labels = {rid: f"{lab} · seed {seed} · {rid}" for lab, seed, rid in done}
    left, right = st.columns([2, 1], vertical_alignment="bottom")
    run_id = left.selectbox("Classifier to download", list(labels), format_func=labels.__getitem__, key="export_run")
    right.download_button(
        "Download the classifier",
        lambda: exports.classifier_zip(run_id),  # built when clicked, not on every rerun
        f"classifier-{run_id}.zip",
        "application/zip",
        key=f"download_model-{run_id}",
        help="model.safetensors, config.json (model, input size, normalisation, class names) and load.py",
    )


def summed_confusion_figure(summary: ExperimentSummary, metrics: RunMetrics, label: str) -> go.Figure | None:
    """The confusion matrix of one mix summed over its finished seeds, or None when none finished."""
    mats = [np.array(m.confusion) for (lab, _), m in metrics.items() if lab == label]
    if not mats:
        return None
    title = f"{label}: confusion, summed over {len(mats)} seed(s)"
    return confusion_figure(np.sum(mats, axis=0), summary.class_names, title)


def confusion_figure(matrix: np.ndarray, names: tuple[str, ...], title: str) -> go.Figure:
    fig = px.imshow(
        matrix,
        x=list(names),
        y=list(names),
        text_auto=True,
        color_continuous_scale="Blues",
        labels={"x": "predicted class", "y": "true class", "color": "test images"},
        title=title,
    )
    fig.update_xaxes(type="category")
    fig.update_yaxes(type="category")
    fig.update_layout(height=420, margin={"t": 50, "b": 10}, coloraxis_showscale=False, font=FONT)
    return fig


def curve_figure(curves: dict[str, Metrics], class_index: int, kind: str) -> go.Figure:
    """ROC or PR curve of one class (one-vs-rest) for each named run."""
    fig = go.Figure()
    for i, (name, metrics) in enumerate(curves.items()):
        curve = (metrics.roc if kind == "ROC" else metrics.pr)[class_index]
        area = "AUC" if kind == "ROC" else "AP"
        label = f"{name} ({area} {curve.auc:.3f})" if curve.auc is not None else name
        fig.add_scatter(x=curve.x, y=curve.y, name=label, mode="lines", line={"color": PALETTE[i % len(PALETTE)]})
    axes = (
        ("false positive rate (other classes taken for it)", "true positive rate (recall)")
        if kind == "ROC"
        else ("recall (share of the class found)", "precision (share of its predictions right)")
    )
    fig.update_layout(
        height=380,
        title=f"{kind} curve",
        xaxis_title=axes[0],
        yaxis_title=axes[1],
        margin={"t": 50, "b": 10},
        legend={"orientation": "h", "y": -0.25},
        font=FONT,
    )
    return fig


def dose_figure(summary: ExperimentSummary, metric: str) -> go.Figure:
    """Metric against the synthetic share of the training set: one coloured point per mix (mean ± std over
    its finished seeds), named in the legend; mixes at the same share sit side by side, and a dotted line joins
    the baseline and the synthetic mixes in order of their share."""
    done = sorted((m for m in summary.mixes if m.runs_done), key=lambda m: m.synthetic_share)
    span = max([100 * m.synthetic_share for m in done] + [1.0])
    step = 0.03 * span  # points at one share are spread by a few pixels, not by a misleading amount
    fig = go.Figure()
    placed: dict[float, int] = {}
    for i, mix in enumerate(summary.mixes):
        if not mix.runs_done:
            continue
        share = round(100 * mix.synthetic_share, 1)
        nudge = placed.get(share, 0)
        placed[share] = nudge + 1
        fig.add_scatter(
            x=[share + step * nudge],
            y=[100 * mix.means[metric]],
            error_y={"array": [100 * mix.stds[metric]]},
            mode="markers",
            marker={"size": 12, "color": PALETTE[i % len(PALETTE)]},
            name=f"{mix.label} ({mix.runs_done} run{'s' if mix.runs_done != 1 else ''})",
            hovertemplate=f"{mix.label}: {share:g}% synthetic or augmented<br>%{{y:.1f}}%<extra></extra>",
        )
    line = [m for m in done if m.kind in ("real", *SYNTHETIC_KINDS)]
    if len(line) > 1:
        fig.add_scatter(
            x=[round(100 * m.synthetic_share, 1) for m in line],
            y=[100 * m.means[metric] for m in line],
            mode="lines",
            line={"color": "#999", "dash": "dot"},
            name="real → more synthetic",
            hoverinfo="skip",
        )
    words = verdicts.METRIC_WORDS.get(metric, metric)
    fig.update_layout(
        height=380,
        title=f"Dose-response: {words} against the synthetic share",
        xaxis_title="synthetic or augmented images in the training set (%)",
        yaxis_title=f"{words} on the real test set (%)",
        legend_title_text="training mix",
        margin={"t": 50, "b": 10},
        font=FONT,
    )
    fig.update_xaxes(range=[-0.06 * span, span + step * (max(placed.values(), default=1) + 1)])
    return fig


# The page's tabs: only the open one runs and is drawn ------------------------------------------------------------

TABS = ["Per class", "Confusion matrices", "ROC and PR curves", "Dose-response"]


def per_class_tab(results: summaries.Results, other: str) -> None:
    """Per-class recall or F1 of every mix, and each mix's recall gain per class over the baseline."""
    summary, metrics, state = results.summary, results.metrics, state_of(results)
    score = st.radio(
        "Per-class score",
        ["recall", "f1"],
        horizontal=True,
        help="Recall: the share of a class's test images the model finds; F1 also counts how often its predictions "
        "of that class are right.",
    )
    st.plotly_chart(memo((state, "class", score), per_class_figure, summary, metrics, score), key="per_class")
    if any(m.recall_diff for m in summary.mixes):
        st.plotly_chart(memo((state, "gain"), recall_gain_figure, summary), key="gain")
    else:
        st.caption(
            "The recall gain per class appears once a mix and the real baseline have finished a run of one seed."
        )


def confusion_tab(results: summaries.Results, other: str) -> None:
    """The baseline's and the chosen mix's confusion matrices, summed over seeds."""
    summary, metrics, state = results.summary, results.metrics, state_of(results)
    for column, label in zip(st.columns(2), dict.fromkeys(["real", other]), strict=False):
        figure = memo((state, "cm", label), summed_confusion_figure, summary, metrics, label)
        if figure is not None:
            column.plotly_chart(figure, key=f"cm-{label}")
    st.caption("Confusion matrix: rows are the true classes, columns what the model predicted; the diagonal is right.")


def curves_tab(results: summaries.Results, other: str) -> None:
    """ROC and PR curves of one class for the runs picked in the runs table (the baseline and the mix by default)."""
    summary, metrics, state = results.summary, results.metrics, state_of(results)
    class_index = st.selectbox(
        "Class for ROC / PR",
        range(len(summary.class_names)),
        format_func=summary.class_names.__getitem__,
        help="ROC and precision-recall curves treat this class against all the others, at every confidence threshold.",
    )
    run_table = runs_table(results)
    status = st.multiselect("Runs: filter by status", sorted(run_table["status"].unique()))
    shown = run_table[run_table["status"].isin(status)] if status else run_table
    picked = st.dataframe(shown, hide_index=True, on_select="rerun", selection_mode="multi-row", key="runs")
    rows = shown.iloc[picked.selection.rows] if picked.selection.rows else shown[shown["mix"].isin(["real", other])]
    chosen = {f"{r.mix} s{r.seed}": metrics[(r.mix, r.seed)] for r in rows.itertuples() if (r.mix, r.seed) in metrics}
    st.caption(
        "Select runs in the table to overlay their curves; by default the baseline and the chosen mix. AUC: the area "
        "under the ROC curve (1 = perfect, 0.5 = guessing); AP: average precision, the area under the PR curve."
    )
    for column, kind in zip(st.columns(2), ["ROC", "PR"], strict=True):
        figure = memo((state, kind, tuple(chosen), class_index), curve_figure, chosen, class_index, kind)
        column.plotly_chart(figure, key=f"curve-{kind}")


def dose_tab(results: summaries.Results, other: str) -> None:
    """The chosen score against the synthetic share of each mix's training set."""
    summary, state = results.summary, state_of(results)
    dose_metric = st.selectbox(
        "Dose-response metric",
        ["accuracy", "f1_macro", "balanced_accuracy"],
        format_func=verdicts.METRIC_WORDS.__getitem__,
        help="Dose-response: how the score changes as a larger share of the training set is synthetic.",
    )
    st.plotly_chart(memo((state, "dose", dose_metric), dose_figure, summary, dose_metric), key="dose")
    st.caption(
        "Each mix is one dose; mixes at the same share (the controls add no generated images) are drawn side by "
        "side, and hovering a point shows its exact share. To see a trend, train Replace mixes (50/50, 30/70, "
        "synthetic only) alongside Add on the Train page."
    )
