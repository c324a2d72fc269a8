"""Explain page: not built yet; says in one line what it will do."""

import streamlit as st

st.title("Explain")
st.info(
    "Coming soon. See where the real-only and the augmented model look (Grad-CAM, integrated "
    "gradients, occlusion) on the same image."
)
