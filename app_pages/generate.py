"""Generate page: not built yet; says in one line what it will do."""

import streamlit as st

st.title("Generate")
st.info(
    "Coming soon. Make synthetic images per class with Stable Diffusion or generators trained on "
    "your data (conditional GAN, WGAN-GP, a small diffusion model)."
)
