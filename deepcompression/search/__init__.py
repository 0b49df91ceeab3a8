"""Choosing per-layer densities and bits: sensitivity scans, the search space, one trial's
measured file bytes and error, and the multi-objective study over them."""
