"""Dataset page forms: widgets in, configs out.

:func:`source_form` returns a new (source, split) config when the user presses Load, and
:func:`imbalance_form` an imbalance config when the user presses Apply; otherwise None.
Validation happens in the engine's config classes; the page shows their messages.
"""

from __future__ import annotations

import streamlit as st

from engine import store
from engine.config import TORCHVISION_NAMES, ImbalanceConfig, SourceConfig, SplitConfig

SOURCE_LABELS = {
    "digits": "Built-in digits (offline)",
    "zip": "Upload a .zip of class folders",
    "folder": "Folder on the server",
    "torchvision": "torchvision dataset (needs internet)",
}
RESOLUTIONS = ("auto", 8, 16, 28, 32, 48, 64, 96, 128, 224)
IMBALANCE_LABELS = {
    "none": "None (as loaded)",
    "step": "Step: some classes cut to a few percent",
    "longtail": "Long tail (exponential, by ratio)",
    "kshot": "k-shot per class",
    "subsample": "Subsample every class",
}


def source_form(current: SourceConfig, split: SplitConfig) -> tuple[SourceConfig, SplitConfig] | None:
    """Source, working resolution and split widgets; returns configs when Load is pressed."""
    kind = st.radio(
        "Source",
        list(SOURCE_LABELS),
        format_func=SOURCE_LABELS.__getitem__,
        index=list(SOURCE_LABELS).index(current.kind),
        horizontal=True,
        key="ds_kind",
    )
    upload, path, name = None, "", ""
    if kind == "zip":
        upload = st.file_uploader("Zip of <class>/<image> or train|test/<class>/<image>", type=["zip"], key="ds_zip")
    elif kind == "folder":
        path = st.text_input(
            "Folder path on the server",
            value=current.path if current.kind == "folder" else "",
            key="ds_path",
            help="Allowed under: " + ", ".join(str(p) for p in [store.home(), *store.folder_roots()]),
        )
    elif kind == "torchvision":
        name = st.selectbox("Dataset", TORCHVISION_NAMES, key="ds_tv")
    cols = st.columns(3)
    res = cols[0].selectbox(
        "Working resolution (px)",
        RESOLUTIONS,
        key="ds_res",
        index=RESOLUTIONS.index(current.resolution) if current.resolution in RESOLUTIONS else 0,
        help="auto: native size for images up to 64 px; larger photos at 128 px (what pretrained backbones see), "
        "or 64 px when that many images would not fit in memory",
    )
    color = cols[1].selectbox(
        "Colour",
        ("auto", "rgb", "grayscale"),
        key="ds_color",
        help="auto: grayscale when every image is grey, else RGB (three colour channels)",
    )
    fit = cols[2].selectbox(
        "Make square by",
        ("crop", "stretch", "pad"),
        key="ds_fit",
        help="crop: cut the centre square; stretch: squeeze the whole image; pad: keep it whole on a black square. "
        "Original sizes are kept for the Preprocess page.",
    )
    cols = st.columns(4)
    val = cols[0].slider(
        "Validation %",
        5,
        40,
        round(split.val_fraction * 100),
        key="ds_val",
        help="Real images held out to decide when training stops; never trained on",
    )
    test = cols[1].slider(
        "Test %",
        5,
        40,
        round(split.test_fraction * 100),
        key="ds_test",
        help="Real images held out for the final scores on the Compare page; never trained on",
    )
    seed = cols[2].number_input(
        "Split seed", 0, 2**31 - 1, split.seed, key="ds_seed", help="The same seed gives the same split"
    )
    own = cols[3].checkbox(
        "Use the source's own test split",
        split.use_source_test,
        key="ds_own",
        help="For train/ + test/ folders and torchvision datasets",
    )
    if not st.button("Load dataset", type="primary", key="ds_load"):
        return None
    if kind == "zip":
        if upload is None:
            st.error("source.path: no .zip was uploaded; choose a .zip of class folders first.")
            return None
        try:
            path = str(store.save_upload(upload.name, upload.getvalue()))
        except store.UploadRefused as err:
            st.error(str(err))
            return None
    source = SourceConfig(
        kind=kind, path=path, name=name, resolution=None if res == "auto" else int(res), color=color, fit=fit
    )
    return source, SplitConfig(val_fraction=val / 100, test_fraction=test / 100, use_source_test=own, seed=int(seed))


def imbalance_form(class_names: tuple[str, ...], current: ImbalanceConfig) -> ImbalanceConfig | None:
    """Imbalance profile widgets for the loaded classes; returns a config when Apply is pressed."""
    kind = st.selectbox(
        "Profile",
        list(IMBALANCE_LABELS),
        format_func=IMBALANCE_LABELS.__getitem__,
        index=list(IMBALANCE_LABELS).index(current.kind),
        key="im_kind",
        help="Makes some classes scarce in the training split on purpose, so you can test whether synthetic "
        "images fill the gap; validation and test splits are never changed.",
    )
    values: dict[str, object] = {"kind": kind}
    cols = st.columns(3)
    if kind == "step":
        default = [c for c in current.minority if c in class_names] or list(class_names[:3])
        values["minority"] = tuple(
            cols[0].multiselect(
                "Minority classes",
                class_names,
                default=default,
                key="im_min",
                help="The classes that are cut; the Compare page scores their recall separately",
            )
        )
        values["keep_fraction"] = (
            cols[1].slider("Keep % of each minority class", 1, 100, int(current.keep_fraction * 100), key="im_keep")
            / 100
        )
    elif kind == "longtail":
        values["ratio"] = float(
            cols[0].number_input(
                "Imbalance ratio ρ = n_max / n_min",
                1.0,
                1000.0,
                float(current.ratio),
                key="im_ratio",
                help="Images of the largest class divided by images of the smallest; the classes between shrink "
                "exponentially",
            )
        )
    elif kind == "kshot":
        values["k"] = int(
            cols[0].number_input(
                "Images per class (k)",
                1,
                100_000,
                current.k,
                key="im_k",
                help="k-shot: every class keeps only k training images",
            )
        )
    elif kind == "subsample":
        values["fraction"] = (
            cols[0].slider("Keep % of every class", 1, 100, int(current.fraction * 100), key="im_frac") / 100
        )
    if kind != "none":
        values["seed"] = int(
            cols[2].number_input(
                "Imbalance seed",
                0,
                2**31 - 1,
                current.seed,
                key="im_seed",
                help="Which images are kept; the same seed keeps the same ones",
            )
        )
    if not st.button("Apply to the training split", key="im_apply"):
        return None
    return ImbalanceConfig(**values)  # type: ignore[arg-type]
