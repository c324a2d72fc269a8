"""Generate page, Stable Diffusion mode: model, prompts per class, counts, estimate, preview and generate.

Plain widgets rather than a form, so the time estimate and the prompt preview follow every change;
their values survive visits to other pages. Returns what the user asked for; the page submits the
jobs. Also the list of unfinished requests, with Resume (returned to the page) and Discard.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import streamlit as st

from engine import store
from engine.datasets import LabDataset
from engine.jobs import FINISHED, JobRunner
from engine.synth import make_sets, sd_requests, stable_diffusion
from engine.synth.tiny_sd import build_tiny_pipeline
from ui.state import keep_widget_values

OTHER = "Other: a Hugging Face id or a local folder"
# Widgets whose values survive a visit to another page (resuming a request needs the same settings).
KEPT = (
    "sd_model_choice",
    "sd_model_other",
    "sd_mode",
    "sd_strength",
    "sd_templates",
    "sd_negative",
    "sd_steps",
    "sd_guidance",
    "sd_size",
    "sd_batch",
    "sd_seed",
    "sd_fill",
    "sd_n",
    "sd_threshold",
    "sd_dup",
    "sd_classes",
    "sd_name",
)
DEMO_FOLDER = "pipelines/tiny-sd"


@dataclass(frozen=True)
class SDRequest:
    """What the buttons asked for: a preview or a whole set, with its config."""

    action: str  # "preview" or "generate"
    config: stable_diffusion.SDConfig


def keep_sd_settings(dataset: LabDataset) -> None:
    """Keep the form's settings across visits to other pages (call before drawing it): a stopped request
    is resumed by asking for the same settings. Classes kept from another dataset are dropped."""
    keep_widget_values(*KEPT)
    if "sd_classes" in st.session_state:
        st.session_state["sd_classes"] = [c for c in st.session_state["sd_classes"] if c in dataset.class_names]


def _apply_preset() -> None:
    """On a model change: the preset's suggested steps, guidance and size go into the widgets."""
    preset = stable_diffusion.PRESETS.get(st.session_state.get("sd_model_choice", ""))
    if preset:
        st.session_state["sd_steps"] = int(preset["steps"])
        st.session_state["sd_guidance"] = float(preset["guidance"])
        st.session_state["sd_size"] = int(preset["size"])


def _make_demo_pipeline() -> None:
    folder = store.home() / DEMO_FOLDER
    build_tiny_pipeline(folder)
    st.session_state["sd_model_other"] = DEMO_FOLDER  # relative paths start in the workspace: no server path shown
    st.session_state["sd_size"], st.session_state["sd_steps"] = 64, 4


def _model_field() -> str:
    choices = [*stable_diffusion.PRESETS, OTHER]
    if "sd_steps" not in st.session_state:  # first visit: the first preset's settings
        st.session_state["sd_model_choice"] = choices[0]
        _apply_preset()
    choice = st.selectbox("Model", choices, key="sd_model_choice", on_change=_apply_preset)
    if choice != OTHER:
        preset = stable_diffusion.PRESETS[choice]
        st.caption(f"{preset['note']}; its suggested steps, guidance and size are filled in below.")
        return choice
    model = st.text_input(
        "Hugging Face id or pipeline folder on the server",
        key="sd_model_other",
        help="A relative folder path starts in the workspace; other folders must lie where the server allows",
    )
    st.button(
        "Make a tiny offline demo pipeline (random weights: it draws noise, but runs every step)",
        on_click=_make_demo_pipeline,
        key="sd_demo",
    )
    return model


def _prompt_editor(dataset: LabDataset) -> tuple[tuple[str, str], ...]:
    st.caption(
        "Describe vague class names (a class named 'Ginger' can draw a person): the description replaces {class}."
    )
    kept = st.session_state.setdefault("sd_prompts_kept", {})  # the editor's own state is dropped on other pages
    descriptions = [kept.get(name, "") for name in dataset.class_names]
    table = pd.DataFrame({"class": list(dataset.class_names), "description": descriptions})
    edited = st.data_editor(table, disabled=["class"], hide_index=True, key="sd_prompts")
    pairs = [(str(c), str(d or "").strip()) for c, d in zip(edited["class"], edited["description"], strict=True)]
    kept.update(dict(pairs))
    return tuple((c, d) for c, d in pairs if d)


def sd_form(dataset: LabDataset) -> SDRequest | None:
    """The Stable Diffusion settings; returns a request when Preview or Generate is pressed."""
    d = stable_diffusion.SDConfig("a/b")
    model = _model_field()
    cols = st.columns([2, 3])
    mode = cols[0].radio(
        "Start from",
        stable_diffusion.MODES,
        horizontal=True,
        key="sd_mode",
        help="text2img: from noise and the prompt alone; img2img: from a real training image of the class, "
        "redrawn under the prompt",
    )
    strength = cols[1].slider(
        "img2img strength (0 copies the source, 1 ignores it)", 0.05, 1.0, d.strength, key="sd_strength"
    )
    templates = st.text_area(
        "Prompt templates, one per line (one is drawn per image)", "\n".join(d.templates), key="sd_templates"
    )
    class_prompts = _prompt_editor(dataset)
    negative = st.text_input(
        "Negative prompt", d.negative_prompt, key="sd_negative", help="What the images should not show"
    )
    cols = st.columns(5)
    steps = cols[0].number_input(
        "Steps", 1, 1000, key="sd_steps", help="Denoising steps per image: more steps, more detail, slower"
    )
    guidance = cols[1].number_input(
        "Guidance",
        0.0,
        50.0,
        key="sd_guidance",
        help="Classifier-free guidance: how closely images follow the prompt (0 for sd-turbo; higher = more "
        "literal, less varied)",
    )
    size = cols[2].number_input("Output size (px)", 16, 2048, step=8, key="sd_size")
    batch = cols[3].number_input("Batch size", 1, 256, d.batch_size, key="sd_batch")
    seed = cols[4].number_input("Seed", 0, 2**31 - 1, d.seed, key="sd_seed")
    fill = st.radio("How many", ["N per class", "Fill every class up to the largest"], horizontal=True, key="sd_fill")
    cols = st.columns(3)
    per_class = cols[0].number_input("N per class", 1, 100_000, d.per_class, key="sd_n")
    threshold = cols[1].slider(
        "Keep when the real-data classifier is at least this sure (0 = off)",
        0.0,
        1.0,
        0.0,
        key="sd_threshold",
        help="A classifier trained on the real images keeps a generated image only when it gives the intended "
        "class at least this probability",
    )
    dup = cols[2].slider(
        "Reject near-duplicates above this similarity",
        0.5,
        1.0,
        d.duplicate_threshold,
        key="sd_dup",
        help="Two images shrunk to 16 px in grey, compared after removing their mean brightness (1 = identical)",
    )
    classes = st.multiselect("Only these classes (empty = all)", dataset.class_names, key="sd_classes")
    name = st.text_input("Set name (optional)", key="sd_name")
    try:
        cfg = stable_diffusion.SDConfig(
            model=model,
            mode=mode,
            templates=tuple(templates.splitlines()),
            class_prompts=class_prompts,
            negative_prompt=negative,
            guidance=float(guidance),
            steps=int(steps),
            strength=float(strength),
            size=int(size),
            batch_size=int(batch),
            per_class=0 if fill.startswith("Fill") else int(per_class),
            classes=tuple(classes),
            threshold=float(threshold),
            duplicate_threshold=float(dup),
            seed=int(seed),
            name=name,
        )
        wanted = make_sets.wanted_counts(dataset, cfg.per_class, cfg.classes)
    except (stable_diffusion.SDConfigError, make_sets.GenerateError) as err:
        st.error(str(err))
        return None
    first = next((n for n in dataset.class_names if not cfg.classes or n in cfg.classes), dataset.class_names[0])
    st.caption(
        f"Example prompt for {first!r}: "
        f"“{stable_diffusion.prompt_for(cfg, first, stable_diffusion.image_seed(cfg.seed, 0, 0))}”"
    )
    seconds = stable_diffusion.estimate_seconds(cfg, int(wanted.sum()))
    estimate = (
        f"about {seconds / 60:.1f} min on this server (measured rate)"
        if seconds is not None
        else "run a preview to measure the rate here"
    )
    st.info(
        f"{int(wanted.sum()):,} images wanted; estimated time: {estimate}. "
        f"Filters may ask for up to {cfg.max_factor}× more."
    )
    cols = st.columns(2)
    if cols[0].button("Preview one image per class", key="sd_preview"):
        return SDRequest("preview", cfg)
    if cols[1].button("Generate set", type="primary", key="sd_generate"):
        return SDRequest("generate", cfg)
    return None


def unfinished_requests(dataset: LabDataset, runner: JobRunner) -> stable_diffusion.SDConfig | None:
    """Requests stopped part-way: what they wrote, Resume and Discard; returns the request to resume, if any.

    Both buttons are off while a job works on the request (this user's or another's): discarding then
    would delete images under a running job.
    """
    pending = sd_requests.partial_requests()
    if not pending:
        return None
    busy = {j.tag for j in runner.list(events=False) if j.status not in FINISHED}
    with st.expander(f"{len(pending)} unfinished Stable Diffusion request(s): resume or discard them"):
        for request in pending:
            cols = st.columns([4, 1, 1])
            working = request["key"] in busy
            other = request["dataset"] != dataset.key
            note = " · in progress" if working else " · made for another dataset" if other else ""
            cols[0].caption(f"{request['model']} · {request['mode']} · {request['images']} images written{note}")
            if cols[1].button("Resume", key=f"resume-{request['key']}", disabled=working or other):
                return request["config"]
            if cols[2].button("Discard", key=f"discard-{request['key']}", disabled=working):
                sd_requests.discard_partial(request["key"])
                st.rerun()
    return None
