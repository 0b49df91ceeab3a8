"""Thin Prefect tasks around library calls; the only layer besides flows that touches files."""
