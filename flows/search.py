"""DVC stage `search`: an Optuna study over per-layer compression choices, trials on Dask.

Trials are Prefect task runs submitted through prefect-dask's DaskTaskRunner: to a local cluster
of `search.workers` processes (each told the Prefect API URL, and torch threads so that workers x
threads fit the cores), or to the scheduler at `search.address`. Batches of `workers` trials are
asked, run together and told in ask order. Writes the Pareto front (CSV, JSON), its figure, and
the chosen allocation with the front points after it (the confirm stage's candidates),
search/<model>/allocation.json.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path

import prefect
from prefect.concurrency.asyncio import (
    AcquireConcurrencySlotTimeoutError,
    ConcurrencySlotAcquisitionError,
)
from prefect.context import FlowRunContext
from prefect_dask import DaskTaskRunner

from deepcompression.checkpoint import Checkpoint
from deepcompression.config import SearchConfig, SearchSampler
from deepcompression.numerics import PINNED_ENV
from deepcompression.plots.search import PUBLISHED, pareto_figure
from deepcompression.schema import to_dict
from deepcompression.search.confirm import candidates
from deepcompression.search.reference import (
    chosen_record,
    default_allocation,
    dense_float32_bytes,
    front_row,
    output_layers,
    tables_record,
)
from deepcompression.search.sensitivity import SensitivityPoint, seed_allocations
from deepcompression.search.space import Allocation, SearchSpace, describe, resolve_space
from deepcompression.search.study import (
    Measured,
    TrialRecord,
    completed,
    finished_trials,
    make_sampler,
    open_study,
    pareto_front,
    recover_interrupted,
    run_batches,
    seed_study,
    study_name,
)
from deepcompression.search.trial import TrialSettings
from flows.allocation import allocation_path
from flows.common import data_dir, setup
from flows.params import model_section
from flows.provenance import build_sha256, numerics, provenance
from flows.skipped import skip_reason, skipped_png, skipped_record
from runtime.artifacts import artifact_key, publish_table
from runtime.log import run_logger
from runtime.monitor import api_url, is_api_error, is_offline
from runtime.resilient import flow
from runtime.workspace import Workspace
from tasks.io import write_bytes_atomic, write_csv, write_json
from tasks.plots import publish_plots_report
from tasks.search import TrialData, search_trial


def read_sensitivity(workspace: Workspace) -> tuple[float, list[SensitivityPoint]]:
    """The sensitivity stage's dense error and points (its metrics file)."""
    path = workspace.metrics("sensitivity")
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: run the sensitivity stage first (dvc repro)")
    saved = json.loads(path.read_text())
    return saved["dense_val_error"], [SensitivityPoint(**p) for p in saved["points"]]


def threads_per_worker(workers: int, wanted: int | None = None) -> int:
    """torch threads per local worker: `wanted` (default cores / workers), capped so that
    workers x threads <= cores."""
    most = max(1, (os.cpu_count() or 1) // workers)
    return most if wanted is None else min(wanted, most)


def dask_runner(cfg: SearchConfig, threads: int) -> DaskTaskRunner:
    """The scheduler at `address`, else a local cluster of `workers` processes told the API URL
    (so no worker starts its own temporary Prefect server), their thread budget and the pinned
    numerics (deepcompression/numerics.py)."""
    if cfg.address is not None:
        return DaskTaskRunner(address=cfg.address)
    env = {name: str(threads) for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")} | PINNED_ENV
    if (url := api_url()) is not None:
        env["PREFECT_API_URL"] = url
    return DaskTaskRunner(
        cluster_class="distributed.LocalCluster",
        cluster_kwargs={
            "n_workers": cfg.workers,
            "threads_per_worker": 1,
            "processes": True,
            "dashboard_address": None,
            "env": env,
        },
    )


def measured(result: dict) -> Measured:
    """A trial task's result as the search's measurement."""
    details = {k: v for k, v in result.items() if k not in ("file_bytes", "val_error")}
    return Measured(result["file_bytes"], result["val_error"], details)


def is_orchestration_error(exc: BaseException) -> bool:
    """An error of Prefect's machinery around a trial's task run, not of its body: an API error,
    or concurrency slots the server could not grant (a busy server's 503 arrives that way)."""
    slots = (ConcurrencySlotAcquisitionError, AcquireConcurrencySlotTimeoutError)
    return is_api_error(exc) or isinstance(exc, slots)


def evaluate_batch(common: dict):
    """Evaluate a batch: every trial submitted at once to the flow run's task runner (Dask), or,
    outside a flow run (the Prefect API away), run here one by one. A trial Prefect could not run
    (API down, concurrency slots refused) is run here instead; one that raises is logged and
    counted as failed."""

    def here(number: int, allocation: Allocation) -> Measured | None:
        try:
            return measured(search_trial.fn(number, allocation=allocation.to_dict(), **common))
        except Exception as err:  # noqa: BLE001 - one bad trial must not end the search
            run_logger().warning("trial %d failed: %s", number, err)
            return None

    def evaluate(batch: list[tuple[int, Allocation]]) -> list[Measured | None]:
        if FlowRunContext.get() is None:
            return [here(number, a) for number, a in batch]
        futures = [
            search_trial.with_options(tags=["search", f"trial:{number}", *describe(a)]).submit(
                number=number, allocation=a.to_dict(), **common
            )
            for number, a in batch
        ]
        results: list[Measured | None] = []
        for (number, allocation), future in zip(batch, futures, strict=True):
            try:
                results.append(measured(future.result()))
            except Exception as err:  # noqa: BLE001 - one bad trial must not end the search
                if not is_orchestration_error(err):
                    run_logger().warning("trial %d failed: %s", number, err)
                    results.append(None)
                    continue
                run_logger().warning(
                    "trial %d: Prefect could not run it (%s); running it here, unmonitored",
                    number, err,
                )  # fmt: skip
                results.append(here(number, allocation))
        return results

    return evaluate


@dataclass(frozen=True)
class StudyRef:
    """Where a study lives and how its sampler is seeded: what a trials run reopens."""

    storage: str
    name: str
    sampler: SearchSampler
    seed: int


def run_trials(
    model: str,
    study: StudyRef,
    space: SearchSpace,
    total: int,
    batch_size: int,
    dense_path: str,
    common: dict,
) -> int:
    """Ask, evaluate and tell batches until `total` trials have finished; returns that count."""
    opened = open_study(study.storage, study.name, make_sampler(study.sampler, study.seed))
    trial_inputs = {**common, "dense": Path(dense_path).read_bytes()}

    def progress(done: int) -> None:
        run_logger().info("search %s: %d of %d trials finished", model, done, total)

    run_batches(opened, space, total, batch_size, evaluate_batch(trial_inputs), progress)
    return finished_trials(opened)


trials_flow = prefect.flow(name="search-trials", flow_run_name="search-trials-{model}")(run_trials)
"""`run_trials` as a plain Prefect flow, given the Dask task runner per run (Dask pickles the
running flow with each task: its function must be importable by name)."""


NOT_SHAPING = ("address", "storage", "trials", "error_budget")
"""Search keys that change neither what a trial computes nor which trials are drawn: where it runs,
where the study lives, how many trials in all, and which front point is chosen. Changing them
resumes the same study."""


def trial_shaping(cfg: SearchConfig) -> dict:
    """The search keys that shape the trials, part of the study's name."""
    return {k: v for k, v in to_dict(cfg).items() if k not in NOT_SHAPING}


@flow(name="search", flow_run_name="search-{model}")
def search_flow(params_path: str, root: str, model: str) -> dict:
    """Run (or resume) the model's search study; write its front, figure and chosen allocation."""
    params, plan, workspace = setup(params_path, root, model)
    if (reason := skip_reason(params, "search")) is not None:
        return write_skipped(workspace, reason)
    cfg = model_section(params_path, model, "search").search
    logger = run_logger()
    dense_bytes_raw = workspace.checkpoint("dense").read_bytes()
    dense = Checkpoint.from_bytes(dense_bytes_raw)
    dense.expect_model(model)
    kinds = {name: p.kind for name, p in plan.items()}
    space = resolve_space(cfg, kinds, output_layers(dense, list(plan)), f"models.{model}.search")
    settings = TrialSettings(
        cfg.iterations, cfg.schedule, cfg.retrain, cfg.finetune, params.quantize.init,
        params.quantize.engine, params.quantize.codebook, params.run.seed,
        params.run.eval_batch_size,
    )  # fmt: skip
    reference, points = read_sensitivity(workspace)
    defaults = default_allocation(params, plan, space)
    seeds = [defaults, *seed_allocations(points, reference, cfg.seed_tolerances, defaults)]
    source = TrialData(
        folder=str(data_dir(params, workspace).resolve()),
        mnist=params.data.is_mnist,
        val_size=params.data.val_size,
        train_limit=cfg.train_limit or params.data.train_limit,
        val_limit=params.data.val_limit,
    )
    shaping = trial_shaping(cfg)
    inputs = {
        "search": shaping,
        "settings": to_dict(settings),
        "data": to_dict(source) | {"folder": None},
        "seeds": [s.to_dict() for s in seeds],
        "device": params.run.device,
        "code": build_sha256(params, "search"),  # trials of other code or numerics are stale
    }
    name = study_name(model, dense_bytes_raw, inputs)
    folder = Path(root) / "runs" / model / "search"
    folder.mkdir(parents=True, exist_ok=True)
    storage = cfg.storage or f"sqlite:///{(folder / 'study.db').resolve()}"
    study = open_study(storage, name, make_sampler(cfg.sampler, params.run.seed))
    recovered, seeded = recover_interrupted(study), seed_study(study, space, seeds)
    logger.info(
        "study %s: %d trials done, %d interrupted ones enqueued again, %d seeds enqueued",
        name, len(completed(study)), recovered, seeded,
    )  # fmt: skip
    threads = threads_per_worker(cfg.workers, cfg.threads) if cfg.address is None else 0
    common = {
        "settings": settings,
        "source": source,
        "provenance": provenance(dataclasses.replace(params, allocation="searched")),
        "device": params.run.device,
        "threads": threads,
    }
    ref = StudyRef(storage, name, cfg.sampler, params.run.seed)
    dense_path = str(workspace.checkpoint("dense").resolve())
    arguments = (model, ref, space, cfg.trials, cfg.workers, dense_path, common)
    if is_offline():
        run_trials(*arguments)
    else:
        trials_flow.with_options(task_runner=dask_runner(cfg, threads))(*arguments)
    trial_numerics = numerics(params) | {"threads": threads}
    return write_outputs(workspace, completed(study), dense, cfg, name, defaults, trial_numerics)


FRONT_HEADER = b"file_bytes,val_error\n"
"""The front CSV of a search that did no work: the plot's axes, no point."""


def write_skipped(workspace: Workspace, reason: str) -> dict:
    """The stage's outputs when it does no work: records saying why, a front with no point."""
    record = skipped_record(workspace.model, reason)
    write_json(workspace.metrics("search_front"), record)
    write_bytes_atomic(workspace.metrics("search_front").with_suffix(".csv"), FRONT_HEADER)
    write_bytes_atomic(workspace.plot("pareto.png"), skipped_png(reason))
    write_json(allocation_path(workspace.root, workspace.model), record)
    run_logger().info("%s", reason)
    return record


def write_outputs(
    workspace: Workspace,
    records: list[TrialRecord],
    dense: Checkpoint,
    cfg: SearchConfig,
    name: str,
    defaults: Allocation,
    trial_numerics: dict,
) -> dict:
    """Front (CSV, JSON, with the trials' numerics), its figure and the chosen allocation;
    publishes the front."""
    model = workspace.model
    if not records:
        raise RuntimeError(f"search {name}: no trial completed; see the failed trials' logs")
    dense_bytes = dense_float32_bytes(dense)
    front = pareto_front(records)
    tables = tables_record(records, defaults)
    reference = tables.val_error
    limit = reference + cfg.error_budget
    chosen, within = chosen_record(front, limit)
    rows = [front_row(r, dense_bytes) for r in front]
    summary = {
        "model": model,
        "study": name,
        "trials": len(records),
        "dense_bytes": dense_bytes,
        "error_budget": cfg.error_budget,
        "defaults_val_error": reference,
        "error_limit": limit,
        "chosen": front_row(chosen, dense_bytes) | {"within_budget": within},
        "front": rows,
    }
    write_json(workspace.metrics("search_front"), summary | {"numerics": trial_numerics})
    write_csv(workspace.metrics("search_front").with_suffix(".csv"), rows)
    figure = workspace.plot("pareto.png")
    write_bytes_atomic(
        figure,
        pareto_figure(
            records, front, dense_bytes, chosen, tables, PUBLISHED.get(model, ()),
            f"Compression search: {model}",
        ),
    )  # fmt: skip
    allocation = {
        "model": model,
        "study": name,
        "trial": chosen.number,
        "file_bytes": chosen.file_bytes,
        "ratio": dense_bytes / chosen.file_bytes,
        "val_error": chosen.val_error,
        "error_budget": cfg.error_budget,
        "error_limit": limit,
        "within_budget": within,
        "allocation": chosen.allocation.to_dict(),
        "units_kept": chosen.details.get("units_kept", {}),
        "candidates": [c.to_dict() for c in candidates(front, chosen, tables)],
    }
    write_json(allocation_path(workspace.root, model), allocation)
    logger = run_logger()
    if not within:
        logger.warning(
            "no trial within the error limit %.2f%% (today's tables %.2f%% + budget); chose "
            "the lowest error",
            100 * limit,
            100 * reference,
        )
    logger.info(
        "%s: front of %d points from %d trials; chosen trial %d: %d bytes (%.1fx) at %.2f%% "
        "validation error",
        model, len(front), len(records), chosen.number, chosen.file_bytes,
        dense_bytes / chosen.file_bytes, 100 * chosen.val_error,
    )  # fmt: skip
    publish_table(
        artifact_key(model, "search-front"),
        [{k: v for k, v in row.items() if not k.startswith(("units_", "index_"))} for row in rows],
        f"search {model}: Pareto front (file bytes, validation error)",
    )
    publish_plots_report({"pareto": figure}, key=artifact_key(model, "search"))
    return summary
