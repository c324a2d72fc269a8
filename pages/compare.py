"""Compare page: not built yet; says in one line what it will do."""

import streamlit as st

st.title("Compare")
st.info(
    "Coming soon. Compare runs over several seeds (accuracy, F1, ROC-AUC, confusion matrices, "
    "per-class gains) with an honest verdict."
)
