"""Quantized edge bundles with an accuracy gate (not built yet)."""
