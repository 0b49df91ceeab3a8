"""``deepcompression export FILE --onnx OUT`` for every registered network: onnxruntime's logits
on the written model equal the decoded torch network's within 1e-5, for any batch size."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from compressed_files import compressed

from cli.errors import EXIT_FAILURE, EXIT_OK
from cli.main import main
from deepcompression import export
from deepcompression.format.loader import load
from models import model_names

pytestmark = pytest.mark.long(25)

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

TINY: dict[str, dict[str, int]] = {
    "lenet_300_100": {"in_channels": 1, "image_size": 8, "num_classes": 5},
    "lenet5": {"in_channels": 2, "image_size": 16, "num_classes": 4},
    "small_bn_cnn": {"in_channels": 3, "image_size": 10, "num_classes": 3, "width": 4},
    "mobilenet_v2": {"in_channels": 3, "image_size": 8, "num_classes": 3},
    "resnet18": {"in_channels": 1, "image_size": 8, "num_classes": 3},
}
"""Small inputs for each registered network (torchvision's ones on 8x8 images)."""
TORCHVISION = ("mobilenet_v2", "resnet18")
"""Exported in about 20 s each on two cores: marked slow."""


def test_every_registered_network_has_a_tiny_shape() -> None:
    assert sorted(TINY) == model_names()


@pytest.mark.parametrize(
    "name",
    [
        pytest.param(name, marks=pytest.mark.slow) if name in TORCHVISION else name
        for name in sorted(TINY)
    ],
)
def test_onnx_logits_equal_the_decoded_network(
    name: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    data = compressed(name, **TINY[name])
    path, out = tmp_path / f"{name}.dcz", tmp_path / f"{name}.onnx"
    path.write_bytes(data)
    assert main(["export", str(path), "--onnx", str(out)]) == EXIT_OK
    stdout, err = capsys.readouterr()
    assert err == "" and stdout.startswith(f"wrote {out} ")

    session = ort.InferenceSession(out.read_bytes(), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == [export.INPUT_NAME]
    assert [o.name for o in session.get_outputs()] == [export.OUTPUT_NAME]
    model = load(data)
    side, channels = TINY[name]["image_size"], TINY[name]["in_channels"]
    for batch in (1, 3):
        x = torch.randn(batch, channels, side, side, generator=torch.Generator().manual_seed(batch))
        (logits,) = session.run(None, {export.INPUT_NAME: x.numpy()})
        with torch.no_grad():
            expected = model(x).numpy()
        assert logits.shape == (batch, TINY[name]["num_classes"])
        np.testing.assert_allclose(logits, expected, rtol=0, atol=1e-5)


def test_missing_export_packages_are_named_with_the_install_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    path = tmp_path / "net.dcz"
    path.write_bytes(compressed("lenet_300_100", **TINY["lenet_300_100"]))
    monkeypatch.setattr(export, "EXPORT_PACKAGES", ("onnx", "no_such_onnx_package"))
    out = tmp_path / "net.onnx"
    assert main(["export", str(path), "--onnx", str(out)]) == EXIT_FAILURE
    _, err = capsys.readouterr()
    assert "needs no_such_onnx_package: pip install 'deep-compression[export]'" in err
    assert len(err.splitlines()) == 1 and not out.exists()
