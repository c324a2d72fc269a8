"""Generate page forms: train a generator (GAN or small diffusion model), resume a stopped one, make a set.

Each form returns an engine config when its button is pressed, else None; the page submits it.
"""

from __future__ import annotations

from typing import Any

import streamlit as st

from engine.datasets import LabDataset
from engine.jobs import FINISHED, format_duration
from engine.synth import ddpm, gan, generators, make_sets
from ui.jobs_panel import get_runner

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


def _preset_radio(presets: tuple[str, ...], default: str, labels: dict[str, str], *, key: str) -> str:
    """The preset chooser of a generator form, each preset labelled with its time here (:func:`_preset_labels`)."""
    chosen = st.radio(
        "Preset",
        presets,
        index=presets.index(default),
        format_func=labels.__getitem__,
        horizontal=True,
        key=key,
        help=PRESET_HELP,
    )
    return str(chosen)


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
        preset = _preset_radio(ddpm.PRESETS, ddpm.DEFAULT_PRESET, labels, key="ddpm_preset")
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
        preset=preset,
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
        preset = _preset_radio(gan.PRESETS, gan.DEFAULT_PRESET, labels, key="gan_preset")
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
        preset=preset,
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
