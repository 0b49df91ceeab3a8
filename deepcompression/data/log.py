"""Where the data stage's library functions report progress: a logger the caller passes (the run's
logger inside a Prefect run), so the library itself knows no orchestration."""

from __future__ import annotations

import logging

Log = logging.Logger | logging.LoggerAdapter
"""A standard logger or an adapter of one (Prefect's run logger is one)."""
