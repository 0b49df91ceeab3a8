"""A real `dvc repro` on a copy of the project with tiny image-folder data: a bad input of each
kind (a bad image folder, a wrong pinned sha256, a checkpoint that does not fit) fails in the
`check` stage, before DVC removes any output, so data/<name>, dense.pt and train.json keep their
bytes. Every fault of each kind is refused by `check` itself in tests/test_input_checks.py (empty
class folder, images of two sizes, corrupt PNG; other architecture, class count, pickled model):
whatever `check` refuses stops DVC alike. A `train.checkpoint` overwritten in place is seen by
`dvc status` once `check` has run, and reruns training.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from input_faults import MODEL, idx_folder, image_folder, small_params, state_dict_file, with_fault
from test_input_checks import CHECKPOINT_FAULTS
from tiny_project import DVC, ROOT, project_copy, run

pytestmark = [pytest.mark.slow, pytest.mark.long(61)]
CODE = ("deepcompression", "models", "tasks", "flows", "runtime")
TARGET = f"train@{MODEL}"


def _outputs(repo: Path) -> dict[str, bytes]:
    """Every file of data/tiny and the train stage's outputs, by path."""
    files = sorted(p for p in (repo / "data" / "tiny").rglob("*") if p.is_file())
    files += [
        repo / f"checkpoints/{MODEL}/dense.pt",
        repo / f"metrics/{MODEL}/train.json",
        repo / f"plots/{MODEL}/train.csv",
    ]
    return {str(p.relative_to(repo)): p.read_bytes() for p in files}


def _dvc_yaml(repo: Path) -> str:
    """The project's dvc.yaml with only the code deps that exist (tests/test_dvc_stages.py checks
    the lists; this test is about the order in which DVC checks and removes)."""
    raw = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    for stage in raw["stages"].values():
        body = stage.get("do", stage)
        body["deps"] = [
            d for d in body["deps"] if not d.endswith(".py") or (repo / d).is_file()
        ]
    return yaml.safe_dump(raw, sort_keys=False)


@pytest.fixture(scope="module")
def project(tmp_path_factory, stage_env) -> Iterator[tuple[Path, dict, dict[str, bytes]]]:
    """A git+DVC copy of the project after a good `dvc repro train@<model>` on tiny images: the
    repo, its params and its outputs' bytes."""
    base = tmp_path_factory.mktemp("failed_run")
    params = small_params(image_folder(base / "images"))
    repo = project_copy(base / "repo", CODE, params, stage_env, _dvc_yaml)
    first = run([DVC, "repro", TARGET], repo, stage_env)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    yield repo, params, _outputs(repo)


def _fails_keeping_outputs(project, stage_env, params: dict, expected: str) -> None:
    """`dvc repro` with `params` fails in `check`, says `expected`, and changes no output."""
    repo, good, before = project
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    try:
        result = run([DVC, "repro", TARGET], repo, stage_env)
        said = result.stdout + result.stderr
        assert result.returncode != 0, said[-3000:]
        assert expected in said, said[-3000:]
        assert f"Running stage '{TARGET}'" not in said and "Running stage 'data'" not in said
        assert _outputs(repo) == before, "a failed run must leave every output as it was"
    finally:
        (repo / "params.yaml").write_text(yaml.safe_dump(good, sort_keys=False))


def test_a_bad_image_folder_keeps_the_data(project, stage_env, tmp_path):
    _, good, _ = project
    params = yaml.safe_load(yaml.safe_dump(good))
    bad = with_fault(Path(good["data"]["local_dir"]), tmp_path / "bad", "corrupt_png")
    params["data"]["local_dir"] = str(bad)
    _fails_keeping_outputs(project, stage_env, params, "not a readable image")


def test_a_wrong_sha256_keeps_the_data(project, stage_env, tmp_path):
    _, good, _ = project
    params = yaml.safe_load(yaml.safe_dump(good))
    params["data"].update(
        source="idx",
        local_dir=str(idx_folder(tmp_path / "idx")),
        mean=None,
        std=None,
        sha256={"train-images-idx3-ubyte": "ab" * 32},
    )
    _fails_keeping_outputs(project, stage_env, params, "data.sha256.train-images-idx3-ubyte")


def test_a_bad_checkpoint_keeps_the_dense_model(project, stage_env, tmp_path):
    arch, classes, whole, expected = CHECKPOINT_FAULTS[1]
    _, good, _ = project
    params = yaml.safe_load(yaml.safe_dump(good))
    path = state_dict_file(tmp_path / "w.pt", arch, num_classes=classes, whole=whole)
    params["models"][MODEL]["train"]["checkpoint"] = str(path)
    _fails_keeping_outputs(project, stage_env, params, expected)


def test_an_overwritten_checkpoint_reruns_training(project, stage_env, tmp_path):
    """Runs last: it changes the outputs the other tests compare against."""
    import torch

    repo, good, _ = project
    params = yaml.safe_load(yaml.safe_dump(good))
    path = state_dict_file(tmp_path / "w.pt", MODEL)
    params["models"][MODEL]["train"]["checkpoint"] = str(path)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    assert run([DVC, "repro", TARGET], repo, stage_env).returncode == 0
    dense = (repo / f"checkpoints/{MODEL}/dense.pt").read_bytes()
    status = run([DVC, "status", TARGET], repo, stage_env)
    assert "checks/inputs" not in status.stdout, status.stdout

    torch.manual_seed(1)
    state_dict_file(path, MODEL)  # the same file name, other weights
    assert run([DVC, "repro", "check"], repo, stage_env).returncode == 0
    status = run([DVC, "status", TARGET], repo, stage_env)
    assert f"checks/inputs/{MODEL}.json" in status.stdout, status.stdout
    rerun = run([DVC, "repro", TARGET], repo, stage_env)
    assert f"Running stage '{TARGET}'" in rerun.stdout, rerun.stdout[-3000:]
    assert (repo / f"checkpoints/{MODEL}/dense.pt").read_bytes() != dense
