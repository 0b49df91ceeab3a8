"""Prefect flows: one per DVC stage, the whole pipeline, the local server and scheduled reruns."""
