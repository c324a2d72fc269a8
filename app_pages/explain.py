"""Explain page: where the real-only model and the synthetic mix's model look, on the same images."""

import streamlit as st

from engine import explain
from engine.synth import sets
from ui.explain_views import (
    METHOD_HELP,
    cached_maps,
    cached_model,
    cached_predictions,
    class_means,
    class_means_figure,
    decoded_upload,
    default_pair,
    finished_runs,
    run_label,
    show_pair,
)
from ui.state import current_dataset, describe

st.title("Explain")
dataset = current_dataset()
if dataset is None:
    st.stop()
st.caption(
    f"Dataset: {describe(dataset)}. An attribution map shows which pixels a model's prediction rests on "
    "(computed with captum on the real test set); by default the real-only model is compared with the model "
    "trained with synthetic images."
)
records = finished_runs(dataset)
if len(records) < 2:
    st.info("Train at least two runs on this dataset (a real baseline and a synthetic mix) on the Train page.")
    st.stop()
labels = {r.id: run_label(r) for r in records}
first, second = default_pair(records)
cols = st.columns(2)
run_a = cols[0].selectbox("Model A", list(labels), list(labels).index(first), format_func=labels.get, key="ex_a")
run_b = cols[1].selectbox("Model B", list(labels), list(labels).index(second), format_func=labels.get, key="ex_b")
if run_a == run_b:
    st.info("Choose two different runs to compare.")
    st.stop()
name_a, name_b = f"A ({labels[run_a].split(' · ')[0]})", f"B ({labels[run_b].split(' · ')[0]})"
models = {name_a: cached_model(run_a), name_b: cached_model(run_b)}
# Methods both models support, the preferred first: a vision transformer has no Grad-CAM worth drawing.
methods = [m for m in explain.methods_for(models[name_a]) if m in explain.methods_for(models[name_b])]
if st.session_state.get("ex_method") not in methods:
    st.session_state.pop("ex_method", None)
method = st.selectbox("Method", methods, format_func=explain.METHOD_LABELS.get, key="ex_method", help=METHOD_HELP)

tab_test, tab_means, tab_own = st.tabs(["Test images", "Per-class mean maps", "Your own image"])
with tab_test:
    cols = st.columns([2, 2, 1])
    how = cols[0].radio(
        "Which images",
        explain.SELECTIONS,
        horizontal=True,
        key="ex_how",
        help="disagreements: one model right, the other wrong; confident mistakes: the surest wrong answers of "
        "either model",
    )
    label = cols[1].selectbox("Class", dataset.class_names, key="ex_class", disabled=how != "by class")
    count = cols[2].number_input("How many", 1, 32, 6, key="ex_count")
    y_true, probs_a = cached_predictions(run_a)
    _, probs_b = cached_predictions(run_b)
    chosen = explain.select(
        how, y_true, probs_a, probs_b, label=dataset.class_names.index(label), count=int(count), seed=0
    )
    if not len(chosen):
        missing = how == "by class" and dataset.class_names.index(label) not in y_true
        fits = f"No test image fits '{how}' for these two models."
        st.info(f"The test set holds no image of {label!r}: choose another class." if missing else fits)
    key = tuple(int(i) for i in chosen)
    images = dataset.test.images[list(key)]
    maps = {name_a: cached_maps(run_a, method, key, images), name_b: cached_maps(run_b, method, key, images)}
    for row, i in enumerate(key):
        raw = {name: m[row] for name, m in maps.items()}
        truth = dataset.class_names[y_true[i]]
        show_pair(images[row], models, raw, dataset.class_names, method=method, key=f"pair-{i}", truth=truth)

with tab_means:
    if st.button("Compute the per-class mean maps (16 test images per class)", key="ex_means"):
        means = class_means(models, dataset, method)
        for name, per_class in means.items():
            st.plotly_chart(class_means_figure(name, per_class, dataset.class_names), key=f"means-{name}")

with tab_own:
    upload = st.file_uploader(
        "Upload an image (any size or mode)",
        type=["png", "jpg", "jpeg", "bmp", "gif", "webp", "tif", "tiff"],
        key="ex_upload",
    )
    stored = sets.list_sets(dataset.key)
    pick = st.selectbox("…or pick a synthetic image from a set", ["", *[s.id for s in stored]], key="ex_set")
    image = None
    if upload is not None:
        try:
            image = decoded_upload(upload, dataset)
        except explain.ExplainError as err:
            st.error(str(err))
    elif pick:
        synthetic = sets.load_set(pick)
        index = st.number_input("Image number", 0, max(0, len(synthetic) - 1), 0, key="ex_index")
        image = synthetic.images[int(index)] if len(synthetic) else None
    if image is not None:
        raw = {name: explain.attribute(m, image[None], method)[0] for name, m in models.items()}
        show_pair(image, models, raw, dataset.class_names, method=method, key="pair-own")
