"""Train page: choose model, hyperparameters, mixes and seeds; watch the runs train live."""

import streamlit as st

from engine import tasks
from engine.experiments import ExperimentError
from engine.mixes import MixError
from engine.synth import sets
from engine.training import TrainConfigError
from ui.cluster_views import cluster_panel
from ui.jobs_panel import get_runner, job_panel, owner_token
from ui.state import current_dataset, describe
from ui.submit import REFUSED
from ui.train_form import experiment_form, missing_split_sets_notice

st.title("Train")
dataset = current_dataset()
if dataset is None:
    st.stop()
st.caption(f"Dataset: {describe(dataset)}. Validation and test sets hold real images only.")
owner = owner_token()

try:
    cfg = experiment_form(dataset)
except (TrainConfigError, ExperimentError, MixError) as err:
    st.error(str(err))
    cfg = None
if cfg is not None:
    try:
        record = tasks.submit_experiment(get_runner(), cfg, dataset, owner=owner, synthetic=sets.load_set)
        splits = f" × {cfg.splits} splits" if cfg.splits > 1 else ""
        st.toast(f"Queued {len(record.run_ids)} runs ({len(cfg.mixes)} mixes × {len(cfg.seeds)} seeds{splits}).")
    except (ExperimentError, sets.SetError, *REFUSED) as err:  # e.g. the set was deleted; a limit reached
        st.error(f"Nothing started: {err}")
missing_split_sets_notice(dataset, owner)

cluster_panel(get_runner())  # Ray only: the nodes the jobs run on
job_panel(owner)
