"""Generate page helpers: generator and generation forms, the live job panel, and the set browser.

Forms return engine configs; the panel polls job snapshots from a fragment; the browser shows a
stored synthetic set per class with filter scores and lets images be rejected or restored by hand.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from engine import exports, owners, tasks
from engine.datasets import LabDataset
from engine.jobs import FINISHED, JobError, JobSnapshot, format_duration
from engine.synth import ddpm, gan, generators, make_sets, quality, sets
from engine.synth.events import GeneratorEvent
from engine.synth.filters import WEAK_RECALL
from ui.figures import grid_figure, split_grid, tile
from ui.jobs_panel import (
    STATUS_ICONS,
    get_runner,
    live_figure,
    poll_interval,
    progress_text,
    redraw_when_pace_changes,
)
from ui.state import DATASET_KEY

KIND_LABELS = {"cgan": "Conditional GAN (projection discriminator)", "wgan-gp": "WGAN-GP (gradient penalty)"}
GENERATOR_HELP = (
    "Conditional GAN: a generator draws images of a chosen class while a discriminator learns to tell them from "
    "real ones; it sees the class through a projection (a learned class vector multiplied into its features). "
    "WGAN-GP: the discriminator gives a realism score, kept smooth by a gradient penalty."
)
DDIM_HELP = "Denoising steps per image with DDIM, a fast sampler: more steps, cleaner images, slower"
GUIDANCE_HELP = (
    "Classifier-free guidance: how strongly images are pushed towards their class (1 = not at all; higher = "
    "more typical, less varied)"
)
PRESET_HELP = (
    "How long the generator trains. Quick: a first look, about a minute on 2 CPU cores. Standard: the default, "
    "enough to fill the minority classes of the built-in digits. Thorough: longer, for better images. The times "
    "shown are measured on this machine now"
)
ZERO = "0 = the preset's value"
DUPLICATE_HELP = (
    "Two images shrunk to 16 px in grey, compared after removing their mean brightness (1 = identical): a "
    "candidate this close to one already kept is dropped"
)


def _preset_labels(configs: dict[str, generators.GeneratorConfig], dataset: LabDataset) -> dict[str, str]:
    """Each preset's label with its steps and its time here, from a few steps timed on this machine."""
    labels = {}
    with st.spinner("Timing a few training steps on this machine…"):
        for name, cfg in configs.items():
            label = f"{name.capitalize()} · {cfg.steps:,} steps"
            try:
                labels[name] = f"{label} · about {format_duration(generators.estimate_seconds(cfg, dataset))} here"
            except (ValueError, RuntimeError):  # e.g. images the model does not accept: the form says why on Train
                labels[name] = label
    return labels


def ddpm_form(dataset: LabDataset) -> ddpm.DdpmConfig | None:
    """Small diffusion model: a preset with its time here, the rest under Advanced; a config when Train is pressed."""
    d = ddpm.DdpmConfig()
    labels = _preset_labels({p: ddpm.DdpmConfig(preset=p) for p in ddpm.PRESETS}, dataset)
    with st.form("ddpm_form"):
        st.caption(
            "A class-conditional UNet (diffusers UNet2DModel) trained with the DDPM loss on this training split "
            f"({dataset.resolution} px; the side must be a multiple of 4), sampled with DDIM and classifier-free "
            "guidance."
        )
        preset = st.radio(
            "Preset",
            ddpm.PRESETS,
            index=ddpm.PRESETS.index(ddpm.DEFAULT_PRESET),
            format_func=labels.__getitem__,
            horizontal=True,
            key="ddpm_preset",
            help=PRESET_HELP,
        )
        with st.expander("Advanced"):
            cols = st.columns(4)
            steps = cols[0].number_input(
                "Steps", 0, 1_000_000, 0, step=500, key="ddpm_steps", help=f"Training updates; more take longer. {ZERO}"
            )
            width = cols[1].number_input(
                "Width (multiple of 8)",
                0,
                256,
                0,
                step=8,
                key="ddpm_width",
                help=f"Channels of the network's first level; wider learns more detail but trains slower. {ZERO}",
            )
            batch = cols[2].number_input(
                "Batch size", 2, 4096, d.batch_size, key="ddpm_batch", help="Training images per update"
            )
            seed = cols[3].number_input(
                "Seed", 0, 2**31 - 1, d.seed, key="ddpm_seed", help="The same seed trains the same model"
            )
            cols = st.columns(4)
            lr = cols[0].number_input(
                "Learning rate", 1e-6, 1e-2, d.lr, format="%.5f", help="Step size of each update of the network"
            )
            p_uncond = cols[1].number_input(
                "Label dropout (for guidance)",
                0.0,
                0.9,
                d.p_uncond,
                help="Share of training images shown without their class, so the model also learns to draw without "
                "it; guidance needs this",
            )
            sample_steps = cols[2].number_input(
                "DDIM steps for the sample grids", 1, 1000, d.sample_steps, help=DDIM_HELP
            )
            guidance = cols[3].number_input("Guidance for the sample grids", 0.0, 20.0, d.guidance, help=GUIDANCE_HELP)
        if not st.form_submit_button("Train diffusion model", type="primary"):
            return None
    return ddpm.DdpmConfig(
        preset=str(preset),
        width=int(width),
        steps=int(steps),
        batch_size=int(batch),
        lr=float(lr),
        p_uncond=float(p_uncond),
        sample_steps=int(sample_steps),
        guidance=float(guidance),
        seed=int(seed),
    )


def gan_form(dataset: LabDataset) -> gan.GanConfig | None:
    """GAN: the kind, a preset with its time here, the rest under Advanced; a config when Train is pressed."""
    kind = st.selectbox(
        "Generator", gan.GAN_KINDS, format_func=KIND_LABELS.__getitem__, help=GENERATOR_HELP, key="gan_kind"
    )
    wgan = kind == "wgan-gp"
    d = gan.GanConfig(kind=kind)
    labels = _preset_labels({p: gan.GanConfig(kind=kind, preset=p) for p in gan.PRESETS}, dataset)
    with st.form("gan_form"):
        preset = st.radio(
            "Preset",
            gan.PRESETS,
            index=gan.PRESETS.index(gan.DEFAULT_PRESET),
            format_func=labels.__getitem__,
            horizontal=True,
            key="gan_preset",
            help=PRESET_HELP,
        )
        with st.expander("Advanced"):
            cols = st.columns(4)
            steps = cols[0].number_input(
                "Steps",
                0,
                200_000,
                0,
                step=500,
                key="gan_steps",
                help=f"Generator updates; more take longer. {ZERO}",
            )
            width = cols[1].number_input(
                "Width",
                0,
                256,
                0,
                key="gan_width",
                help="Channels of the generator (G) and discriminator (D); wider learns more detail but trains "
                f"slower. {ZERO}",
            )
            batch = cols[2].number_input(
                "Batch size", 8, 1024, d.batch_size, key="gan_batch", help="Images per update of G and of D"
            )
            seed = cols[3].number_input("Seed", 0, 2**31 - 1, d.seed, help="The same seed trains the same generator")
            cols = st.columns(4)
            lr_g = cols[0].number_input(
                "G learning rate", 0.0, 1e-2, 0.0, format="%.5f", help=f"Step size of the generator's updates. {ZERO}"
            )
            lr_d = cols[1].number_input(
                "D learning rate",
                0.0,
                1e-2,
                0.0,
                format="%.5f",
                help=f"Step size of the discriminator's updates. {ZERO}",
            )
            critic = cols[2].number_input(
                "D steps per G step (0 = default)",
                0,
                20,
                d.critic_steps,
                help="Discriminator updates per generator update; 0 = 1 for the conditional GAN, 5 for WGAN-GP",
            )
            gp = d.gp_lambda
            if wgan:  # the conditional GAN has no gradient penalty: not shown for it
                gp = cols[3].number_input(
                    "Gradient penalty λ",
                    0.0,
                    100.0,
                    d.gp_lambda,
                    help="How strongly WGAN-GP keeps the discriminator's scores smooth (how fast they may change "
                    "between images)",
                )
            policy = st.multiselect(
                "DiffAugment on D's inputs",
                ["translation", "cutout", "color"],
                default=[p for p in d.diffaugment.split(",") if p],
                help="Random shifts, cut-out patches and colour changes applied to real and generated images alike "
                "before the discriminator sees them, so it cannot memorise a small training set",
            )
            cols = st.columns(3)
            ema = cols[0].checkbox(
                "EMA of G weights (0.999)",
                d.ema > 0,
                help="Exponential moving average: samples come from an average of the generator's recent weights, "
                "steadier than the latest ones",
            )
            sn = cols[1].checkbox(
                "Spectral norm in D",
                d.spectral_norm,
                help="Limits how sharply each discriminator layer can react to its input, which keeps training stable",
            )
            conditional = True
            if wgan:  # the conditional GAN is conditional by definition
                conditional = cols[2].checkbox(
                    "Conditional",
                    True,
                    help="The generator is told which class to draw; an unconditional one draws any class and the "
                    "filter labels its images",
                )
        if not st.form_submit_button("Train generator", type="primary"):
            return None
    return gan.GanConfig(
        kind=kind,
        preset=str(preset),
        conditional=bool(conditional) or not wgan,
        z_dim=d.z_dim,
        width=int(width),
        steps=int(steps),
        batch_size=int(batch),
        lr_g=float(lr_g),
        lr_d=float(lr_d),
        critic_steps=int(critic),
        gp_lambda=float(gp),
        diffaugment=",".join(policy),
        ema=0.999 if ema else 0.0,
        spectral_norm=sn,
        sample_every=d.sample_every,
        seed=int(seed),
    )


def stopped_generators(dataset: LabDataset, kinds: tuple[str, ...]) -> generators.GeneratorConfig | None:
    """Generators of ``kinds`` stopped before their planned steps, and trainings interrupted when their
    process stopped, each with Resume (interrupted ones also with Re-run); the config to train."""
    stopped = [g for g in generators.list_generators(dataset) if g["kind"] in kinds and generators.is_stopped(g)]
    cut = [g for g in generators.list_interrupted(dataset) if g["kind"] in kinds]
    stopped = [g for g in stopped if g["id"] not in {c["id"] for c in cut}]  # its resume was interrupted: once
    if not stopped and not cut:
        return None
    busy = {j.tag for j in get_runner().list(events=False) if j.status not in FINISHED}  # one job per generator
    if stopped:
        st.markdown("**Stopped generators** (usable for sets as they are)")
    for origin in stopped:
        cols = st.columns([6, 1])
        planned = int(origin["config"]["steps"])
        cols[0].write(
            f"{origin['id']} · {KIND_LABELS.get(origin['kind'], 'small diffusion model')} · stopped at step "
            f"{int(origin['steps_done']):,} of {planned:,}"
        )
        label, key = "Resume", f"resume-gen-{origin['id']}"
        if cols[1].button(label, key=key, disabled=origin["id"] in busy, help=f"Train on to step {planned:,}"):
            return generators.config_from_origin(origin)
    return interrupted_generators([g for g in cut if g["id"] not in busy])


def interrupted_generators(cut: list[dict[str, Any]]) -> generators.GeneratorConfig | None:
    """Trainings interrupted when their process stopped, with the reason, Resume and Re-run; the config to train."""
    if not cut:
        return None
    st.markdown("**Interrupted trainings**")
    for status in cut:
        cols = st.columns([6, 1, 1])
        planned, step = int(status["config"]["steps"]), int(status.get("step", 0))
        where = (
            f"at step {step:,} of {planned:,}" if step else f"before its first checkpoint ({planned:,} steps planned)"
        )
        cols[0].write(
            f"{status['id']} · {KIND_LABELS.get(status['kind'], 'small diffusion model')} · interrupted {where}: "
            f"{status.get('reason') or 'its process stopped'}"
        )
        help_resume = f"Train on from step {step:,} to {planned:,}" if step else "Train from the start"
        if cols[1].button("Resume", key=f"resume-cut-{status['id']}", help=help_resume):
            return generators.config_from_origin(status)
        if cols[2].button("Re-run", key=f"rerun-cut-{status['id']}", help="Throw the checkpoint away, train anew"):
            generators.discard_interrupted(status["id"])
            return generators.config_from_origin(status)
    return None


def _generator_label(origin: dict[str, Any]) -> str:
    text = f"{origin['id']} · {origin['kind']} · {origin.get('seconds', 0):.0f} s of training"
    if generators.is_stopped(origin):
        text += f" · stopped at step {int(origin['steps_done']):,} of {int(origin['config']['steps']):,}"
    return text


def generate_form(dataset: LabDataset, stored: list[dict[str, Any]]) -> make_sets.GenerateConfig | None:
    """Which generator, how many images per class, and the filter threshold."""
    labels = {str(g["id"]): _generator_label(g) for g in stored}
    with st.form("generate_form"):
        generator = st.selectbox("Generator", list(labels), format_func=labels.__getitem__)
        fill = st.radio(
            "How many", ["Fill every class up to the largest", "N per class"], horizontal=True, key="gen_mode"
        )
        cols = st.columns(3)
        per_class = cols[0].number_input("N per class", 1, 100_000, 100, key="gen_n")
        threshold = cols[1].slider(
            "Keep when the real-data classifier is at least this sure (0 = off)",
            0.0,
            1.0,
            0.95,
            key="gen_threshold",
            help="A classifier trained on the real images keeps a synthetic image only when it gives the intended "
            "class at least this probability",
        )
        seed = cols[2].number_input("Noise seed", 0, 2**31 - 1, 0)
        cols = st.columns(3)
        dup = cols[0].slider(
            "Reject near-duplicates above this similarity",
            0.5,
            1.0,
            0.99,
            key="gen_dup",
            help=DUPLICATE_HELP,
        )
        sample_steps = cols[1].number_input(
            "DDIM steps (diffusion model)", 1, 1000, 50, key="gen_ddim_steps", help=DDIM_HELP
        )
        guidance = cols[2].number_input(
            "Guidance (diffusion model)", 0.0, 20.0, 2.0, key="gen_guidance", help=GUIDANCE_HELP
        )
        cols = st.columns(2)
        classes = cols[0].multiselect("Only these classes (empty = all)", dataset.class_names)
        candidates = cols[1].number_input(
            "Candidates per image wanted",
            1,
            200,
            20,
            key="gen_candidates",
            help="At most this many images are drawn per image the set should hold; raise it when the filter "
            "keeps few of a class (it costs time and memory).",
        )
        name = st.text_input("Set name (optional)")
        if not st.form_submit_button("Generate set", type="primary"):
            return None
    return make_sets.GenerateConfig(
        generator=generator,
        per_class=0 if fill.startswith("Fill") else int(per_class),
        classes=tuple(classes),
        threshold=float(threshold),
        seed=int(seed),
        name=name,
        duplicate_threshold=float(dup),
        sample_steps=int(sample_steps),
        guidance=float(guidance),
        candidates_per_image=int(candidates),
    )


LOSS_WORDS = {
    "d_loss": "discriminator loss",
    "g_loss": "generator loss",
    "gp": "gradient penalty",
    "loss": "denoising loss",
}


def _samples_figure(grid: np.ndarray, step: int) -> go.Figure:
    """A generator's samples at ``step`` (one row per class, the same noise each time) as a labelled grid."""
    rows = split_grid(grid, gan.SAMPLES_PER_CLASS)
    return grid_figure(rows, _row_names(len(rows)), f"Samples at step {step:,} (the same noise each time)")


def _loss_figure(rows: list[dict[str, float]]) -> go.Figure:
    fig = go.Figure()
    for key, words in LOSS_WORDS.items():
        if rows and key in rows[0]:
            fig.add_scatter(x=[r["step"] for r in rows], y=[r[key] for r in rows], name=words, mode="lines")
    fig.update_layout(
        height=300,
        title="Generator training losses",
        xaxis_title="training step",
        yaxis_title="loss (no unit)",
        legend={"orientation": "h", "y": -0.3},
        margin={"t": 40, "b": 10},
    )
    return fig


def _row_names(rows: int) -> list[str]:
    """The session dataset's class names for a sample grid of ``rows`` rows (one per class), else row numbers."""
    dataset = st.session_state.get(DATASET_KEY)
    names = list(dataset.class_names) if dataset is not None else []
    return names if len(names) == rows else [f"row {i + 1}" for i in range(rows)]


def _stop_buttons(column: Any, snap: JobSnapshot, owner: str) -> None:
    """Cancel (throw the job's work away) and, for generator training, Stop and keep."""
    keep = snap.status == "running" and tasks.keeps_on_stop(snap)
    if keep and column.button(
        "Stop and keep",
        key=f"keep-{snap.id}",
        help="Stop at the next step and store the generator as it is: usable for sets, and Resume continues it",
    ):
        _cancel(snap.id, owner, keep=True)
    if column.button("Cancel", key=f"cancel-{snap.id}", help="Stop and throw this job's work away"):
        _cancel(snap.id, owner, keep=False)


def _cancel(job_id: str, owner: str, *, keep: bool) -> None:
    try:
        tasks.cancel_job(get_runner(), job_id, owner=owner, keep=keep)
    except JobError as err:
        st.error(str(err))


def generate_panel(owner: str) -> None:
    """The live panel of the Generate page, polled at the pace its jobs need (every 2 s while one runs)."""
    every = poll_interval(owner, tasks.JobKind.GENERATE)
    st.fragment(_generate_panel, run_every=every)(owner, every)


def _generate_panel(owner: str, every: float | None) -> None:
    """This user's generator jobs: progress, cancel, live losses, the latest sample grid, warnings."""
    redraw_when_pace_changes(owner, tasks.JobKind.GENERATE, every)
    runner = get_runner()
    jobs = tasks.list_jobs(runner, tasks.JobKind.GENERATE, owner=owner)[-4:]
    if not jobs:
        st.caption("No generator jobs yet.")
        return
    done = {j.id for j in jobs if j.status in ("done", "stopped")}
    seen = st.session_state.get("generate_done")
    st.session_state["generate_done"] = done
    if seen is not None and done - seen:  # a new generator or set: redraw the forms and the set browser
        st.rerun(scope="app")
    for snap in reversed(jobs):
        cols = st.columns([4, 6, 2])
        cols[0].write(f"{STATUS_ICONS.get(snap.status, '')} {snap.title}")
        cols[1].progress(snap.progress, text=progress_text(snap))
        if snap.status not in FINISHED:
            _stop_buttons(cols[2], snap, owner)
        if snap.status == "stopped" and isinstance(snap.result, str):
            st.info(
                f"Stopped and kept: generator {snap.result} is stored as it was at its last step and can make "
                "sets now; Resume (above) trains it on to its planned steps."
            )
        events = [e for e in snap.events if isinstance(e, GeneratorEvent)]
        if events and (snap is jobs[-1] or snap.status == "running"):
            rows = [{"step": e.step, **e.values} for e in events if e.kind == "step"]
            grids = [e for e in events if e.kind == "samples" and e.grid is not None]
            left, right = st.columns([3, 2])
            settled = snap.status in FINISHED
            losses = live_figure(f"_loss-{snap.id}", (snap.id, len(rows)), partial(_loss_figure, rows), settled=settled)
            left.plotly_chart(losses, key=f"loss-{snap.id}")
            if grids and (latest := grids[-1].grid) is not None:
                step = grids[-1].step
                samples = partial(_samples_figure, latest, step)
                grid = live_figure(f"_grid-{snap.id}", (snap.id, step), samples, settled=settled)
                right.plotly_chart(grid, key=f"grid-{snap.id}")
            for warning in {e.message for e in events if e.kind == "warning"}:
                st.warning(warning)
        if isinstance(snap.result, dict) and snap.result:  # a Stable Diffusion preview: one image per class
            st.image([tile(im) for im in snap.result.values()], caption=list(snap.result))
        if isinstance(snap.result, sets.SetInfo):
            st.success(
                f"Stored set {snap.result.id}: kept {sum(snap.result.counts_kept):,} of "
                f"{sum(snap.result.counts_total):,} images. Choose it on the Train page."
            )


def short_set_notice(info: sets.SetInfo, records: list[sets.ImageRecord]) -> None:
    """For a set with fewer images than asked: which classes, the honest ways out, and what a lower filter costs."""
    wanted = info.config.get("wanted") or []
    short = [c for c, n in enumerate(wanted) if n and info.counts_kept[c] < n]
    if not short:
        return
    names = "; ".join(f"class {info.class_names[c]!r}: {info.counts_kept[c]} of {wanted[c]} images" for c in short)
    st.warning(
        f"This set has fewer images than asked for ({names}). It still feeds every mix on the Train page: "
        "a mix takes what the set has, and the controls are matched to the same counts. For a fuller set, "
        "train the generator for more steps, generate again with more candidates per image, or ask for fewer "
        "images per class."
    )
    if info.config.get("given_up"):
        st.warning(
            f"No candidate of class {', '.join(map(repr, info.config['given_up']))} passed the filter among the first "
            "thousands: the generator does not draw it recognisably yet. Training longer is the way out."
        )
    settings = info.config.get("generate") or info.config.get("stable_diffusion") or {}
    threshold = float(settings.get("threshold", 0.0))
    options = quality.lower_filter_options(records, wanted, threshold)
    if not options:
        return
    rows = {"filter": [f"{threshold:g} (this set)"] + [f"{o.threshold:g}" for o in options]}
    for c in short:
        name = info.class_names[c]
        rows[f"{name}: images"] = [info.counts_kept[c]] + [o.kept[c] for o in options]
        rows[f"{name}: labels right (expected)"] = ["—"] + [
            "—" if o.confidence[c] is None else f"{o.confidence[c]:.0%}" for o in options
        ]
    st.caption(
        "A lower filter keeps more of the candidates already drawn, at a price: the real-data classifier is less "
        "sure their labels are right. Expected right labels = its mean confidence in the intended class; a wrong "
        "label teaches the classifier the wrong thing."
    )
    st.dataframe(pd.DataFrame(rows), hide_index=True)


def _share(value: float | None) -> str:
    """A share in [0, 1] as a whole percentage for a table; a dash when it was not measured."""
    return "—" if value is None or value != value else f"{value:.0%}"


def set_browser(dataset: LabDataset) -> None:
    """Choose a stored set: counts, quality per class, a gallery with scores, reject/restore, delete."""
    stored = sets.list_sets(dataset.key)
    if not stored:
        st.caption("No synthetic sets for this dataset yet.")
        return
    # Keyed, with labels that do not change as images are rejected: the choice stays put after a save.
    labels = {s.id: f"{s.name} · {s.id}" for s in stored}
    set_id = st.selectbox("Synthetic set", list(labels), format_func=labels.__getitem__, key="browse_set")
    info = sets.load_info(set_id)
    records = sets.load_manifest(set_id)
    short_set_notice(info, records)
    table = pd.DataFrame({"class": info.class_names, "generated": info.counts_total, "kept": info.counts_kept})
    judge = info.config.get("judge")
    if judge:  # the filter's decisions on a class mean only as much as the judge knows that class
        table["judge recall on real images"] = [f"{r:.0%}" if r == r else "—" for r in judge["val_recall"]]
        st.caption(
            f"Judge: {judge['name']}, balanced accuracy {judge['balanced_accuracy']:.0%} on real validation images."
        )
        weak = [n for n, r in zip(info.class_names, judge["val_recall"], strict=True) if not r >= WEAK_RECALL]
        if weak:
            st.warning(
                f"The filter's judge recognises fewer than {WEAK_RECALL:.0%} of the real validation images of class "
                f"{', '.join(map(repr, weak))}: its keep or reject decisions on that class mean little."
            )
    per_class = {q["name"]: q for q in info.quality.get("per_class", [])}
    table["label fidelity"] = [_share(per_class.get(n, {}).get("label_fidelity")) for n in info.class_names]
    table["learns-from-synthetic recall"] = [_share(per_class.get(n, {}).get("tstr_recall")) for n in info.class_names]
    realism = info.quality.get("realism")
    if realism:
        table["looks real (precision)"] = [_share(v) for v in realism["precision"]]
        table["covers the real variety (recall)"] = [_share(v) for v in realism["recall"]]
    st.dataframe(table, hide_index=True)
    if realism and realism.get("frechet") is not None:
        st.caption(
            f"In the features of a pretrained network: precision = share of a class's synthetic images that lie "
            f"among its real ones, recall = share of its real images that the synthetic ones reach. Fréchet "
            f"distance of the whole set to the real training images: {realism['frechet']:,.1f} (0 = the same "
            "distribution; compare sets of similar size only)."
        )
    st.caption(
        "Judge recall: share of a class's real validation images that the filter's classifier (trained "
        "class-balanced on real images only) recognises. Label fidelity: share of a class's synthetic images it "
        "assigns to that class. Learns-from-synthetic recall: recall on the real test images of a classifier "
        "trained on the synthetic set alone (does the set teach the class?)."
    )
    present = sorted({r.class_name for r in records}, key=info.class_names.index)
    name = st.selectbox("Gallery class", present)
    chosen = [r for r in records if r.class_name == name][:48]
    folder = sets.sets_dir() / set_id  # only the images on show are read, not the whole set
    st.image(
        [tile(sets.read_png(folder / r.file, info.channels)) for r in chosen],
        caption=[f"{'✓' if r.kept else '✗'} {r.score:.2f}" if r.score is not None else "" for r in chosen],
    )
    edited = st.data_editor(
        pd.DataFrame(
            {
                "file": [r.file for r in chosen],
                "score": [r.score for r in chosen],
                "kept": [r.kept for r in chosen],
                "reason": [r.reason for r in chosen],
                "prompt": [r.details.get("prompt", "") for r in chosen],
                "source": [r.details.get("source", "") for r in chosen],
            }
        ),
        disabled=["file", "score", "reason", "prompt", "source"],
        hide_index=True,
        key=f"edit-{set_id}-{name}",
    )
    changed = [(f, k) for f, k, r in zip(edited["file"], edited["kept"], chosen, strict=True) if bool(k) != r.kept]
    info = sets.load_info(set_id)
    mine = owners.current().admin or owners.owner_of(info.owner) == owners.owner_name()
    if changed and mine and st.button("Save the kept / rejected choices", key="save_kept"):
        for keep in (True, False):
            files = [f for f, k in changed if bool(k) == keep]
            if files:
                sets.set_kept(set_id, files, keep, reason="" if keep else "rejected by hand")
        st.rerun()
    if not mine:
        st.caption(f"Shared by {info.owner}: you can train on it and download it; only its owner can change it.")
    elif (
        st.toggle(
            "Share with everyone on this server",
            info.shared,
            key=f"share_set-{set_id}",
            help="Every user then sees this set and can train on it (read-only). Off by default.",
        )
        != info.shared
    ):
        sets.set_shared(set_id, not info.shared)
        st.rerun()
    st.download_button(
        "Download the set (zip of class folders with its manifest)",
        lambda: exports.set_zip(set_id),  # built when clicked, not on every rerun
        f"synthetic-{set_id}.zip",
        "application/zip",
        key=f"download_set-{set_id}",
    )
    if (
        mine
        and st.checkbox(f"Delete set {set_id}", key=f"confirm_delete-{set_id}")
        and st.button("Delete now", key="delete_set")
    ):
        sets.delete_set(set_id)
        st.rerun()
