"""Streamlit-side helpers: forms that return configs, figure builders, session state."""
