"""Confirming a search's pick at full length: which front points to try, in what order, and which
one to keep.

A trial retrains briefly, so its error only ranks allocations; whether a file meets the target is
known after the full-length stages. The pick is tried first, then the front's larger files (on a
Pareto front, lower trial error) in byte order, until one meets the validation target. Today's
tables (params.yaml) are tried in that order too even when short trials rank them off the front:
a short trial's error misranks points some hundred bytes apart (BENCHMARKS.md, "today's tables as a
candidate"), and when the tables meet the target, no larger file should be kept.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from deepcompression.search.space import Allocation
from deepcompression.search.study import TrialRecord


@dataclass(frozen=True)
class Candidate:
    """A front point to confirm: its trial, the trial's bytes and error, and its allocation."""

    trial: int
    file_bytes: int
    val_error: float
    allocation: Allocation

    def to_dict(self) -> dict[str, Any]:
        """JSON form (the search's allocation file lists these)."""
        return {
            "trial": self.trial,
            "file_bytes": self.file_bytes,
            "val_error": self.val_error,
            "allocation": self.allocation.to_dict(),
        }

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Candidate:
        """Inverse of `to_dict`."""
        return cls(
            trial=int(raw["trial"]),
            file_bytes=int(raw["file_bytes"]),
            val_error=float(raw["val_error"]),
            allocation=Allocation.from_dict(raw["allocation"]),
        )


def candidates(
    front: Sequence[TrialRecord], chosen: TrialRecord, tables: TrialRecord | None = None
) -> list[Candidate]:
    """The pick, then every front point with a larger file and today's `tables` (when not
    smaller than the pick), smallest first (ties: lower error)."""
    extra = [] if tables is None else [tables]
    pool = {r.number: r for r in [*front, *extra] if r.number != chosen.number}
    later = sorted(
        (r for r in pool.values() if r.file_bytes >= chosen.file_bytes),
        key=lambda r: (r.file_bytes, r.val_error, r.number),
    )
    return [Candidate(r.number, r.file_bytes, r.val_error, r.allocation) for r in [chosen, *later]]


@dataclass(frozen=True)
class Confirmation:
    """One candidate run at full length: the written file's bytes and validation errors."""

    trial: int
    trial_bytes: int
    trial_val_error: float
    file_bytes: int
    pruned_val_error: float
    val_error: float
    """The file's validation error (the quantized model, whose logits the file reproduces)."""

    def meets(self, target: float) -> bool:
        """Whether the file's validation error is at most `target`."""
        return self.val_error <= target


def keep(rows: Sequence[Confirmation], target: float) -> tuple[Confirmation, bool]:
    """The first row that meets `target` (rows come smallest file first), else the row of lowest
    validation error (ties: the smaller file), flagged as missing the target."""
    if not rows:
        raise ValueError("no candidate was confirmed; the search's front is empty")
    for row in rows:
        if row.meets(target):
            return row, True
    return min(rows, key=lambda r: (r.val_error, r.file_bytes)), False
