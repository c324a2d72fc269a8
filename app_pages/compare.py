"""Compare page: did a mix help? Intervals and verdicts against the real baseline, per class too."""

import json

import pandas as pd
import streamlit as st

from engine import experiments
from ui import compare_views as views

st.title("Compare")
records = experiments.list_experiments()
if not records:
    st.info("No experiments yet: start one on the Train page (or with `python -m engine experiment`).")
    st.stop()

labels = {r.id: f"{r.id} · {r.config.name or r.config.dataset.source.kind} · {r.config.model}" for r in records}
exp_id = st.selectbox("Experiment", list(labels), format_func=labels.__getitem__, key="compare_experiment")
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
table = pd.DataFrame(experiments.results_table(summary))
st.dataframe(table, hide_index=True)
st.caption(
    f"Intervals: {method or 'need the baseline and a mix with finished runs'}. Verdict: *helps* when the "
    "whole 95% interval of the difference is above zero, *hurts* when below, else *no detectable effect*."
    + (
        " *minority_recall*: the mean recall of the minority classes (★), with the same interval — did the "
        "minority classes gain?"
        if summary.minority
        else ""
    )
)

metrics = views.run_metrics(summary)
if not metrics:
    st.info("No run of this experiment has finished yet: figures appear as runs finish (see the Train page).")
    st.stop()
score = st.radio("Per-class score", ["recall", "f1"], horizontal=True)
st.plotly_chart(views.per_class_figure(summary, metrics, score), key="per_class")
st.plotly_chart(views.recall_gain_figure(summary), key="gain")

mixes = [m.label for m in summary.mixes if m.runs_done]
left, right = st.columns(2)
other = left.selectbox("Mix shown against the baseline", [m for m in mixes if m != "real"] or mixes)
class_index = right.selectbox(
    "Class for ROC / PR", range(len(summary.class_names)), format_func=summary.class_names.__getitem__
)
for column, label in zip(st.columns(2), dict.fromkeys(["real", other]), strict=False):
    figure = views.summed_confusion_figure(summary, metrics, label)
    if figure is not None:
        column.plotly_chart(figure, key=f"cm-{label}")

run_table = views.runs_table(summary, metrics)
status = st.multiselect("Runs: filter by status", sorted(run_table["status"].unique()))
shown = run_table[run_table["status"].isin(status)] if status else run_table
picked = st.dataframe(shown, hide_index=True, on_select="rerun", selection_mode="multi-row", key="runs")
rows = shown.iloc[picked.selection.rows] if picked.selection.rows else shown[shown["mix"].isin(["real", other])]
chosen = {f"{r.mix} s{r.seed}": metrics[(r.mix, r.seed)] for r in rows.itertuples() if (r.mix, r.seed) in metrics}
st.caption("Select runs in the table to overlay their curves; by default the baseline and the chosen mix.")
for column, kind in zip(st.columns(2), ["ROC", "PR"], strict=True):
    column.plotly_chart(views.curve_figure(chosen, class_index, kind), key=f"curve-{kind}")

st.plotly_chart(
    views.dose_figure(summary, st.selectbox("Dose-response metric", ["accuracy", "f1_macro", "balanced_accuracy"])),
    key="dose",
)
bundle = json.dumps(experiments.export_bundle(summary), indent=1, default=str)
cols = st.columns(2)
cols[0].download_button("Results as CSV", table.to_csv(index=False), f"{exp_id}.csv", "text/csv")
cols[1].download_button("JSON bundle (re-run with the CLI)", bundle, f"{exp_id}.json", "application/json")
