"""Reproducible benchmarks (run as scripts or as ``python -m bench.<name>``)."""
