"""The ``deepcompression`` command line on a tiny real file from a hand-quantized LeNet-300-100."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from cli.errors import EXIT_OK, EXIT_USAGE
from cli.main import main, package_version
from deepcompression.data.mnist import TEST_IMAGES, TEST_LABELS, mnist_test_set
from deepcompression.format.container import QuantizedTensor, encode_model, read_info
from deepcompression.format.loader import load
from deepcompression.training import evaluate
from models import LeNet300100

REPO_ROOT = Path(__file__).parents[1]
ARCH = {"name": "lenet_300_100", "kwargs": {}}
REVISION = "0123456789ab"
LAYER_SETTINGS = {
    "fc1.weight": (0.08, 3, 4),
    "fc2.weight": (0.09, 4, 5),
    "fc3.weight": (0.26, 2, 5),
}
"""Per weight: (kept fraction, weight bits, index bits)."""


def _hand_quantized(seed: int = 0) -> tuple[list[QuantizedTensor], dict[str, torch.Tensor]]:
    """Random masks, labels and centroids for LeNet-300-100's weights; biases stay raw."""
    gen = torch.Generator().manual_seed(seed)
    quantized, raw = [], {}
    for name, param in LeNet300100().state_dict().items():
        if name not in LAYER_SETTINGS:
            raw[name] = torch.randn(param.shape, generator=gen) * 0.01
            continue
        keep, weight_bits, index_bits = LAYER_SETTINGS[name]
        k = 1 << weight_bits
        quantized.append(
            QuantizedTensor(
                name=name,
                mask=torch.rand(param.shape, generator=gen) < keep,
                labels=torch.randint(0, k, param.shape, generator=gen),
                centroids=torch.sort(torch.randn(k, generator=gen) * 0.1).values,
                weight_bits=weight_bits,
                index_bits=index_bits,
            )
        )
    return quantized, raw


@pytest.fixture(scope="module")
def model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real compressed-model file written by encode_model."""
    quantized, raw = _hand_quantized()
    data = encode_model(quantized, raw, ARCH, {"git_revision": REVISION, "params": {}})
    path = tmp_path_factory.mktemp("cli") / "lenet.dcz"
    path.write_bytes(data)
    return path


def _assert_one_error_line(err: str) -> None:
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("deepcompression: error: ")
    assert "Traceback" not in err


def test_inspect_json_matches_read_info(model_file: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["inspect", str(model_file), "--json"]) == EXIT_OK
    out, err = capsys.readouterr()
    assert err == ""
    report = json.loads(out)
    info = read_info(model_file.read_bytes())
    totals = report["totals"]
    assert totals["file_bytes"] == info.file_bytes == model_file.stat().st_size
    assert (
        totals["dense_bytes"]
        == info.dense_bytes
        == 4 * sum(p.numel() for p in LeNet300100().parameters())
    )
    assert totals["ratio"] == pytest.approx(info.dense_bytes / info.file_bytes)
    assert sum(row["bytes"] for row in report["layers"]) == info.payload_bytes
    assert totals["overhead_bytes"] + totals["payload_bytes"] == totals["file_bytes"]
    assert totals["preamble_bytes"] + totals["header_bytes"] == totals["overhead_bytes"]
    assert report["arch"] == ARCH["name"]
    assert report["git_revision"] == REVISION
    assert [row["name"] for row in report["layers"]] == [layer.name for layer in info.layers]


def test_inspect_json_layers_reflect_the_quantized_inputs(
    model_file: Path, capsys: pytest.CaptureFixture
) -> None:
    main(["inspect", str(model_file), "--json"])
    rows = {row["name"]: row for row in json.loads(capsys.readouterr().out)["layers"]}
    quantized, raw = _hand_quantized()
    for q in quantized:
        row = rows[q.name]
        assert row["kind"] == "huffman"
        assert row["shape"] == list(q.shape)
        assert row["density"] == pytest.approx(q.mask.float().mean().item())
        assert (row["weight_bits"], row["index_bits"]) == (q.weight_bits, q.index_bits)
        assert row["codebook_size"] == q.centroids.numel()
        assert row["pqh_ratio"] > row["pq_ratio"] > 1.0
    for name, tensor in raw.items():
        row = rows[name]
        assert (row["kind"], row["density"], row["pq_ratio"]) == ("raw", 1.0, None)
        assert row["bytes"] == 4 * tensor.numel()


def test_inspect_human_table_is_aligned(model_file: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["inspect", str(model_file)]) == EXIT_OK
    out, err = capsys.readouterr()
    assert err == ""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("layer"))
    table = lines[start : start + 1 + len(read_info(model_file.read_bytes()).layers)]
    assert [line.split()[0] for line in table[1:]] == [
        "fc1.weight",
        "fc2.weight",
        "fc3.weight",
        "fc1.bias",
        "fc2.bias",
        "fc3.bias",
    ]
    kind_column = table[0].index("kind")
    assert all(line[kind_column:].split()[0] in {"kind", "huffman", "raw"} for line in table)
    bytes_end = table[0].index("bytes") + len("bytes")
    assert all(line[bytes_end - 1] != " " and line[bytes_end] == " " for line in table)
    assert ARCH["name"] in out and REVISION in out
    assert str(read_info(model_file.read_bytes()).file_bytes) in out


def test_eval_on_real_mnist(
    model_file: Path, mnist_root: Path, capsys: pytest.CaptureFixture
) -> None:
    argv = ["eval", str(model_file), "--data", str(mnist_root), "--device", "cpu"]
    assert main([*argv, "--json"]) == EXIT_OK
    out, err = capsys.readouterr()
    result = json.loads(out)
    assert set(result) >= {"test_error", "test_samples", "decode_seconds", "eval_seconds"}
    assert isinstance(result["test_error"], float) and 0.0 <= result["test_error"] <= 1.0
    assert result["test_samples"] == 10000
    assert result["decode_seconds"] >= 0.0 and result["eval_seconds"] >= 0.0
    assert (result["arch"], result["device"]) == (ARCH["name"], "cpu")
    model = load(model_file.read_bytes())
    raw = mnist_root / "MNIST" / "raw"
    test_x, test_y = mnist_test_set(
        (raw / TEST_IMAGES).read_bytes(), (raw / TEST_LABELS).read_bytes()
    )
    expected = evaluate(model, test_x, test_y)
    assert result["test_error"] == expected.error and result["test_loss"] == expected.loss

    assert main([*argv, "--batch-size", "4096"]) == EXIT_OK
    human = capsys.readouterr().out
    assert "10000" in human and f"{100 * result['test_error']:.2f}%" in human


def test_eval_reads_mnist_from_raw_in_the_folder_given(
    model_file: Path, mnist_root: Path, capsys: pytest.CaptureFixture
) -> None:
    """``--data data/MNIST`` (the data stage's data/<name> with raw/ inside) = ``--data data``."""
    results = []
    for data in (mnist_root, mnist_root / "MNIST"):
        argv = ["eval", str(model_file), "--data", str(data), "--device", "cpu", "--json"]
        assert main(argv) == EXIT_OK
        results.append(json.loads(capsys.readouterr().out))
    by_root, by_name = results
    assert by_root["data_folder"] == by_name["data_folder"] == str(mnist_root / "MNIST" / "raw")
    assert by_root["data"] == by_name["data"] == "MNIST"
    assert (by_root["test_error"], by_root["test_loss"]) == (
        by_name["test_error"],
        by_name["test_loss"],
    )


def test_eval_without_data_says_how_to_get_it(
    model_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    code = main(["eval", str(model_file), "--data", str(tmp_path / "nowhere"), "--device", "cpu"])
    out, err = capsys.readouterr()
    assert code == EXIT_USAGE and out == ""
    _assert_one_error_line(err)
    assert "dvc repro data" in err and "--data" in err


def _truncated(path: Path, tmp_path: Path) -> Path:
    target = tmp_path / "truncated.dcz"
    target.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return target


def _random_bytes(path: Path, tmp_path: Path) -> Path:
    target = tmp_path / "random.dcz"
    noise = torch.randint(0, 256, (4096,), generator=torch.Generator().manual_seed(7))
    target.write_bytes(noise.to(torch.uint8).numpy().tobytes())
    return target


@pytest.mark.parametrize("command", ["inspect", "eval"])
@pytest.mark.parametrize(
    ("make_input", "expected"),
    [
        (lambda path, tmp: tmp / "missing.dcz", "no such file"),
        (_truncated, "not a valid compressed-model file"),
        (_random_bytes, "not a valid compressed-model file"),
        (lambda path, tmp: tmp, "is a directory"),
    ],
    ids=["missing", "truncated", "random-bytes", "directory"],
)
def test_bad_input_is_one_line_exit_2(
    command: str,
    make_input: Callable[[Path, Path], Path],
    expected: str,
    model_file: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
) -> None:
    bad = make_input(model_file, tmp_path)
    code = main([command, str(bad), "--json", *(["--device", "cpu"] if command == "eval" else [])])
    out, err = capsys.readouterr()
    assert code == EXIT_USAGE and out == ""
    _assert_one_error_line(err)
    assert expected in err and str(bad) in err


@pytest.mark.parametrize(
    ("arch", "expected"),
    [
        ({"name": "no_such_net"}, "unknown model 'no_such_net'"),
        ({"name": "lenet5"}, "weights do not fit model 'lenet5'"),
    ],
)
def test_eval_rejects_a_file_whose_arch_does_not_fit(
    arch: dict, expected: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    quantized, raw = _hand_quantized()
    path = tmp_path / "odd.dcz"
    path.write_bytes(encode_model(quantized, raw, arch, {}))
    code = main(["eval", str(path), "--data", str(tmp_path), "--device", "cpu"])
    out, err = capsys.readouterr()
    assert code == EXIT_USAGE and out == ""
    _assert_one_error_line(err)
    assert expected in err


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture) -> None:
    assert main([]) == EXIT_USAGE
    assert main(["eval", "x.dcz", "--batch-size", "0"]) == EXIT_USAGE
    assert main(["inspect"]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("deepcompression") >= 3


def test_version(capsys: pytest.CaptureFixture) -> None:
    assert main(["--version"]) == EXIT_OK
    assert capsys.readouterr().out.strip() == f"deepcompression {package_version()}"
    assert package_version() != "unknown"


def _command() -> list[str]:
    installed = shutil.which("deepcompression")
    return [installed] if installed else [sys.executable, "-m", "cli.main"]


def test_console_script_in_a_subprocess(model_file: Path, tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [*_command(), *args], capture_output=True, text=True, cwd=REPO_ROOT, env=env,
            timeout=120, check=False,
        )  # fmt: skip

    ok = run("inspect", str(model_file), "--json")
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["totals"]["file_bytes"] == model_file.stat().st_size

    bad = _random_bytes(model_file, tmp_path)
    failed = run("inspect", str(bad))
    assert failed.returncode == 2 and failed.stdout == ""
    _assert_one_error_line(failed.stderr)


def test_inspect_lists_the_units_a_version_3_file_keeps(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    quantized, raw = _hand_quantized()
    fc1 = quantized[0]
    mask = fc1.mask.clone()
    mask[::2] = False  # half of fc1's neurons and most input pixels empty: stored as removed units
    mask[:, 300:] = False
    quantized[0] = QuantizedTensor(fc1.name, mask, fc1.labels, fc1.centroids, 3, None)
    path = tmp_path / "units.dcz"
    provenance = {"git_revision": REVISION}
    path.write_bytes(encode_model(quantized, raw, ARCH, provenance, format_version=3))
    assert main(["inspect", str(path), "--json"]) == EXIT_OK
    report = json.loads(capsys.readouterr().out)
    rows = {row["name"]: row for row in report["layers"]}
    assert report["format_version"] == 3
    kept = rows["fc1.weight"]["kept_units"]
    assert kept[0] == 150 and kept[1] <= 300 and rows["fc1.bias"]["kept_units"] is None
    assert rows["fc1.weight"]["index_bits"] in range(1, 17)
    assert main(["inspect", str(path)]) == EXIT_OK
    table = capsys.readouterr().out
    assert "units kept" in table and f"{kept[0]}x{kept[1]}" in table
