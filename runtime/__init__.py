"""How stages run and are watched: the local Prefect server, the warm stage runner and its
hand-off, outage guard and recovery, monitoring, artifacts, logging, timing and scheduled reruns.

Nothing here computes a stage's outputs, so no DVC stage depends on this package."""
