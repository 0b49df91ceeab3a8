"""The compression search without Dask: space, Pareto front, choice, resumable study, exact bytes,
config errors and the searched allocation feeding the stages."""

from __future__ import annotations

import dataclasses
import json
import random
from pathlib import Path

import optuna
import pytest
import torch
import yaml

from deepcompression.checkpoint import Checkpoint
from deepcompression.config import ConfigError, OptimConfig, SearchConfig
from deepcompression.inference import stored_input
from deepcompression.schema import from_dict, to_dict
from deepcompression.search.reference import (
    chosen_record,
    default_allocation,
    dense_float32_bytes,
    front_row,
    output_layers,
    tables_record,
)
from deepcompression.search.space import (
    Allocation,
    LayerAllocation,
    resolve_space,
    suggest,
    trial_params,
)
from deepcompression.search.study import (
    Measured,
    TrialRecord,
    choose,
    completed,
    dominates,
    finished_trials,
    make_sampler,
    open_study,
    pareto_front,
    recover_interrupted,
    run_batches,
    seed_study,
    study_name,
)
from deepcompression.search.trial import TrialSettings, run_trial
from flows.allocation import confirmed_path, effective_params
from flows.params import load_params
from models import build_model
from tasks.encode import encode_checkpoint

torch.set_num_threads(1)
ROOT = Path(__file__).parents[1]
KINDS = {"fc1": "fc", "fc2": "fc", "fc3": "fc"}


def _search_cfg(**changes) -> SearchConfig:
    cfg = SearchConfig(
        trials=64,
        workers=2,
        sampler="nsga2",
        error_budget=0.02,
        density_min={"fc": 0.02},
        density_max={"fc": 0.3},
        units_min={"fc": 0.5},
        bits_min={"fc": 2},
        bits_max={"fc": 6},
        index_bits="auto",
        bias=("float32", "float16"),
        seed_tolerances=(0.002, 0.005),
        iterations=3,
        schedule="geometric",
        retrain=OptimConfig(epochs=1, lr=0.01),
        finetune=OptimConfig(epochs=1, lr=0.001),
    )
    return dataclasses.replace(cfg, **changes)


def _allocation(density: float = 0.1, units: float = 1.0, bits: int = 4) -> Allocation:
    layer = LayerAllocation(density, units, bits, None)
    return Allocation({name: layer for name in KINDS}, "float32")


def _record(number: int, file_bytes: int, error: float) -> TrialRecord:
    return TrialRecord(number, file_bytes, error, _allocation())


def test_pareto_front_is_exactly_the_non_dominated_records():
    rng = random.Random(0)
    records = [_record(i, rng.randrange(1000, 5000), rng.random()) for i in range(200)]
    front = pareto_front(records)
    assert front == sorted(front, key=lambda r: r.file_bytes)
    for r in front:
        assert not any(dominates(o, r) for o in records)
    for r in records:
        if r not in front:
            assert any(dominates(f, r) or (f.file_bytes, f.val_error) == (r.file_bytes, r.val_error)
                       for f in front)  # fmt: skip


def test_choice_is_the_smallest_file_within_the_budget():
    front = [_record(0, 1000, 0.05), _record(1, 2000, 0.02), _record(2, 3000, 0.01)]
    assert choose(front, 0.02).number == 1
    assert choose(front, 0.5).number == 0
    assert choose(front, 0.001) is None


def test_the_chosen_record_is_within_the_limit_else_the_lowest_error_flagged():
    front = [_record(0, 1000, 0.05), _record(1, 2000, 0.02), _record(2, 3000, 0.01)]
    assert chosen_record(front, 0.02) == (front[1], True)
    assert chosen_record(front, 0.001) == (front[2], False)


def test_the_reference_is_the_trial_of_the_default_tables():
    defaults = _allocation(0.2)
    records = [_record(0, 1000, 0.05), TrialRecord(1, 2000, 0.03, defaults)]
    assert tables_record(records, defaults) == records[1]
    with pytest.raises(RuntimeError, match="first seed"):
        tables_record(records[:1], defaults)


def test_front_rows_and_dense_bytes_count_every_float_parameter():
    dense = Checkpoint.of(build_model("lenet_300_100"), {"name": "lenet_300_100", "kwargs": {}})
    assert dense_float32_bytes(dense) == 4 * (784 * 300 + 300 + 300 * 100 + 100 + 100 * 10 + 10)
    row = front_row(_record(3, 1000, 0.02), 4000)
    assert (row["trial"], row["ratio"], row["bits_fc1"], row["index_fc2"]) == (3, 4.0, 4, "auto")
    assert output_layers(dense, list(KINDS)) == ["fc3"]


def test_the_default_allocation_is_the_hand_tables():
    params, plan = load_params(ROOT / "params.yaml", "lenet_300_100")
    space = resolve_space(_search_cfg(), KINDS, ["fc3"], "models.m.search")
    defaults = default_allocation(params, plan, space)
    assert {n: a.density for n, a in defaults.layers.items()} == {
        n: p.prune_target for n, p in plan.items()
    }
    assert {n: a.weight_bits for n, a in defaults.layers.items()} == {
        n: p.weight_bits for n, p in plan.items()
    }
    assert defaults.bias == params.quantize.bias
    assert all(a.index_bits is None for a in defaults.layers.values())  # the space's `auto`


def test_suggest_and_trial_params_round_trip():
    space = resolve_space(_search_cfg(), KINDS, ["fc3"], "models.m.search")
    wanted = Allocation(
        {
            "fc1": LayerAllocation(0.05, 0.7, 3, None),
            "fc2": LayerAllocation(0.2, 0.9, 5, None),
            "fc3": LayerAllocation(0.25, 1.0, 6, None),
        },
        "float16",
    )
    study = optuna.create_study(directions=["minimize", "minimize"])
    study.enqueue_trial(trial_params(wanted, space))
    got = suggest(study.ask(), space)
    assert got == wanted
    assert "units.fc3" not in study.trials[0].params  # the output layer keeps every unit


def test_search_config_errors_name_the_key():
    with pytest.raises(ConfigError, match=r"models\.m\.search\.density_min\.fc1"):
        from_dict(
            SearchConfig,
            to_dict(_search_cfg(density_min={"fc1": 0.5, "fc": 0.02}, density_max={"fc1": 0.1}))
            | {"bias": ["float32"]},
            "models.m.search",
        ).validate("models.m.search")
    with pytest.raises(ConfigError, match=r"search\.units_min\.conv9: unknown layer"):
        resolve_space(_search_cfg(units_min={"conv9": 0.5}), KINDS, [], "models.m.search")
    with pytest.raises(ConfigError, match=r"search\.bits_max: no value for layer 'fc1'"):
        resolve_space(_search_cfg(bits_max={}), KINDS, [], "models.m.search")
    with pytest.raises(ConfigError, match=r"search\.address"):
        _search_cfg(address="localhost:8786").validate("search")
    raw = to_dict(_search_cfg())
    raw.pop("error_budget")
    with pytest.raises(ConfigError, match=r"models\.m\.search\.error_budget: missing key"):
        from_dict(SearchConfig, raw, "models.m.search")


class Interrupt(RuntimeError):
    """Stands for a search killed mid-batch."""


def _objectives(allocation: Allocation) -> Measured:
    layers = allocation.layers.values()
    size = sum(int(1e5 * a.density * a.units) * a.weight_bits for a in layers)
    error = sum(0.01 / (a.density * a.weight_bits) for a in layers)
    return Measured(size, error, {"index_bits": {name: 4 for name in allocation.layers}})


def test_an_interrupted_search_resumes_its_study(tmp_path):
    space = resolve_space(_search_cfg(), KINDS, ["fc3"], "models.m.search")
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    name = study_name("m", b"dense", {"search": to_dict(_search_cfg())})
    seeds = [_allocation(0.1, 1.0, 4), _allocation(0.05, 1.0, 3)]
    calls: list[int] = []

    def killed_after_first_batch(batch):
        if calls:
            raise Interrupt("killed")
        calls.extend(number for number, _ in batch)
        return [_objectives(a) for _, a in batch]

    study = open_study(storage, name, make_sampler("nsga2", 0))
    assert seed_study(study, space, seeds) == 2
    with pytest.raises(Interrupt):
        run_batches(study, space, 6, 2, killed_after_first_batch)
    first = {r.number: r for r in completed(study)}
    assert sorted(first) == [0, 1] and finished_trials(study) == 2
    assert first[0].allocation == seeds[0]  # the defaults are the first trial
    interrupted = [t.params for t in study.trials if t.state == optuna.trial.TrialState.RUNNING]
    assert len(interrupted) == 2

    evaluated: list[tuple[int, Allocation]] = []

    def evaluate(batch):
        evaluated.extend(batch)
        return [_objectives(a) for _, a in batch]

    resumed = open_study(storage, name, make_sampler("nsga2", 0))
    assert recover_interrupted(resumed) == 2
    assert seed_study(resumed, space, seeds) == 0  # never seeded twice
    run_batches(resumed, space, 6, 2, evaluate)
    assert len(evaluated) == 4  # the 2 completed trials are not rerun
    records = completed(resumed)
    assert len(records) == 6 and finished_trials(resumed) == 6
    assert {r.number: r for r in records if r.number in first} == first
    rerun = [trial_params(a, space) for _, a in evaluated[:2]]
    assert rerun == interrupted  # the interrupted trials ran again, first
    other = study_name("m", b"dense", {"search": to_dict(_search_cfg(trials=7))})
    assert other != name  # a changed input starts a fresh study


def _dense(seed: int = 0) -> Checkpoint:
    torch.manual_seed(seed)
    return Checkpoint.of(build_model("lenet_300_100"), {"name": "lenet_300_100", "kwargs": {}})


def _splits(n_train: int = 256, n_val: int = 128):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n_train + n_val, 1, 28, 28, generator=g)
    y = torch.randint(0, 10, (n_train + n_val,), generator=g)
    return x[:n_train], y[:n_train], x[n_train:], y[n_train:]


SETTINGS = TrialSettings(
    iterations=2,
    schedule="geometric",
    retrain=OptimConfig(epochs=1, lr=0.01, batch_size=64),
    finetune=OptimConfig(epochs=1, lr=0.001, batch_size=64, weight_decay=0.0),
    init="linear",
    engine="sorted",
    codebook="float16",
    seed=0,
)


@pytest.mark.parametrize("bias", ["float32", "float16", 3])
def test_the_objective_is_the_length_of_the_file_the_encode_stage_writes(bias):
    allocation = Allocation(
        {
            "fc1": LayerAllocation(0.05, 0.5, 4, None),
            "fc2": LayerAllocation(0.1, 1.0, 3, 5),
            "fc3": LayerAllocation(0.3, 1.0, 5, None),
        },
        bias,
    )
    provenance = {"model": "lenet_300_100", "params": {"note": "test"}}
    spec = stored_input(Path("."), mnist=True)
    outcome = run_trial(_dense(), allocation, SETTINGS, _splits(), provenance, input_spec=spec)
    written = encode_checkpoint.fn(outcome.checkpoint, outcome.index_bits, provenance, bias, spec)
    assert outcome.file_bytes == len(written)
    assert outcome.index_bits == {"fc1": None, "fc2": 5, "fc3": None}
    assert outcome.units_kept["fc1"] <= 150  # half of fc1's 300 units dropped
    assert outcome.densities["fc1"] <= 0.05 + 1e-6
    assert 0.0 <= outcome.val_error <= 1.0


def test_float16_biases_are_rounded_in_the_model_and_smaller_in_the_file():
    float32 = _allocation(0.1, 1.0, 4)
    float16 = dataclasses.replace(float32, bias="float16")
    a = run_trial(_dense(), float32, SETTINGS, _splits(), {})
    b = run_trial(_dense(), float16, SETTINGS, _splits(), {})
    saved = a.file_bytes - b.file_bytes  # 2 bytes per bias, give or take the zlib'd header
    assert abs(saved - 2 * (300 + 100 + 10)) <= 8
    bias = b.checkpoint.state_dict["fc1.bias"]
    assert torch.equal(bias, bias.half().float())


def test_searched_allocation_replaces_the_hand_tables(tmp_path):
    raw = json.loads(json.dumps(_params_dict()))
    raw["models"]["lenet_300_100"]["allocation"] = "searched"
    params_path = tmp_path / "params.yaml"
    params_path.write_text(yaml.safe_dump(raw))
    params, plan = load_params(params_path, "lenet_300_100")
    with pytest.raises(ConfigError, match=r"allocation: 'searched' needs .*confirmed\.json"):
        effective_params(params, plan, tmp_path)
    chosen = Allocation(
        {
            "fc1": LayerAllocation(0.031, 0.8, 3, None),
            "fc2": LayerAllocation(0.052, 1.0, 4, None),
            "fc3": LayerAllocation(0.2, 1.0, 5, None),
        },
        "float16",
    )
    path = confirmed_path(tmp_path, "lenet_300_100")
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"skipped": "allocation: params"}))
    with pytest.raises(ConfigError, match=r"holds no allocation .*dvc repro confirm@lenet_300_100"):
        effective_params(params, plan, tmp_path)
    path.write_text(json.dumps({"allocation": chosen.to_dict()}))
    new, new_plan = effective_params(params, plan, tmp_path)
    assert new.prune.density == {"fc1": 0.031, "fc2": 0.052, "fc3": 0.2}
    assert new.prune.units == {"fc1": 0.8, "fc2": 1.0, "fc3": 1.0}
    assert new.quantize.bits == {"fc1": 3, "fc2": 4, "fc3": 5}
    assert new.quantize.bias == "float16"
    assert new.encode.index_bits == {"fc1": "auto", "fc2": "auto", "fc3": "auto"}
    assert {n: p.prune_target for n, p in new_plan.items()} == new.prune.density
    assert {n: p.units_kept for n, p in new_plan.items()} == new.prune.units
    same, same_plan = effective_params(dataclasses.replace(params, allocation="params"), plan, ".")
    assert same_plan is plan


def _params_dict() -> dict:
    return yaml.safe_load((ROOT / "params.yaml").read_text())


def test_study_name_ignores_keys_that_do_not_shape_trials() -> None:
    from flows.search import trial_shaping

    base = trial_shaping(_search_cfg())
    for change in (
        {"error_budget": 0.004},
        {"trials": 99},
        {"address": "tcp://host:8786"},
        {"storage": "sqlite:///x.db"},
    ):
        assert trial_shaping(_search_cfg(**change)) == base, change  # same study, resumed
    assert trial_shaping(_search_cfg(iterations=5)) != base  # a trial computes otherwise
    assert trial_shaping(_search_cfg(bits_max={"fc": 5})) != base  # other trials are drawn


class _FailedFuture:
    """A submitted trial whose run ended in `error`."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    def result(self):
        raise self.error


class _Trial:
    """Stands in for the search-trial task: `submit` fails with a set error per trial number;
    `fn` (the body, run here) returns objectives or raises for the numbers in `body_fails`."""

    def __init__(self, errors: dict[int, Exception], body_fails: set[int]) -> None:
        self.errors, self.body_fails, self.ran_here = errors, body_fails, []

    def with_options(self, **_options):
        return self

    def submit(self, number: int, **_kwargs):
        return _FailedFuture(self.errors[number])

    def fn(self, number: int, **_kwargs) -> dict:
        self.ran_here.append(number)
        if number in self.body_fails:
            raise ValueError("the trial's own error")
        return {"file_bytes": 1000 + number, "val_error": 0.01}


def test_a_trial_prefect_could_not_run_runs_here_and_its_own_errors_count_as_failed(monkeypatch):
    import httpx
    from prefect.concurrency.asyncio import ConcurrencySlotAcquisitionError

    import flows.search as search_flow

    busy = ConcurrencySlotAcquisitionError("Unable to acquire concurrency slots: 503")
    down = httpx.ConnectError("[Errno 111] Connection refused")
    trial = _Trial({0: busy, 1: down, 2: ValueError("bad allocation"), 3: busy}, body_fails={3})
    monkeypatch.setattr(search_flow, "search_trial", trial)
    monkeypatch.setattr(
        search_flow, "FlowRunContext", type("Ctx", (), {"get": staticmethod(object)})
    )
    batch = [(n, _allocation()) for n in range(4)]
    results = search_flow.evaluate_batch({})(batch)
    assert [r.file_bytes if r else None for r in results] == [1000, 1001, None, None]
    assert trial.ran_here == [0, 1, 3]
