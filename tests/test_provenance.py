"""Provenance in the compressed file's header comes from the inputs alone: the params and a hash of
the library code, never git; the git revision is only for the timing record."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

import flows.provenance
from deepcompression.config import RunParams
from flows.params import load_params
from flows.provenance import (
    CODE_DIRS,
    build_sha256,
    code_sha256,
    file_code,
    file_params,
    git_revision,
    provenance,
)
from runtime.workspace import PROJECT_ROOT

SHIPPED = PROJECT_ROOT / "params.yaml"


def _params(model: str = "lenet_300_100", mode: str = "params") -> RunParams:
    """The shipped params of `model`, with `encode.provenance` set to `mode`."""
    params = load_params(SHIPPED, model)[0]
    return dataclasses.replace(params, encode=dataclasses.replace(params.encode, provenance=mode))


def _code_copy(dest: Path) -> Path:
    """A copy of the code folders that count (and one that does not), outside any git repo."""
    for folder in (*CODE_DIRS, "flows"):
        shutil.copytree(
            PROJECT_ROOT / folder, dest / folder, ignore=shutil.ignore_patterns("__pycache__")
        )
    return dest


def _git(cwd: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args],
        cwd=cwd,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()


@pytest.fixture
def no_git_above(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """tmp_path, with git forbidden to look for a repository above it."""
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))
    return tmp_path


# ---- provenance --------------------------------------------------------------------------------


def test_same_params_give_the_same_provenance():
    first, second = provenance(_params()), provenance(_params())
    assert first == second
    assert json.dumps(first, sort_keys=True) == json.dumps(second, sort_keys=True)
    assert set(first) == {"params", "params_sha256", "code_sha256"}
    assert first["params"]["model"] == {"name": "lenet_300_100"}
    assert re.fullmatch(r"[0-9a-f]{8}", first["code_sha256"])
    canonical = json.dumps(first["params"], sort_keys=True).encode()
    assert first["params_sha256"] == hashlib.sha256(canonical).hexdigest()[:8]


def test_hashes_only_provenance_keeps_the_hashes_and_drops_the_copy():
    """`encode.provenance: hashes` records what identifies the run (its params' hash, the code's
    hash; the model is the header's arch) but not the params themselves, so the header shrinks."""
    full, hashes = provenance(_params()), provenance(_params(mode="hashes"))
    assert set(hashes) == {"params_sha256", "code_sha256"}
    assert hashes["code_sha256"] == full["code_sha256"]
    values = file_params(_params(mode="hashes"))
    canonical = json.dumps(values, sort_keys=True).encode()
    assert hashes["params_sha256"] == hashlib.sha256(canonical).hexdigest()[:8]
    assert hashes["params_sha256"] != full["params_sha256"]  # the mode is itself a param
    assert len(json.dumps(hashes)) < len(json.dumps(full)) // 2


def test_absent_provenance_mode_records_the_params():
    """An encode section without `provenance` (older params files) keeps the full record."""
    assert "params" in provenance(_params(mode=None))


def test_a_changed_param_changes_the_provenance():
    base = _params()
    changed = dataclasses.replace(base, train=dataclasses.replace(base.train, epochs=1))
    a, b = provenance(base), provenance(changed)
    assert a["params"]["train"]["epochs"] != b["params"]["train"]["epochs"] == 1
    assert a["params_sha256"] != b["params_sha256"]
    assert a["code_sha256"] == b["code_sha256"]
    assert a != b


def test_each_model_has_its_own_provenance():
    a, b = provenance(_params("lenet_300_100")), provenance(_params("lenet5"))
    assert (a["params"]["model"], b["params"]["model"]) == (
        {"name": "lenet_300_100"},
        {"name": "lenet5"},
    )
    assert a["params_sha256"] != b["params_sha256"]


def test_the_test_limit_does_not_shape_the_file():
    """Only evaluate reads the test set, after the file is written: its limit is not provenance."""
    base = _params()
    limited = dataclasses.replace(base, data=dataclasses.replace(base.data, test_limit=100))
    assert "test_limit" not in file_params(base)["data"]
    assert provenance(limited) == provenance(base)
    val = dataclasses.replace(base, data=dataclasses.replace(base.data, val_limit=100))
    assert provenance(val)["params_sha256"] != provenance(base)["params_sha256"]


def test_provenance_does_not_ask_git(monkeypatch: pytest.MonkeyPatch):
    expected = provenance(_params())

    def no_git(*args, **kwargs):
        raise AssertionError(f"provenance ran a subprocess: {args}")

    monkeypatch.setattr(subprocess, "run", no_git)  # the module flows.provenance calls
    assert provenance(_params()) == expected
    assert "git" not in json.dumps(expected)


# ---- code_sha256 -------------------------------------------------------------------------------


def test_code_hash_follows_the_library_and_model_code(no_git_above: Path):
    root = _code_copy(no_git_above / "code")
    base = code_sha256(root)
    assert code_sha256(root) == base

    data = root / "deepcompression" / "training.py"
    original = data.read_bytes()
    data.write_bytes(original + b"\n# a comment is a change\n")
    edited = code_sha256(root)
    assert edited != base
    data.write_bytes(original)
    assert code_sha256(root) == base

    model_file = next((root / "models").glob("*.py"))
    model_file.write_bytes(model_file.read_bytes() + b"\n")
    assert code_sha256(root) not in (base, edited)


def test_code_hash_counts_added_and_renamed_files_only_under_the_code_dirs(no_git_above: Path):
    root = _code_copy(no_git_above / "code")
    base = code_sha256(root)
    new = root / "deepcompression" / "extra.py"
    new.write_text("X = 1\n")
    added = code_sha256(root)
    assert added != base
    new.rename(root / "deepcompression" / "extra2.py")  # same bytes, another path
    assert code_sha256(root) not in (base, added)
    (root / "deepcompression" / "extra2.py").unlink()
    assert code_sha256(root) == base

    (root / "flows" / "train.py").write_text("# not library code\n")
    (root / "deepcompression" / "notes.txt").write_text("not python\n")
    cache = root / "deepcompression" / "__pycache__"
    cache.mkdir()
    (cache / "data.cpython-312.pyc").write_bytes(b"\x00compiled")
    assert code_sha256(root) == base


def test_code_hash_does_not_depend_on_git(no_git_above: Path):
    plain = _code_copy(no_git_above / "plain")
    repo = _code_copy(no_git_above / "repo")
    with pytest.raises(subprocess.CalledProcessError):  # really outside any repository
        _git(plain, "rev-parse", "HEAD")
    base = code_sha256(plain)
    _git(repo, "init", "-q")
    assert code_sha256(repo) == base  # a repository with nothing committed
    _git(repo, "add", ".")
    _git(repo, "commit", "-qm", "one")
    assert code_sha256(repo) == base
    (repo / "README.md").write_text("another commit\n")
    _git(repo, "add", "README.md")
    _git(repo, "commit", "-qm", "two")  # a new HEAD, same code
    assert code_sha256(repo) == base
    assert code_sha256(plain) == base


# ---- git_revision ------------------------------------------------------------------------------


def test_git_revision_is_heads_short_hash_without_a_dirty_mark():
    revision = git_revision()
    assert re.fullmatch(r"[0-9a-f]{12}", revision), revision
    kind = subprocess.run(
        ["git", "cat-file", "-t", revision],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert kind == "commit"


def test_git_revision_outside_git_is_unknown(no_git_above: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(flows.provenance, "PROJECT_ROOT", no_git_above)
    assert git_revision() == "unknown"


def test_with_a_dvc_yaml_the_hash_covers_the_encode_stage_code_only(no_git_above: Path):
    root = _code_copy(no_git_above / "code")
    listed = ["deepcompression/format/encoder.py", "flows/encode.py", "models/lenet.py"]
    stages = {"stages": {"encode": {"foreach": "${models}", "do": {"deps": ["x.pt", *listed]}}}}
    (root / "dvc.yaml").write_text(yaml.safe_dump(stages))
    assert file_code(root) == sorted(listed)
    base = code_sha256(root)
    unlisted = root / "deepcompression" / "training.py"
    unlisted.write_bytes(unlisted.read_bytes() + b"\n# not code the encoder imports\n")
    assert code_sha256(root) == base, "code outside the encode stage's closure changes no file"
    for name in listed:
        path = root / name
        original = path.read_bytes()
        path.write_bytes(original + b"\n")
        assert code_sha256(root) != base, name
        path.write_bytes(original)
    assert code_sha256(root) == base


def test_the_project_hash_is_over_the_encode_deps_of_its_dvc_yaml():
    deps = yaml.safe_load((PROJECT_ROOT / "dvc.yaml").read_text())["stages"]["encode"]["do"]
    assert file_code() == sorted(d for d in deps["deps"] if d.endswith(".py"))
    assert "flows/encode.py" in file_code() and "deepcompression/format/encoder.py" in file_code()


def test_a_stage_s_hash_covers_that_stage_s_code(no_git_above: Path):
    """The search names its study by its own code's hash (flows/search.py), so trials measured
    by other trial code are never resumed as if they were this code's."""
    root = _code_copy(no_git_above / "code")
    search = ["deepcompression/training.py", "flows/encode.py"]
    looped = {"foreach": "${models}", "do": {"deps": ["d.pt", *search]}}
    stages = {"stages": {"encode": {"deps": ["flows/encode.py"]}, "search": looped}}
    (root / "dvc.yaml").write_text(yaml.safe_dump(stages))
    assert file_code(root, "search") == sorted(search)
    base, encode = code_sha256(root, "search"), code_sha256(root)
    trial = root / "deepcompression" / "training.py"
    trial.write_bytes(trial.read_bytes() + b"\n")
    assert code_sha256(root, "search") != base and code_sha256(root) == encode


def test_the_search_and_the_file_hash_different_code():
    assert build_sha256(_params(), "search") != build_sha256(_params())
    assert "deepcompression/search/trial.py" in file_code(stage="search")
