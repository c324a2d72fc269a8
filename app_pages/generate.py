"""Generate page: train a generator on the training split or prompt Stable Diffusion; make a set, inspect it."""

import streamlit as st

from engine import tasks
from engine.synth import gan, generators, make_sets
from ui.generate_views import generate_panel, set_browser
from ui.generator_forms import ddpm_form, gan_form, generate_form, stopped_generators
from ui.jobs_panel import get_runner, owner_token
from ui.sd_views import keep_sd_settings, sd_form, unfinished_requests
from ui.state import current_dataset, describe, keep_widget_values
from ui.submit import started

FAMILIES = ("GAN", "Small diffusion model", "Stable Diffusion")

st.title("Generate")
dataset = current_dataset()
if dataset is None:
    st.stop()
owner = owner_token()
keep_widget_values("gen_family")
keep_sd_settings(dataset)
st.caption(f"Dataset: {describe(dataset)}. Generators learn from the training split only (after imbalance).")
family = st.radio("Generator family", FAMILIES, horizontal=True, key="gen_family")

if family == "Stable Diffusion":
    with st.expander("Stable Diffusion (diffusers): prompts per class, text-to-image or img2img", expanded=True):
        request = sd_form(dataset)
    resume = unfinished_requests(dataset, get_runner())
    if resume is not None and started(
        lambda: tasks.submit_sd_generation(get_runner(), resume, dataset, owner=owner),
        "Resumed: the request continues where it stopped.",
    ):
        st.rerun()
    if request is not None and request.action == "preview":
        started(
            lambda: tasks.submit_sd_preview(get_runner(), request.config, dataset, owner=owner),
            "Preview queued: one image per class appears below.",
        )
    elif request is not None:
        started(
            lambda: tasks.submit_sd_generation(get_runner(), request.config, dataset, owner=owner),
            "Generation queued: images are written as they come; a stopped request resumes.",
        )
else:
    with st.expander("1 · Train a generator on this training split", expanded=True):
        try:
            cfg = gan_form(dataset) if family == "GAN" else ddpm_form(dataset)
        except ValueError as err:  # config errors name the field and the accepted values
            st.error(str(err))
            cfg = None
        if cfg is not None:
            started(
                lambda: tasks.submit_generator_training(get_runner(), cfg, dataset, owner=owner),
                "Generator training queued: curves and samples appear below.",
            )
        resume = stopped_generators(dataset, gan.GAN_KINDS if family == "GAN" else ("ddpm",))
        if resume is not None and started(
            lambda: tasks.submit_generator_training(get_runner(), resume, dataset, owner=owner),
            "Training queued: it goes on from its last checkpoint, or from the start after Re-run.",
        ):
            st.rerun()  # its Resume button turns off while the job runs

    stored = generators.list_generators(dataset)
    with st.expander("2 · Generate a synthetic set", expanded=bool(stored)):
        if not stored:
            st.caption("Train a generator first: stored generators for this dataset appear here.")
        else:
            try:
                generate = generate_form(dataset, stored)
            except make_sets.GenerateError as err:
                st.error(str(err))
                generate = None
            if generate is not None:
                started(
                    lambda: tasks.submit_generation(get_runner(), generate, dataset, owner=owner), "Generation queued."
                )

generate_panel(owner)
st.subheader("Synthetic sets")
set_browser(dataset)
