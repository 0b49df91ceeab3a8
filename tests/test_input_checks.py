"""The `check` stage's input checks, called directly: each bad input a user can give (data files,
pinned sha256, image folders, a train.checkpoint) is refused with a message naming the key or
file and the fix, and a good checkpoint is recorded by its sha256."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import yaml
from input_faults import (
    MODEL,
    ROOT,
    idx_folder,
    image_folder,
    small_params,
    state_dict_file,
    with_fault,
)

from flows.check import INPUTS_DIR, check, main
from flows.inputs import InputError

CHECKPOINT_FAULTS = [
    ("lenet5", 10, False, "unexpected keys: conv1.weight"),
    (MODEL, 3, False, "wrong shapes: fc3.weight (3, 100) (network: (2, 100))"),
    (MODEL, 2, True, "holds pickled Python objects (a whole model"),
]
"""Checkpoints that do not fit the 2-class network (architecture, classes, pickled whole model)
and what the check says of each; tests/test_failed_run_keeps_outputs.py sees it from DVC."""


def _check(tmp_path: Path, raw: dict, capsys) -> tuple[int, str]:
    """Run the check stage on `raw` as params.yaml in `tmp_path`; its exit status and stderr."""
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(raw, sort_keys=False))
    status = check(str(params), str(tmp_path))
    return status, capsys.readouterr().err


@pytest.fixture
def good(tmp_path) -> Path:
    return image_folder(tmp_path / "good")


def test_good_inputs_pass_and_record_no_checkpoint(tmp_path, good, capsys):
    status, err = _check(tmp_path, small_params(good), capsys)
    assert (status, err) == (0, "")
    record = json.loads((tmp_path / INPUTS_DIR / f"{MODEL}.json").read_text())
    assert record == {"train.checkpoint": None}


@pytest.mark.parametrize(
    ("fault", "expected"),
    [
        ("empty_class", "train/b holds no image files"),
        ("odd_size", "is 9x9 pixels, but"),
        ("corrupt_png", "test/a/1.png: not a readable image"),
    ],
)
def test_a_bad_image_folder_is_refused_naming_the_file(tmp_path, good, capsys, fault, expected):
    bad = with_fault(good, tmp_path / fault, fault)
    status, err = _check(tmp_path, small_params(bad), capsys)
    assert status == 2
    assert expected in err, err
    assert not (tmp_path / "checks").exists(), "nothing is written for bad inputs"


def test_a_wrong_pinned_sha256_names_the_key_and_both_sides(tmp_path, good, capsys):
    raw = small_params(good)
    folder = idx_folder(tmp_path / "idx")
    actual = hashlib.sha256((folder / "train-images-idx3-ubyte").read_bytes()).hexdigest()
    raw["data"].update(
        source="idx", local_dir=str(folder), mean=None, std=None,
        sha256={"train-images-idx3-ubyte": "0" * 64},
    )
    status, err = _check(tmp_path, raw, capsys)
    assert status == 2
    assert "data.sha256.train-images-idx3-ubyte: params.yaml pins " + "0" * 64 in err, err
    assert actual in err and "mistyped" in err and "fetch it again" in err
    raw["data"]["sha256"] = {"train-images-idx3-ubyte": actual}
    assert _check(tmp_path, raw, capsys) == (0, "")


@pytest.mark.parametrize(("arch", "classes", "whole", "expected"), CHECKPOINT_FAULTS)
def test_a_checkpoint_that_does_not_fit_is_refused(
    tmp_path, good, capsys, arch, classes, whole, expected
):
    raw = small_params(good)
    path = state_dict_file(tmp_path / "w.pt", arch, num_classes=classes, whole=whole)
    raw["models"][MODEL]["train"]["checkpoint"] = str(path)
    status, err = _check(tmp_path, raw, capsys)
    assert status == 2
    assert f"models.{MODEL}.train.checkpoint" in err and expected in err, err
    assert "\x1b[" not in err and "torch.save(model.state_dict()" in err


def test_a_missing_checkpoint_names_the_key(tmp_path, good, capsys):
    raw = small_params(good)
    raw["models"][MODEL]["train"]["checkpoint"] = str(tmp_path / "nowhere.pt")
    status, err = _check(tmp_path, raw, capsys)
    assert status == 2
    assert f"models.{MODEL}.train.checkpoint: {tmp_path / 'nowhere.pt'} cannot be read" in err


def test_a_good_checkpoint_is_recorded_by_its_sha256(tmp_path, good, capsys):
    raw = small_params(good)
    path = state_dict_file(tmp_path / "w.pt", MODEL)
    raw["models"][MODEL]["train"]["checkpoint"] = str(path)
    assert _check(tmp_path, raw, capsys) == (0, "")
    record = json.loads((tmp_path / INPUTS_DIR / f"{MODEL}.json").read_text())
    assert record == {"train.checkpoint": hashlib.sha256(path.read_bytes()).hexdigest()}


def test_a_network_too_big_for_the_images_names_the_key_and_what_to_remove(tmp_path, capsys):
    raw = small_params(image_folder(tmp_path / "good"))
    base = yaml.safe_load((ROOT / "params.yaml").read_text())["models"]
    raw["models"]["lenet5"] = base["lenet5"]
    raw["data"]["image_size"] = 8
    status, err = _check(tmp_path, raw, capsys)
    assert status == 2
    assert "models.lenet5: lenet5 needs image_size >= 16" in err, err
    assert "data.image_size" in err and "remove models.lenet5 from params.yaml" in err
    assert "Traceback" not in err and err.count("\n") == 1


def test_a_model_without_a_section_lists_the_sections(tmp_path, good, capsys):
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(small_params(good), sort_keys=False))
    assert main([str(params), str(tmp_path), "--model", "mobilenetv2"]) == 2
    err = capsys.readouterr().err
    assert f"no section models.mobilenetv2; models there: {MODEL}" in err, err
    assert main([str(params), str(tmp_path), "--model", "mobilenet_v2"]) == 2
    assert "--new-model mobilenet_v2" in capsys.readouterr().err
    assert main([str(params), str(tmp_path), "--model", MODEL]) == 0



def test_a_source_folder_gone_after_preparing_uses_the_prepared_data(
    tmp_path, capsys, monkeypatch
):
    import flows.inputs
    from deepcompression.data.tensors import DataShape
    from flows.params import read_params

    params_path = tmp_path / "params.yaml"
    params_path.write_text(yaml.safe_dump(small_params(tmp_path / "deleted"), sort_keys=False))
    cfg = read_params(params_path).data
    prepared = tmp_path / "data" / "tiny"
    with pytest.raises(InputError, match="is not a folder"):
        flows.inputs.check_data(cfg, prepared)  # nothing prepared either: the error
    prepared.mkdir(parents=True)
    (prepared / "meta.json").write_text("{}")
    shape = DataShape(channels=1, image_size=8, num_classes=2)
    monkeypatch.setattr(flows.inputs, "folder_shape", lambda folder, mnist: shape)
    assert flows.inputs.check_data(cfg, prepared) == shape
    assert "is gone; the prepared" in capsys.readouterr().err
