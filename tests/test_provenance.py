"""The git revision recorded in compressed files: dirty only when code or params changed."""

import subprocess

from flows.provenance import git_revision


def _git(cwd, *args):
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True)


def test_revision_is_dirty_for_code_or_params_edits_only(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert git_revision() == "unknown"
    (tmp_path / "params.yaml").write_text("a: 1\n")
    (tmp_path / "dvc.lock").write_text("x\n")
    _git(tmp_path, "init", "-q")
    _git(tmp_path, "add", ".")
    _git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init")
    head = subprocess.run(
        ["git", "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert git_revision() == head
    (tmp_path / "dvc.lock").write_text("changed by dvc repro\n")
    assert git_revision() == head
    (tmp_path / "params.yaml").write_text("a: 2\n")
    assert git_revision() == f"{head}-dirty"
