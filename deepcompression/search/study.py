"""The compression search as an Optuna study: ask a batch, evaluate it, tell in ask order.

Two objectives, both minimised: the exact bytes of the written file and the validation error.
The study lives in an RDB (SQLite by default); its name is keyed by a hash of the inputs, so a
killed search resumes its own study (trials that were running are enqueued again and marked
failed, completed ones are kept) and a changed input starts a fresh one.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import optuna

from deepcompression.config import SearchSampler
from deepcompression.search.space import Allocation, SearchSpace, suggest, trial_params

ALLOCATION_ATTR = "allocation"
DETAILS_ATTR = "details"
FAILED_ATTR = "failed"


@dataclass(frozen=True)
class Measured:
    """What evaluating a trial gave: its objectives, and details kept with it (JSON-able)."""

    file_bytes: int
    val_error: float
    details: dict[str, Any] = field(default_factory=dict)


BatchEvaluator = Callable[[list[tuple[int, Allocation]]], list[Measured | None]]
"""Evaluates (trial number, allocation) pairs in order; None marks a trial that failed."""


@dataclass(frozen=True)
class TrialRecord:
    """A completed trial: its number, objectives and allocation."""

    number: int
    file_bytes: int
    val_error: float
    allocation: Allocation
    details: dict[str, Any] = field(default_factory=dict)


def study_name(model: str, dense: bytes, inputs: dict[str, Any]) -> str:
    """`<model>-<hash>`: the hash of the dense checkpoint and every input that shapes a trial."""
    digest = hashlib.sha256(dense)
    digest.update(json.dumps(inputs, sort_keys=True).encode())
    return f"{model}-{digest.hexdigest()[:16]}"


def make_sampler(kind: SearchSampler, seed: int) -> optuna.samplers.BaseSampler:
    """A seeded multi-objective sampler: NSGA-II or (multi-objective) TPE."""
    if kind == "tpe":
        return optuna.samplers.TPESampler(seed=seed)
    return optuna.samplers.NSGAIISampler(seed=seed)


def open_study(storage: str, name: str, sampler: optuna.samplers.BaseSampler) -> optuna.Study:
    """The study `name` in `storage` (created when absent): minimise bytes and error."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.create_study(
        storage=storage,
        study_name=name,
        sampler=sampler,
        directions=["minimize", "minimize"],
        load_if_exists=True,
    )


def seed_study(study: optuna.Study, space: SearchSpace, seeds: Sequence[Allocation]) -> int:
    """Enqueue known points (current defaults, sensitivity-derived) into a study with no trials;
    returns how many were enqueued (none into a study that already has trials)."""
    if study.get_trials(deepcopy=False):
        return 0
    for allocation in seeds:
        study.enqueue_trial(trial_params(allocation, space), skip_if_exists=True)
    return len(seeds)


def recover_interrupted(study: optuna.Study) -> int:
    """Trials left running by a killed search: enqueue their parameters again and mark them
    failed (interrupted), so they are rerun and never counted; returns how many."""
    running = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
    for trial in running:
        study.enqueue_trial(trial.params, skip_if_exists=False)
        study.tell(trial.number, state=optuna.trial.TrialState.FAIL)
    return len(running)


def finished_trials(study: optuna.Study) -> int:
    """Trials that count against the budget: completed, or failed by their own error (not the
    ones a killed search left running)."""
    states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL)
    return sum(
        1
        for t in study.get_trials(deepcopy=False, states=states)
        if t.state == optuna.trial.TrialState.COMPLETE or t.user_attrs.get(FAILED_ATTR)
    )


def run_batches(
    study: optuna.Study,
    space: SearchSpace,
    total: int,
    batch_size: int,
    evaluate: BatchEvaluator,
    on_batch: Callable[[int], None] | None = None,
) -> None:
    """Ask up to `batch_size` trials, evaluate them together, tell the results in ask order;
    repeat until `total` trials have finished. Reproducible for a seeded sampler."""
    while (done := finished_trials(study)) < total:
        trials = [study.ask() for _ in range(min(batch_size, total - done))]
        allocations = [suggest(trial, space) for trial in trials]
        for trial, allocation in zip(trials, allocations, strict=True):
            trial.set_user_attr(ALLOCATION_ATTR, allocation.to_dict())
        results = evaluate([(t.number, a) for t, a in zip(trials, allocations, strict=True)])
        for trial, result in zip(trials, results, strict=True):
            if result is None:
                trial.set_user_attr(FAILED_ATTR, True)
                study.tell(trial, state=optuna.trial.TrialState.FAIL)
            else:
                trial.set_user_attr(DETAILS_ATTR, result.details)
                study.tell(trial, [float(result.file_bytes), float(result.val_error)])
        if on_batch is not None:
            on_batch(finished_trials(study))


def completed(study: optuna.Study) -> list[TrialRecord]:
    """Every completed trial, in trial order."""
    return [
        TrialRecord(
            number=t.number,
            file_bytes=int(t.values[0]),
            val_error=float(t.values[1]),
            allocation=Allocation.from_dict(t.user_attrs[ALLOCATION_ATTR]),
            details=t.user_attrs.get(DETAILS_ATTR, {}),
        )
        for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    ]


def dominates(a: TrialRecord, b: TrialRecord) -> bool:
    """`a` is no worse than `b` on both objectives and better on one."""
    no_worse = a.file_bytes <= b.file_bytes and a.val_error <= b.val_error
    return no_worse and (a.file_bytes < b.file_bytes or a.val_error < b.val_error)


def pareto_front(records: Sequence[TrialRecord]) -> list[TrialRecord]:
    """The non-dominated records (one per distinct objective pair, the earliest trial), by
    file bytes ascending."""
    front: dict[tuple[int, float], TrialRecord] = {}
    for r in records:
        if not any(dominates(o, r) for o in records):
            front.setdefault((r.file_bytes, r.val_error), r)
    return sorted(front.values(), key=lambda r: (r.file_bytes, r.val_error, r.number))


def choose(front: Sequence[TrialRecord], error_budget: float) -> TrialRecord | None:
    """The smallest file whose validation error is at most `error_budget` (None: no such)."""
    within = [r for r in front if r.val_error <= error_budget]
    return min(within, key=lambda r: (r.file_bytes, r.val_error, r.number)) if within else None
