"""Generate page: train a generator on your training split, make a filtered synthetic set, inspect it."""

import streamlit as st

from engine.synth import pipeline
from ui.generate_views import gan_form, generate_form, generate_panel, set_browser
from ui.jobs_panel import get_runner, owner_token
from ui.state import current_dataset, describe

st.title("Generate")
dataset = current_dataset()
if dataset is None:
    st.stop()
owner = owner_token()
st.caption(f"Dataset: {describe(dataset)}. Generators learn from the training split only (after imbalance).")

with st.expander("1 · Train a generator on this training split", expanded=True):
    try:
        cfg = gan_form(dataset)
    except ValueError as err:  # config errors name the field and the accepted values
        st.error(str(err))
        cfg = None
    if cfg is not None:
        pipeline.submit_training(get_runner(), cfg, dataset, owner=owner)
        st.toast("Generator training queued: curves and samples appear below.")

generators = pipeline.list_generators(dataset)
with st.expander("2 · Generate a synthetic set", expanded=bool(generators)):
    if not generators:
        st.caption("Train a generator first: stored generators for this dataset appear here.")
    else:
        try:
            request = generate_form(dataset, generators)
        except pipeline.GenerateError as err:
            st.error(str(err))
            request = None
        if request is not None:
            pipeline.submit_generation(get_runner(), request, dataset, owner=owner)
            st.toast("Generation queued.")

generate_panel(owner)
st.subheader("Synthetic sets")
set_browser(dataset)
