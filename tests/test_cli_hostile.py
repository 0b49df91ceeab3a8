"""The command line on hostile but valid files: escaped names, bounded output, decoded-size cap."""

from __future__ import annotations

import collections
import io
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from container_bytes import PREAMBLE, pack, rebuild, split

from cli.errors import EXIT_OK, EXIT_USAGE, MAX_ERROR_CHARS, error_line
from cli.inspect import DEFAULT_MAX_ROWS
from cli.main import byte_size, main
from cli.text import printable
from deepcompression.format.container import QuantizedTensor, encode_model, read_info
from models import build_model

HOSTILE_NAMES = [
    "\ud800",
    "evil\x1b[31mred\nnext",
    "tab\there\r",
    "\u202eright-to-left",
    "del\x7f\x00nul",
    "plain.bias",
    "accents-é-漢字-😀",
]
ESCAPED = {
    "\ud800": "\\ud800",
    "evil\x1b[31mred\nnext": "evil\\x1b[31mred\\x0anext",
    "tab\there\r": "tab\\x09here\\x0d",
    "\u202eright-to-left": "\\u202eright-to-left",
    "del\x7f\x00nul": "del\\x7f\\x00nul",
    "plain.bias": "plain.bias",
    "accents-é-漢字-😀": "accents-é-漢字-😀",
}


def _assert_safe(text: str) -> None:
    """Encodable as UTF-8, and no control character but the newlines between lines."""
    text.encode("utf-8")
    assert all(char.isprintable() for line in text.splitlines() for char in line), text


def _assert_one_error_line(err: str) -> None:
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("deepcompression: error: ")
    assert "Traceback" not in err and "error: unexpected" not in err
    _assert_safe(err)


@pytest.fixture()
def hostile_file(tmp_path: Path) -> Path:
    raw = {name: torch.tensor([float(i)]) for i, name in enumerate(HOSTILE_NAMES)}
    arch = {"name": "net\x1b]0;pwned\x07", "kwargs": {}}
    data = encode_model([], raw, arch, {"git_revision": "\ud83d\x1b[2J"})
    path = tmp_path / "hostile.dcz"
    path.write_bytes(data)
    return path


def test_printable_escapes_what_a_terminal_would_act_on() -> None:
    for name, escaped in ESCAPED.items():
        assert printable(name) == escaped
    assert printable("\U000e0001") == "\\U000e0001"  # a non-printable beyond the BMP


def test_inspect_prints_hostile_names_escaped(
    hostile_file: Path, capsys: pytest.CaptureFixture
) -> None:
    assert main(["inspect", str(hostile_file)]) == EXIT_OK
    out, err = capsys.readouterr()
    assert err == ""
    _assert_safe(out)
    for escaped in ESCAPED.values():
        assert escaped in out
    assert "net\\x1b]0;pwned\\x07" in out and "\\ud83d\\x1b[2J" in out
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("layer"))
    assert len(lines[start + 1 : start + 1 + len(HOSTILE_NAMES)]) == len(HOSTILE_NAMES)


def test_inspect_json_is_ascii_and_keeps_names_exactly(
    hostile_file: Path, capsys: pytest.CaptureFixture
) -> None:
    assert main(["inspect", str(hostile_file), "--json"]) == EXIT_OK
    out = capsys.readouterr().out
    out.encode("ascii")
    report = json.loads(out)
    assert [row["name"] for row in report["layers"]] == HOSTILE_NAMES
    assert report["arch"] == "net\x1b]0;pwned\x07"


def test_output_survives_a_terminal_that_cannot_encode_the_names(
    hostile_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stream = io.TextIOWrapper(io.BytesIO(), encoding="ascii")
    monkeypatch.setattr(sys, "stdout", stream)
    assert main(["inspect", str(hostile_file)]) == EXIT_OK
    stream.flush()
    text = stream.buffer.getvalue().decode("ascii")  # type: ignore[attr-defined]
    assert "accents-\\xe9-\\u6f22\\u5b57-\\U0001f600" in text


def test_error_messages_escape_the_file_name(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    for name in ["bad\x1b[2Jname\n.dcz", "\udcff-undecodable.dcz", "x" * 3000]:
        assert main(["inspect", str(tmp_path / name)]) == EXIT_USAGE
        out, err = capsys.readouterr()
        assert out == ""
        _assert_one_error_line(err)
        assert (printable(name) in err and "no such file" in err) or len(name) > 500
        assert len(err) < 600


def _many_empty_tensors(count: int) -> bytes:
    """A valid version-1 file (as reported) with ``count`` empty raw tensors, written directly."""
    records = ",".join(
        f'{{"data":[0,0],"kind":"raw","name":"t{i:06d}","shape":[0]}}' for i in range(count)
    )
    text = '{"arch":{"kwargs":{},"name":"lenet_300_100"},"provenance":{},"tensors":[' + records
    return pack((text + "]}").encode(), version=1, compress=True)


TENSORS = 5000
"""Enough tensors that listing them all would print ~500 KB (the reported file had 260,000)."""


@pytest.fixture(scope="module")
def crowded_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("crowded") / "crowded.dcz"
    path.write_bytes(_many_empty_tensors(TENSORS))
    return path


def test_inspect_summarises_a_file_with_many_tensors(
    crowded_file: Path, capsys: pytest.CaptureFixture
) -> None:
    assert len(read_info(crowded_file.read_bytes()).layers) == TENSORS
    assert main(["inspect", str(crowded_file)]) == EXIT_OK
    out = capsys.readouterr().out
    assert len(out) < 20_000
    assert f"... and {TENSORS - DEFAULT_MAX_ROWS} more tensors (use --all to list them)" in out
    assert "t000099" in out and "t000100" not in out
    assert main(["inspect", str(crowded_file), "--json"]) == EXIT_OK
    report = json.loads(capsys.readouterr().out)
    assert len(report["layers"]) == DEFAULT_MAX_ROWS
    assert (report["tensor_count"], report["omitted_tensors"]) == (TENSORS, TENSORS - 100)


def test_inspect_all_lists_every_tensor(crowded_file: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["inspect", str(crowded_file), "--all"]) == EXIT_OK
    out = capsys.readouterr().out
    assert f"t{TENSORS - 1:06d}" in out and "more tensors" not in out
    assert sum(line.startswith("t0") for line in out.splitlines()) == TENSORS


def test_eval_error_on_a_file_with_many_tensors_is_capped(
    crowded_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    code = main(["eval", str(crowded_file), "--data", str(tmp_path), "--device", "cpu"])
    out, err = capsys.readouterr()
    assert code == EXIT_USAGE and out == ""
    _assert_one_error_line(err)
    message = err.rstrip("\n").removeprefix("deepcompression: error: ")
    assert len(message) <= MAX_ERROR_CHARS
    assert "do not fit model 'lenet_300_100'" in message


def test_long_names_are_cut_in_the_table_but_whole_in_json(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    name = "n" * 5000
    path = tmp_path / "long.dcz"
    path.write_bytes(encode_model([], {name: torch.zeros(1)}, {}, {}))
    assert main(["inspect", str(path)]) == EXIT_OK
    out = capsys.readouterr().out
    assert max(len(line) for line in out.splitlines()) < 300
    assert main(["inspect", str(path), "--json"]) == EXIT_OK
    assert json.loads(capsys.readouterr().out)["layers"][0]["name"] == name


def test_error_line_is_one_escaped_line_of_at_most_500_characters() -> None:
    assert error_line("short\nmessage") == "deepcompression: error: short message"
    long = error_line("x\x1b" * 10**6)
    message = long.removeprefix("deepcompression: error: ")
    assert len(message) == MAX_ERROR_CHARS and message.endswith("... (truncated)")
    assert "\x1b" not in long and "x\\x1bx" in long


def _constant_layer(numel: int) -> bytes:
    """A ~340-byte valid version-1 file: one dense single-cluster layer of ``numel`` weights."""
    ones = torch.ones(3, dtype=torch.bool)
    layer = QuantizedTensor("fc1.weight", ones, ones.long() * 0, torch.tensor([0.5]), 1, 1)
    data = encode_model(
        [layer], {}, {"name": "lenet_300_100"}, {}, compress_header=False, format_version=1
    )
    header, payload = split(data)
    tensor = header["tensors"][0]
    tensor["shape"] = [numel]
    tensor["nnz"] = tensor["index"]["symbols"] = tensor["weight"]["symbols"] = numel
    return rebuild(header, payload, version=PREAMBLE.unpack_from(data)[1])


def test_eval_refuses_a_tiny_file_that_decodes_to_a_gibibyte(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    path = tmp_path / "bomb.dcz"
    path.write_bytes(_constant_layer(2**28))
    assert path.stat().st_size < 400
    code = main(["eval", str(path), "--data", str(tmp_path), "--device", "cpu"])
    out, err = capsys.readouterr()
    assert code == EXIT_USAGE and out == ""
    _assert_one_error_line(err)
    assert "1073741824 bytes" in err and "--max-decoded-bytes" in err


def test_max_decoded_bytes_flag(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    torch.manual_seed(0)
    state = build_model("lenet_300_100").state_dict()
    path = tmp_path / "lenet.dcz"
    path.write_bytes(encode_model([], state, {"name": "lenet_300_100", "kwargs": {}}, {}))
    argv = ["eval", str(path), "--data", str(tmp_path / "none"), "--device", "cpu"]
    assert main([*argv, "--max-decoded-bytes", "1MiB"]) == EXIT_USAGE
    assert "over the limit of 1048576 bytes" in capsys.readouterr().err
    assert main([*argv, "--max-decoded-bytes", "2MiB"]) == EXIT_USAGE
    assert "MNIST test set not usable" in capsys.readouterr().err  # decoded, then no data
    assert main([*argv, "--max-decoded-bytes", "lots"]) == EXIT_USAGE
    assert "expected a byte count" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("1000", 1000),
        ("0", 0),
        ("2GiB", 2 * 2**30),
        ("512 mib", 512 * 2**20),
        ("1GB", 10**9),
        ("3kB", 3000),
        (" 7 B ", 7),
        ("1TiB", 2**40),
    ],
)
def test_byte_sizes(text: str, value: int) -> None:
    assert byte_size(text) == value


@pytest.mark.parametrize("text", ["", "-1", "1.5GiB", "2 GiBs", "GiB", "1e9", "٣"])
def test_bad_byte_sizes(text: str) -> None:
    with pytest.raises(Exception, match="expected a byte count"):
        byte_size(text)


def test_inspect_never_crashes_on_files_the_reader_accepts(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """Random header values (names, arch, provenance) in files the reader accepts."""
    rng = np.random.default_rng(7)
    alphabet = ["a", "\x1b", "\n", "\ud800", "\udfff", "é", "😀", "\u202e", "\x00", " ", "\\"]
    values: list[object] = [None, 0, -1.5, True, [], {"k": "\x1b"}, "x" * 600, [["\ud800"]]]
    outcomes: collections.Counter[str] = collections.Counter()
    for case in range(60):
        names = {
            "".join(alphabet[i] for i in rng.integers(0, len(alphabet), rng.integers(1, 12)))
            for _ in range(4)
        }
        raw = {name: torch.zeros(int(rng.integers(0, 3))) for name in names}
        arch = {"name": values[rng.integers(len(values))], "x": values[rng.integers(len(values))]}
        provenance = {"git_revision": values[rng.integers(len(values))]}
        path = tmp_path / f"case{case}.dcz"
        path.write_bytes(encode_model([], raw, arch, provenance, format_version=1))
        for extra in ([], ["--json"]):
            assert main(["inspect", str(path), *extra]) == EXIT_OK, case
            out, err = capsys.readouterr()
            assert err == ""
            _assert_safe(out)
            outcomes["ok"] += 1
    assert outcomes["ok"] == 120
