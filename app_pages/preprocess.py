"""Preprocess preview: real and synthetic images before and after the presets that training will use."""

import numpy as np
import streamlit as st
import torch

from engine import preprocess, tasks
from engine.synth import sets
from ui.jobs_panel import get_runner, owner_token
from ui.preprocess_views import PRESET_FIELDS, draw, gap_pictures, gap_results, preset_form, show_grid
from ui.state import current_dataset, describe, keep_widget_values

st.title("Preprocess preview")
dataset = current_dataset()
if dataset is None:
    st.stop()
owner = owner_token()
fit = dataset.config.source.fit
train = dataset.train
pool = preprocess.real_aspects(train.provenance.orig_width, train.provenance.orig_height)
suggested = preprocess.suggested_synthetic(fit, pool)
keep_widget_values(*(f"{side}_{field}" for side in ("pp_real", "pp_synth") for field in PRESET_FIELDS))
st.caption(
    f"Dataset: {describe(dataset)}. Real images were made square by the dataset's fit ({fit!r}; change it on the "
    "Dataset page). A synthetic square is regarded as a photo with an aspect drawn from the real images' aspects. "
    + (
        f"Suggested for synthetic images: {suggested.resize!r}, which frames them the way fit {fit!r} framed the "
        "real photos; 'margins' also shrinks and moves them, for real photos whose objects are smaller or off-centre."
        if suggested.resize != "none"
        else "The real images were square already, so no resize mode is suggested."
    )
)
stored = sets.list_sets(dataset.key)
if not stored:
    st.info("Make a synthetic set on the Generate page to compare it with the real images here.")
    st.stop()
labels = {s.id: f"{s.name} · {s.id} · kept {sum(s.counts_kept):,}" for s in stored}
set_id = st.selectbox("Synthetic set", list(labels), format_func=labels.__getitem__, key="pp_set")
synthetic = sets.load_set(set_id)
left, right = st.columns(2)
try:
    with left:
        real_preset = preset_form("pp_real", "Real images", preprocess.Preset())
    with right:
        synthetic_preset = preset_form("pp_synth", "Synthetic images", suggested)
except preprocess.PresetError as err:
    st.error(str(err))
    st.stop()

seed = st.session_state.setdefault("pp_seed", 0)
cols = st.columns([3, 1])
name = cols[0].selectbox("Class", [n for n in dataset.class_names if n in synthetic.class_names], key="pp_class")
if cols[1].button("Redraw", key="pp_redraw"):
    st.session_state["pp_seed"] = seed = seed + 1
label = dataset.class_names.index(name)
real_idx, synth_idx = draw(train, label, 8, seed), draw(synthetic, label, 8, seed)


def preview(images: torch.Tensor, preset: preprocess.Preset, aspects: torch.Tensor | None) -> torch.Tensor:
    return preprocess.apply(images, preset, aspects=aspects, gen=torch.Generator().manual_seed(seed))


gen = torch.Generator().manual_seed(seed)
real_before, synth_before = train.images[real_idx], synthetic.images[synth_idx]
grid = st.columns(2)
with grid[0]:
    show_grid("Real, as stored", real_before)
    show_grid("Real, after the preset", preview(real_before, real_preset, None))
with grid[1]:
    show_grid("Synthetic, as generated", synth_before)
    drawn = preprocess.draw_aspects(pool, len(synth_idx), gen)
    show_grid("Synthetic, after the preset", preview(synth_before, synthetic_preset, drawn))

st.subheader("Gap measures (the same number of images per class on both sides, up to 500)")
# Real images come from the test split: the real-data classifier whose features are compared never trained on them.
rng = torch.Generator().manual_seed(seed)
test = dataset.test
shared = [c for c in range(len(dataset.class_names)) if (test.labels == c).any() and (synthetic.labels == c).any()]
per_class = max(1, 500 // max(1, len(shared)))
real_rows, synth_rows = [], []
for c in shared:
    k = min(per_class, int((test.labels == c).sum()), int((synthetic.labels == c).sum()))
    real_rows.append(draw(test, c, k, seed))
    synth_rows.append(draw(synthetic, c, k, seed))
real_all = test.images[torch.cat(real_rows)] if real_rows else test.images[:0]
synth_all = synthetic.images[torch.cat(synth_rows)] if synth_rows else synthetic.images[:0]
aspects_all = preprocess.draw_aspects(pool, len(synth_all), rng)
real_after = preview(real_all, real_preset, None)
synth_after = preview(synth_all, synthetic_preset, aspects_all)
content_aspect = aspects_all.numpy() if synthetic_preset.resize in ("letterbox", "margins") else np.ones(len(synth_all))
table = gap_pictures(
    {
        "real, as stored": real_all,
        "real, after the preset": real_after,
        "synthetic, as generated": synth_all,
        "synthetic, after the preset": synth_after,
    },
    {"real, original files": pool.numpy(), "synthetic, after the preset": content_aspect},
)
st.caption(
    "Solid lines: before the presets; dashed: after. Blue: real images; orange: synthetic images. "
    "The closer the orange lines lie to the blue ones, the smaller the gap a classifier could exploit."
)
st.dataframe(table, hide_index=True)
cols = st.columns(2)
if cols[0].button("Measure the domain gap (background job)", key="pp_gap"):
    sides = {"before": (real_all, synth_all), "after": (real_after, synth_after)}
    presets = f"real: '{real_preset.spec()}', synthetic: '{synthetic_preset.spec()}'"
    tasks.submit_gap_score(get_runner(), dataset, sides, owner=owner, presets=presets)
if cols[1].button("Use these presets for training", key="pp_use", type="primary"):
    st.session_state["presets_real"] = real_preset.spec()  # the Train form starts from these
    st.session_state["presets_synthetic"] = synthetic_preset.spec()
    st.success(f"The Train page will use real: '{real_preset.spec()}', synthetic: '{synthetic_preset.spec()}'.")
gap_results(get_runner(), owner)
