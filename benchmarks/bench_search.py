"""Search throughput: trials per hour on a dask.distributed local cluster of 1 and of 2 workers.

Run from the repository root after `dvc repro train@MODEL` (it needs checkpoints/MODEL/dense.pt
and data/MNIST): ``.venv/bin/python -m benchmarks.bench_search [--model lenet_300_100]
[--trials 4] [--workers 1 2]``. Each worker count gets a fresh cluster (processes, torch threads
= cores / workers, as the search stage sets them) and the same `--trials` allocations, sampled
at random from the model's search space in params.yaml; trials use the search section's settings
(iterations, retraining, fine-tuning, train_limit), so a trial costs what it costs in the stage.
The figure includes each worker's one-off data load, not the cluster start-up (printed apart).
Prefect is not involved: trials run the task's function (`tasks.search.compress_trial`).
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import optuna
from distributed import Client, LocalCluster

from deepcompression.search.reference import output_layers
from deepcompression.search.space import resolve_space, suggest
from deepcompression.search.trial import TrialSettings
from flows.common import data_dir
from flows.params import load_params, read_params
from flows.provenance import provenance
from flows.search import threads_per_worker
from runtime.workspace import Workspace
from tasks.io import load_checkpoint
from tasks.search import TrialData, compress_trial


def sample_allocations(model: str, count: int, seed: int = 0) -> list[dict]:
    """`count` allocations drawn at random from the model's search space."""
    params, plan = load_params("params.yaml", model)
    cfg = read_params("params.yaml").models[model].search
    dense = load_checkpoint(Workspace(Path("."), model).checkpoint("dense"))
    kinds = {name: p.kind for name, p in plan.items()}
    space = resolve_space(cfg, kinds, output_layers(dense, list(plan)), "search")
    study = optuna.create_study(
        directions=["minimize", "minimize"], sampler=optuna.samplers.RandomSampler(seed=seed)
    )
    return [suggest(study.ask(), space).to_dict() for _ in range(count)]


def trial_inputs(model: str, threads: int) -> dict:
    """Everything but the number and allocation a trial takes, as the search stage builds it."""
    params, _ = load_params("params.yaml", model)
    cfg = read_params("params.yaml").models[model].search
    workspace = Workspace(Path("."), model)
    settings = TrialSettings(
        cfg.iterations, cfg.schedule, cfg.retrain, cfg.finetune, params.quantize.init,
        params.quantize.engine, params.quantize.codebook, params.run.seed,
        params.run.eval_batch_size,
    )  # fmt: skip
    return {
        "dense": workspace.checkpoint("dense").read_bytes(),
        "settings": settings,
        "source": TrialData(
            folder=str(data_dir(params, workspace).resolve()),
            mnist=params.data.is_mnist,
            val_size=params.data.val_size,
            train_limit=cfg.train_limit or params.data.train_limit,
            val_limit=params.data.val_limit,
        ),
        "provenance": provenance(dataclasses.replace(params, allocation="searched")),
        "device": params.run.device,
        "threads": threads,
    }


def measure(model: str, workers: int, threads: int, allocations: list[dict]) -> tuple[float, float]:
    """(cluster start-up seconds, seconds for all trials) on a fresh local cluster."""
    start = time.perf_counter()
    env = {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    with (
        LocalCluster(
            n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None, env=env
        ) as cluster,
        Client(cluster) as client,
    ):
        client.wait_for_workers(workers)
        ready = time.perf_counter()
        common = trial_inputs(model, threads)
        futures = [
            client.submit(compress_trial, i, allocation=a, pure=False, **common)
            for i, a in enumerate(allocations)
        ]
        client.gather(futures)
        return ready - start, time.perf_counter() - ready


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="lenet_300_100")
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads per worker (default: the search stage's choice, cores / workers)",
    )
    args = parser.parse_args()
    allocations = sample_allocations(args.model, args.trials)
    print(f"{args.model}: {args.trials} trials per run, random allocations from the search space")
    for workers in args.workers:
        wanted = args.threads or read_params("params.yaml").models[args.model].search.threads
        threads = threads_per_worker(workers, wanted)
        startup, seconds = measure(args.model, workers, threads, allocations)
        print(
            f"{workers} worker(s) x {threads} thread(s): "
            f"{seconds:.1f} s for {args.trials} trials = {3600 * args.trials / seconds:.0f} "
            f"trials/hour ({seconds / args.trials:.1f} s per trial; cluster start {startup:.1f} s)"
        )


if __name__ == "__main__":
    main()
