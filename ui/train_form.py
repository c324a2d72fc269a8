"""Train page form: model, hyperparameters, mixes and seeds in; an ExperimentConfig out."""

from __future__ import annotations

import streamlit as st

from engine.datasets import LabDataset
from engine.device import DEVICES, PRECISIONS
from engine.experiments import ExperimentConfig
from engine.mixes import MixConfig, synthetic_short
from engine.models import MODEL_LABELS, available_models, default_model
from engine.synth import sets
from engine.training import TrainConfig

REPLACE = {"50/50": 0.5, "30/70": 0.7, "0/100 (synthetic only)": 1.0}
CONTROLS = {
    "oversample": "Oversample: repeat real minority images up to the largest class",
    "augment": "Augment: classic augmentation of real images up to the same counts",
    "reweight": "Reweight: class-weighted loss on the real data",
}


def _short_set_notice(dataset: LabDataset, set_id: str, extra: int) -> None:
    """Before Start: which classes the chosen set is short of for ``add``, and what happens then."""
    held = sets.load_info(set_id).counts_kept
    add = MixConfig("add", per_class=extra, synthetic_set=set_id)
    short = synthetic_short(add, dataset.train.class_counts(), held, dataset.class_names)
    if short:
        st.info(
            f"This set has fewer images than {add.label!r} asks for class {', '.join(short)}. The runs still start: "
            "add uses what the set has, and oversample, augment and reweight are matched to the same counts per "
            "class. For a fuller set, see the ways out under Synthetic sets on the Generate page."
        )


def experiment_form(dataset: LabDataset) -> ExperimentConfig | None:
    """Widgets for an experiment on ``dataset``; returns its config when Start is pressed."""
    defaults = TrainConfig()
    for key, kept in (("train_pre_real", "presets_real"), ("train_pre_synthetic", "presets_synthetic")):
        if key not in st.session_state:  # widget state is dropped on other pages; the chosen presets are not
            st.session_state[key] = st.session_state.get(kept, "")
    with st.form("train_form"):
        choices = available_models()
        model = st.selectbox(
            "Model",
            choices,
            index=choices.index(default_model(dataset)),
            format_func=MODEL_LABELS.__getitem__,
            key="train_model",
            help="Photos: a pretrained backbone gives the numbers practitioners would get (a linear probe trains "
            "in seconds on cached features). Small images such as digits: a net trained from scratch.",
        )
        cols = st.columns(4)
        lr = cols[0].number_input("Learning rate", 1e-5, 1.0, defaults.lr, format="%.4f")
        batch = cols[1].number_input("Batch size", 1, 8192, defaults.batch_size)
        epochs = cols[2].number_input("Max epochs", 1, 1000, defaults.max_epochs, key="train_epochs")
        patience = cols[3].number_input(
            "Early-stop patience", 0, 1000, defaults.patience, help="Epochs without a better validation loss; 0 = off"
        )
        cols = st.columns(4)
        decay = cols[0].number_input("Weight decay", 0.0, 1.0, defaults.weight_decay, format="%.5f")
        smoothing = cols[1].number_input("Label smoothing", 0.0, 0.49, defaults.label_smoothing)
        device = cols[2].selectbox("Device", DEVICES)
        precision = cols[3].selectbox(
            "Precision", PRECISIONS, help="auto: fp16 on CUDA, bf16 on CPUs with native bf16, else fp32"
        )
        cols = st.columns(2)
        augment = cols[0].checkbox("Random crop (padded)", True)
        flip = cols[1].checkbox(
            "Random horizontal flip",
            dataset.channels == 3,
            help="Off for digits and text, where a flip changes the class",
        )
        cols = st.columns(2)
        pre_real = cols[0].text_input(
            "Preprocess real training images (preset)",
            key="train_pre_real",
            help="Set on the Preprocess preview page, e.g. 'jitter=0.2'; empty = none",
        )
        pre_synthetic = cols[1].text_input(
            "Preprocess synthetic training images (preset)",
            key="train_pre_synthetic",
            help="Set on the Preprocess preview page, e.g. 'resize=margins;margin_scale=0.6'; empty = none",
        )
        st.markdown("**Mixes** (the real baseline always runs)")
        stored = sets.list_sets(dataset.key)
        set_labels = {s.id: f"{s.name} · {s.id} · kept {sum(s.counts_kept):,}" for s in stored}
        synthetic = st.selectbox(
            "Synthetic set",
            list(set_labels),
            format_func=set_labels.__getitem__,
            disabled=not stored,
            help="Sets come from the Generate page",
            key="mix_set",
        )
        if synthetic:
            _short_set_notice(dataset, synthetic, int(st.session_state.get("mix_extra", 0)))
        add = st.checkbox("Add synthetic: real + synthetic images", bool(stored), disabled=not stored, key="mix_add")
        replace = st.multiselect(
            "Replace with synthetic (real/synthetic share of each class)",
            list(REPLACE),
            disabled=not stored,
            key="mix_replace",
        )
        chosen = [kind for kind, label in CONTROLS.items() if st.checkbox(label, kind != "augment", key=f"mix_{kind}")]
        extra = st.number_input(
            "Images added per class by add / oversample / augment (0 = fill to the largest class)",
            0,
            100_000,
            0,
            key="mix_extra",
        )
        cols = st.columns(2)
        n_seeds = cols[0].number_input("Seeds", 1, 10, 3, help="Runs per mix; seeds 0 … n-1", key="train_seeds")
        name = cols[1].text_input("Name (optional)")
        if not st.form_submit_button("Start", type="primary"):
            return None
    st.session_state["presets_real"], st.session_state["presets_synthetic"] = pre_real, pre_synthetic
    train = TrainConfig(
        lr=float(lr),
        weight_decay=float(decay),
        batch_size=int(batch),
        max_epochs=int(epochs),
        patience=int(patience),
        label_smoothing=float(smoothing),
        augment=augment,
        flip=flip,
        device=device,
        precision=precision,
        preprocess_real=pre_real.strip(),
        preprocess_synthetic=pre_synthetic.strip(),
    )
    mixes = [MixConfig("real")]
    if synthetic and add:
        mixes.append(MixConfig("add", per_class=int(extra), synthetic_set=synthetic))
    mixes += [
        MixConfig("replace", synthetic_fraction=REPLACE[r], synthetic_set=synthetic) for r in replace if synthetic
    ]
    mixes += [MixConfig(kind, per_class=int(extra) if kind != "reweight" else 0) for kind in chosen]
    return ExperimentConfig(dataset.config, tuple(mixes), model, train, tuple(range(int(n_seeds))), name)
