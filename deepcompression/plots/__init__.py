"""Figures: weight distributions and pruning curves, the search's front, the final file."""
