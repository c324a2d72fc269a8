"""Synthetic image generators and synthetic sets."""
