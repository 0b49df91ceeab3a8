"""A compressed file loads from a folder that holds the user's own ``models`` package: the library
reaches the project's networks whatever the caller's sys.path (``deepcompression.networks``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from compressed_files import compressed

import models
from deepcompression.data.idx import encode_idx
from deepcompression.data.writer import RawDataset, Split, prepare
from deepcompression.format.loader import load
from deepcompression.networks import ALIAS, build_model, project_models

PROBE = "x = torch.linspace(-1, 1, 784).reshape(1, 1, 28, 28)"
SCRIPT = f"""
import json
import torch
import models
import deepcompression
assert models.OWNER == "user", models.__file__
model = deepcompression.load("net.dcz")
{PROBE}
print(json.dumps({{"training": model.training, "logits": model(x).tolist()}}))
"""


@pytest.fixture(scope="module")
def user_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A user's project: its own `models` package, a compressed MNIST file, IDX digits and a
    prepared MNIST-shaped data folder."""
    folder = tmp_path_factory.mktemp("user_project")
    (folder / "models").mkdir()
    (folder / "models" / "__init__.py").write_text('"""The user\'s networks."""\nOWNER = "user"\n')
    (folder / "net.dcz").write_bytes(compressed("lenet_300_100"))
    (folder / "script.py").write_text(SCRIPT)
    rng = np.random.default_rng(0)
    digits = rng.integers(0, 256, (20, 1, 28, 28), dtype=np.uint8)
    (folder / "digits-idx3-ubyte").write_bytes(encode_idx(digits[:3, 0]))
    split = Split(digits, np.arange(20, dtype=np.int64) % 10, "images", "labels")
    files, _ = prepare(RawDataset(split, split), name="digits", source="idx")
    (folder / "digits").mkdir()
    for name, content in files.items():
        (folder / "digits" / name).write_bytes(content)
    return folder


def _run(folder: Path, *argv: str) -> subprocess.CompletedProcess:
    """`python argv...` in `folder`, which comes first on its sys.path, as for a user's script."""
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    return subprocess.run(
        [sys.executable, *argv], cwd=folder, env=env, capture_output=True, text=True,
        timeout=300, check=False,
    )  # fmt: skip


def test_a_users_script_loads_the_file_next_to_its_own_models(user_folder: Path) -> None:
    result = _run(user_folder, "script.py")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    namespace: dict = {"torch": torch}
    exec(PROBE, namespace)
    with torch.no_grad():
        expected = load(user_folder / "net.dcz")(namespace["x"])
    assert report["training"] is False
    assert torch.equal(torch.tensor(report["logits"]), expected)


def test_predict_and_eval_run_next_to_the_users_models(user_folder: Path) -> None:
    predicted = _run(user_folder, "-m", "cli.main", "predict", "net.dcz", "digits-idx3-ubyte")
    assert predicted.returncode == 0, predicted.stderr
    assert len(predicted.stdout.splitlines()) == 3 and "digits-idx3-ubyte[2]: " in predicted.stdout
    argv = ["-m", "cli.main", "eval", "net.dcz", "--data", "digits", "--device", "cpu", "--json"]
    evaluated = _run(user_folder, *argv)
    assert evaluated.returncode == 0, evaluated.stderr
    assert json.loads(evaluated.stdout)["test_samples"] == 20


def test_the_projects_own_models_package_is_used_when_it_is_on_the_path() -> None:
    assert project_models() is models
    assert ALIAS not in sys.modules
    assert type(build_model("lenet5")) is models.LeNet5
