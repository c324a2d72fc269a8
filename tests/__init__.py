"""SynthLab tests: unit, AppTest and one real-browser suite (see README)."""
