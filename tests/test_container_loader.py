"""load / load_with_info: the header's arch (registry name + kwargs) rebuilds the network, ready in
eval mode, from bytes or a path; limits apply."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch

import deepcompression
import models
from deepcompression.format.container import DecodedTooLarge, encode_model
from deepcompression.format.loader import ModelBuildError, load, load_with_info
from models import UnknownModelError, build_model


def _file(arch: dict, **kwargs: object) -> bytes:
    """Every parameter of ``build_model(**arch)`` stored raw (float16 biases), under ``arch``."""
    torch.manual_seed(0)
    model = build_model(arch["name"], **arch.get("kwargs", {}))
    state = {k: v.half() if k.endswith("bias") else v for k, v in model.state_dict().items()}
    return encode_model([], state, arch, {}, **kwargs)  # type: ignore[arg-type]


def test_load_with_info_passes_the_header_kwargs_to_the_constructor() -> None:
    arch = {"name": "lenet_300_100", "kwargs": {"num_classes": 7}}
    model, decoded = load_with_info(_file(arch))
    assert decoded.arch == arch and model.fc3.out_features == 7
    assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 7)
    assert decoded.state_dict["fc3.bias"].dtype == torch.float16
    assert model.fc3.bias.dtype == torch.float32  # cast on load
    assert torch.equal(model.fc3.bias, decoded.state_dict["fc3.bias"].float())


def test_version_1_files_without_kwargs_still_load() -> None:
    torch.manual_seed(0)
    state = build_model("lenet5").state_dict()
    data = encode_model([], state, {"name": "lenet5"}, {}, format_version=1)
    model = load(data)
    assert torch.equal(model.conv1.weight, state["conv1.weight"])


@pytest.mark.parametrize(
    ("arch", "error", "message"),
    [
        ({"name": "no_such_net"}, UnknownModelError, "unknown model 'no_such_net'"),
        ({"name": "lenet5", "kwargs": {"bogus": 1}}, ModelBuildError, "cannot build model"),
        ({"name": "lenet5", "kwargs": {"num_classes": -3}}, ModelBuildError, "cannot build"),
        ({"name": "lenet5", "kwargs": {"num_classes": 3}}, ModelBuildError, "do not fit"),
        ({"name": "lenet5", "kwargs": {"num_classes": 10**12}}, ModelBuildError, "do not fit"),
        ({"kwargs": {}}, ModelBuildError, "header arch must be"),
    ],
)
def test_load_rejects_archs_that_do_not_fit(
    arch: dict, error: type[Exception], message: str
) -> None:
    torch.manual_seed(0)
    data = encode_model([], build_model("lenet5").state_dict(), arch, {})
    start = time.perf_counter()
    with pytest.raises(error, match=message):
        load(data)
    assert time.perf_counter() - start < 5.0  # 10**12 classes are never allocated


def test_load_applies_max_decoded_bytes() -> None:
    data = _file({"name": "lenet_300_100", "kwargs": {}})
    with pytest.raises(DecodedTooLarge, match="max_decoded_bytes"):
        load(data, max_decoded_bytes=1000)
    load(data, max_decoded_bytes=2**21)


def test_load_gives_a_model_in_eval_mode_from_bytes_or_a_path(tmp_path: Path) -> None:
    torch.manual_seed(0)
    reference = build_model("small_bn_cnn", width=4)
    reference.features[0][1].running_mean.normal_()  # eval and train mode now differ
    data = encode_model([], reference.state_dict(), models.model_arch(reference), {})
    path = tmp_path / "net.dcz"
    path.write_bytes(data)
    x = torch.randn(3, 1, 28, 28)
    expected = reference.eval()(x)
    for source in (data, bytearray(data), memoryview(data), path, str(path)):
        model = load(source)
        assert not model.training and torch.equal(model(x), expected)
    assert deepcompression.load is load and deepcompression.load_with_info is load_with_info
    with pytest.raises(TypeError, match="the file's bytes or its path"):
        load(12)  # type: ignore[arg-type]
    with pytest.raises(FileNotFoundError):
        load(tmp_path / "missing.dcz")
