"""Compare page: did a mix help? Intervals and verdicts against the real baseline, per class too."""

import json

import pandas as pd
import streamlit as st

from engine import experiments, owners, verdicts
from ui import compare_views as views
from ui import figures

st.title("Compare")
records = experiments.list_experiments()
if not records:
    st.info("No experiments yet: start one on the Train page (or with `python -m engine experiment`).")
    st.stop()

me = owners.owner_name()
labels = {
    r.id: f"{r.id} · {r.config.name or r.config.dataset.source.kind} · {r.config.model}"
    + ("" if r.owner == me else f" · by {r.owner}")
    for r in records
}
exp_id = st.selectbox("Experiment", list(labels), format_func=labels.__getitem__, key="compare_experiment")
chosen_record = next(r for r in records if r.id == exp_id)
if chosen_record.owner == me or owners.current().admin:
    share = st.toggle(
        "Share with everyone on this server",
        chosen_record.shared,
        key=f"share_experiment-{exp_id}",
        help="Every user then sees this experiment's results here (read-only). Off by default.",
    )
    if share != chosen_record.shared:
        experiments.set_shared(exp_id, share)
else:
    st.caption(f"Shared by {chosen_record.owner} (read-only).")
summary = views.summary_of(exp_id)
cfg = summary.experiment.config
method = next((c.method for m in summary.mixes for c in m.comparisons.values()), "")
st.caption(
    f"Seeds {list(cfg.seeds)} · minority classes (★): {', '.join(summary.minority) or 'none'} · "
    f"dataset {summary.experiment.dataset_key[:24]}"
)

views.show_headline(*views.answer_of(exp_id))
short = experiments.unconverged_runs(summary)
if short:
    st.warning(
        f"{len(short)} run(s) were still improving when they reached the epoch limit "
        f"({', '.join(short[:4])}{'…' if len(short) > 4 else ''}). Mixes with more images take more steps per "
        "epoch, so differences may come from training length: raise Max epochs and run again."
    )
for note in experiments.shortfall_notes(summary):
    st.info(f"{note}.")
table = pd.DataFrame(experiments.results_table(summary))  # the CSV export: full precision
st.dataframe(views.results_frame(summary), hide_index=True)
st.caption(
    f"Intervals: {method or 'they need the baseline and a mix with finished runs'}. Verdict: *helps* when the "
    "whole 95% interval of the difference to the real baseline is above zero, *hurts* when below, else *no "
    "detectable effect*. Δ: the difference in percentage points (+2.0 = two points better than real only). "
    "Macro-F1: the mean over classes of F1, which balances recall and precision; balanced accuracy: the mean "
    "recall over classes, so small classes count as much as large ones."
    + (
        " Minority-class recall: the mean recall of the minority classes (★) — did the scarce classes gain?"
        if summary.minority
        else ""
    )
)

metrics = views.run_metrics(summary)
if not metrics:
    st.info(views.no_figures_text(exp_id))
    st.stop()
score = st.radio(
    "Per-class score",
    ["recall", "f1"],
    horizontal=True,
    help="Recall: the share of a class's test images the model finds; F1 also counts how often its predictions "
    "of that class are right.",
)
state = views.state_of(exp_id)  # figures are built once per state of the runs and shared by every session
st.plotly_chart(figures.memo((state, "class", score), views.per_class_figure, summary, metrics, score), key="per_class")
if any(m.recall_diff for m in summary.mixes):
    st.plotly_chart(figures.memo((state, "gain"), views.recall_gain_figure, summary), key="gain")
else:
    st.caption("The recall gain per class appears once a mix and the real baseline have finished a run of one seed.")

mixes = [m.label for m in summary.mixes if m.runs_done]
left, right = st.columns(2)
other = left.selectbox("Mix shown against the baseline", [m for m in mixes if m != "real"] or mixes)
class_index = right.selectbox(
    "Class for ROC / PR",
    range(len(summary.class_names)),
    format_func=summary.class_names.__getitem__,
    help="ROC and precision-recall curves treat this class against all the others, at every confidence threshold.",
)
for column, label in zip(st.columns(2), dict.fromkeys(["real", other]), strict=False):
    figure = figures.memo((state, "cm", label), views.summed_confusion_figure, summary, metrics, label)
    if figure is not None:
        column.plotly_chart(figure, key=f"cm-{label}")
st.caption("Confusion matrix: rows are the true classes, columns what the model predicted; the diagonal is right.")

run_table = views.runs_table(summary, metrics)
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
    figure = figures.memo((state, kind, tuple(chosen), class_index), views.curve_figure, chosen, class_index, kind)
    column.plotly_chart(figure, key=f"curve-{kind}")

dose_metric = st.selectbox(
    "Dose-response metric",
    ["accuracy", "f1_macro", "balanced_accuracy"],
    format_func=verdicts.METRIC_WORDS.__getitem__,
    help="Dose-response: how the score changes as a larger share of the training set is synthetic.",
)
st.plotly_chart(figures.memo((state, "dose", dose_metric), views.dose_figure, summary, dose_metric), key="dose")
st.caption(
    "Each mix is one dose; mixes at the same share (the controls add no generated images) are drawn side by side, "
    "and hovering a point shows its exact share. To see a trend, train Replace mixes (50/50, 30/70, synthetic "
    "only) alongside Add on the Train page."
)
bundle = json.dumps(experiments.export_bundle(summary), indent=1, default=str)
cols = st.columns(2)
cols[0].download_button("Results as CSV", table.to_csv(index=False), f"{exp_id}.csv", "text/csv")
cols[1].download_button("JSON bundle (re-run with the CLI)", bundle, f"{exp_id}.json", "application/json")
views.classifier_download(summary)
