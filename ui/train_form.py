"""Train page form: model, hyperparameters, mixes and seeds in; an ExperimentConfig out."""

from __future__ import annotations

import dataclasses

import streamlit as st

from engine import tasks
from engine.datasets import LabDataset, build_dataset
from engine.device import DEVICES, PRECISIONS
from engine.experiments import FEW_TEST_IMAGES, MAX_SPLITS, ExperimentConfig
from engine.mixes import MixConfig, synthetic_short
from engine.models import MODEL_LABELS, available_models, default_model
from engine.synth import sets, split_sets
from engine.training import TrainConfig
from ui.jobs_panel import get_runner
from ui.submit import started

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
        lr = cols[0].number_input(
            "Learning rate", 1e-5, 1.0, defaults.lr, format="%.4f", help="How big a step each weight update takes"
        )
        batch = cols[1].number_input("Batch size", 1, 8192, defaults.batch_size, help="Images per weight update")
        epochs = cols[2].number_input(
            "Max epochs",
            1,
            1000,
            defaults.max_epochs,
            key="train_epochs",
            help="An epoch is one pass over every training image; early stopping usually ends a run sooner",
        )
        patience = cols[3].number_input(
            "Early-stop patience", 0, 1000, defaults.patience, help="Epochs without a better validation loss; 0 = off"
        )
        cols = st.columns(4)
        decay = cols[0].number_input(
            "Weight decay",
            0.0,
            1.0,
            defaults.weight_decay,
            format="%.5f",
            help="Pulls weights towards zero at every step, against overfitting",
        )
        smoothing = cols[1].number_input(
            "Label smoothing",
            0.0,
            0.49,
            defaults.label_smoothing,
            help="Trains towards slightly less than 100% confidence in the true class, against overconfidence",
        )
        device = cols[2].selectbox("Device", DEVICES, help="auto: the GPU when there is one, else the CPU")
        precision = cols[3].selectbox(
            "Precision", PRECISIONS, help="auto: fp16 on CUDA, bf16 on CPUs with native bf16, else fp32"
        )
        cols = st.columns(2)
        augment = cols[0].checkbox(
            "Random crop (padded)", True, help="Shifts each training image by a few pixels, a new shift every epoch"
        )
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
        add = st.checkbox(
            "Add synthetic: real + synthetic images",
            bool(stored),
            disabled=not stored,
            key="mix_add",
            help="Every real training image, plus synthetic ones for the classes that have fewer",
        )
        replace = st.multiselect(
            "Replace with synthetic (real/synthetic share of each class)",
            list(REPLACE),
            disabled=not stored,
            key="mix_replace",
            help="Keeps each class's size but swaps this share of its real images for synthetic ones: shows how "
            "the score changes as the training set becomes more synthetic",
        )
        pretrain = st.checkbox(
            "Pretrain on synthetic, then fine-tune on real (runs beside its control: the same schedule with real "
            "images first)",
            False,
            disabled=not stored,
            key="mix_pretrain",
            help="First trains on the synthetic set alone for 10 epochs, then on the real images at a lower learning "
            "rate. Needs a net that learns its features: a net trained from scratch or a fine-tuned backbone",
        )
        chosen = [kind for kind, label in CONTROLS.items() if st.checkbox(label, kind != "augment", key=f"mix_{kind}")]
        extra = st.number_input(
            "Images added per class by add / oversample / augment (0 = fill to the largest class)",
            0,
            100_000,
            0,
            key="mix_extra",
        )
        cols = st.columns(3)
        n_seeds = cols[0].number_input("Seeds", 1, 10, 3, help="Runs per mix; seeds 0 … n-1", key="train_seeds")
        smallest = int(dataset.test.class_counts().min())
        n_splits = cols[1].number_input(
            "Splits",
            1,
            MAX_SPLITS,
            1,
            key="train_splits",
            help="Repeats every mix and seed on this many different train/validation/test splits, so that the "
            f"intervals also cover how lucky one split was. Suggested when a class has fewer than {FEW_TEST_IMAGES} "
            "test images. With a synthetic set, each further split needs its own generator and set",
        )
        name = cols[2].text_input("Name (optional)")
        if smallest < FEW_TEST_IMAGES:
            st.caption(
                f"The smallest class has {smallest} test images: with 3 or more splits the answer no longer hangs on "
                "which few images landed in the test set."
            )
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
    if synthetic and pretrain:
        mixes += [MixConfig("pretrain", synthetic_set=synthetic), MixConfig("pretrain_real")]
    found: tuple[tuple[str, int, str], ...] = ()
    st.session_state["split_sets_missing"] = []
    if n_splits > 1 and synthetic and any(m.synthetic_set for m in mixes):
        found, missing = split_sets.split_sets([synthetic], dataset.config, int(n_splits))
        st.session_state["split_sets_missing"] = missing
        if missing:
            return None
    seeds = tuple(range(int(n_seeds)))
    return ExperimentConfig(dataset.config, tuple(mixes), model, train, seeds, name, int(n_splits), found)


def missing_split_sets_notice(dataset: LabDataset, owner: str) -> None:
    """After Start with repeated splits: the sets still to make for the further splits, their cost, and a button."""
    missing = st.session_state.get("split_sets_missing") or []
    if not missing:
        return
    set_id = missing[0][0]
    st.warning(
        "Nothing started yet: with repeated splits every further split needs its own synthetic set, made the same "
        f"way from that split's training images. Still to make: {split_sets.cost_words(set_id, len(missing))}."
    )
    if st.button(f"Make the {len(missing)} set(s), then press Start again", key="make_split_sets"):

        def make_all() -> None:
            for first, split_seed in missing:
                config = dataclasses.replace(
                    dataset.config, split=dataclasses.replace(dataset.config.split, seed=split_seed)
                )
                tasks.submit_split_set(get_runner(), first, build_dataset(config), owner=owner)

        if started(
            make_all, f"Making {len(missing)} set(s): follow them on the Generate page, then press Start again."
        ):
            st.session_state["split_sets_missing"] = []
