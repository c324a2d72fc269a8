"""SynthLab engine: datasets, generators, training and metrics. Never imports Streamlit."""
