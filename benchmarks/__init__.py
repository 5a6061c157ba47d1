"""Latency next to accuracy and F1 (not built yet)."""
