"""Train page: not built yet; says in one line what it will do."""

import streamlit as st

st.title("Train")
st.info("Coming soon. Train CNN classifiers on real and synthetic mixes in background jobs, with live curves.")
