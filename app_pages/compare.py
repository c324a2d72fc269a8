"""Compare page: did a mix help? Intervals and verdicts against the real baseline, per class too."""

import json

import pandas as pd
import streamlit as st

from engine import experiments, owners
from ui import compare_views as views

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
results = views.results_of(exp_id)  # computed once per state of the runs, for every session
summary = results.summary
cfg = summary.experiment.config
method = next((c.method for m in summary.mixes for c in m.comparisons.values()), "")
st.caption(
    f"Seeds {list(cfg.seeds)} · minority classes (★): {', '.join(summary.minority) or 'none'} · "
    f"dataset {summary.experiment.dataset_key[:24]}"
)

views.show_headline(results.headline, views.warnings_of(results))
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
st.dataframe(views.results_frame(results), hide_index=True)
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

if not results.metrics:
    st.info(views.no_figures_text(results))
    st.stop()
mixes = [m.label for m in summary.mixes if m.runs_done]
other = st.selectbox("Mix shown against the baseline", [m for m in mixes if m != "real"] or mixes)
# Only the chosen tab runs and is drawn: seven charts at once were most of the page's cost in the browser.
tabs = st.tabs(views.TABS, key="compare_tab", on_change="rerun")
for tab, show in zip(tabs, (views.per_class_tab, views.confusion_tab, views.curves_tab, views.dose_tab), strict=True):
    if tab.open:
        with tab:
            show(results, other)
bundle = json.dumps(experiments.export_bundle(summary), indent=1, default=str)
cols = st.columns(2)
cols[0].download_button("Results as CSV", table.to_csv(index=False), f"{exp_id}.csv", "text/csv")
cols[1].download_button("JSON bundle (re-run with the CLI)", bundle, f"{exp_id}.json", "application/json")
views.classifier_download(results)
