"""Preprocess preview page: not built yet; says in one line what it will do."""

import streamlit as st

st.title("Preprocess preview")
st.info(
    "Coming soon. See real and synthetic images side by side after resize, margins and crops, "
    "and measure the gap between them."
)
