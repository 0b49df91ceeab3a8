"""The `schedule:` section of params.yaml: when and on what the scheduled rerun runs `dvc repro`.

Scheduling is the runtime's business, not the library's: no stage reads this section, so the
stages' params check sets it aside and `python -m runtime.schedule` checks it here instead.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from deepcompression.config import ConfigError
from deepcompression.schema import from_dict

SECTION = "schedule"
"""The section's key at the top of params.yaml."""


@dataclass(frozen=True)
class ScheduleConfig:
    """A cron, and a branch's latest commit to rerun.

    Each rerun checks out the latest commit of `branch` in its own git worktree `worktree`
    (relative to the project root), never the working tree people edit; `push` sends its results
    to the default DVC remote. The defaults apply when no params file is given.
    """

    cron: str = "0 3 * * *"
    timezone: str = "UTC"
    branch: str | None = None
    worktree: str = ".prefect/rerun-worktree"
    push: bool = True

    def validate(self, path: str = SECTION) -> None:
        """Five cron fields (minute hour day-of-month month day-of-week); a non-empty worktree."""
        if len(self.cron.split()) != 5:
            raise ConfigError(
                f"{path}.cron: {self.cron!r} is not a 5-field cron expression, e.g. '0 3 * * *'"
            )
        if self.branch is not None and not self.branch.strip():
            raise ConfigError(
                f"{path}.branch: is empty; name a git branch, or null for the current one"
            )
        if not self.worktree.strip():
            raise ConfigError(f"{path}.worktree: is empty; e.g. '.prefect/rerun-worktree'")


def schedule_section(raw: Mapping[str, Any]) -> ScheduleConfig:
    """The `schedule:` section of a parsed params file, type- and range-checked."""
    config = from_dict(ScheduleConfig, raw.get(SECTION), SECTION)
    config.validate()
    return config
