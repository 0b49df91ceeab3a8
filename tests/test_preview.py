"""`make run`'s preview (runtime/preview.py): which stages `dvc repro` will run and about how long,
from a fake `dvc status --json`, a fake `dvc dag --dot` and recorded or estimated times."""

from __future__ import annotations

import json
from pathlib import Path

from runtime import preview
from runtime.preview import ESTIMATES_S, Planned, dag_edges, plan, report
from runtime.timing import timing_path

DOT = """strict digraph {
"data";
"train@lenet5";
"sensitivity@lenet5";
"search@lenet5";
"prune@lenet5";
"train@lenet_300_100";
"data" -> "train@lenet5";
"data" -> "train@lenet_300_100";
"train@lenet5" -> "sensitivity@lenet5";
"sensitivity@lenet5" -> "search@lenet5";
"search@lenet5" -> "prune@lenet5";
"train@lenet5" -> "prune@lenet5";
}
"""
STATUS = {
    "train@lenet5": [{"changed deps": {"params.yaml": {"run": "modified"}}}],
    "frozen@lenet5": ["frozen"],
}


def test_the_dag_edges_are_read_from_dvcs_dot_output():
    edges = dag_edges(DOT)
    assert ("data", "train@lenet5") in edges and ("search@lenet5", "prune@lenet5") in edges
    assert len(edges) == 6


def test_changed_stages_run_and_those_after_them_may(tmp_path: Path):
    planned = plan(tmp_path, STATUS, DOT)
    assert [(p.stage, p.certain) for p in planned] == [
        ("train@lenet5", True),
        ("sensitivity@lenet5", False),
        ("prune@lenet5", False),
        ("search@lenet5", False),
    ]
    assert planned[0].seconds == ESTIMATES_S["train@lenet5"]
    assert planned[0].source == "estimate, 2 cores"
    search = next(p for p in planned if p.stage == "search@lenet5")
    assert search.seconds == ESTIMATES_S["search@lenet5"]


def test_targets_keep_only_their_own_pipeline(tmp_path: Path):
    status = {"data": [{"changed deps": {"tasks/data.py": "modified"}}]}
    planned = plan(tmp_path, status, DOT, targets=["train@lenet_300_100"])
    assert [(p.stage, p.certain) for p in planned] == [
        ("data", True),
        ("train@lenet_300_100", False),
    ]


def test_a_recorded_run_is_preferred_to_the_estimate(tmp_path: Path):
    path = timing_path(tmp_path, "train", "lenet5")
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"completed": True, "total_seconds": 42.5}))
    first = plan(tmp_path, STATUS, DOT)[0]
    assert (first.seconds, first.source) == (42.5, "last run here")
    path.write_text(json.dumps({"completed": False, "total_seconds": 3.0}))
    assert plan(tmp_path, STATUS, DOT)[0].source == "estimate, 2 cores"


def test_the_report_names_long_stages_and_the_totals():
    planned = [
        Planned("train@lenet5", True, 160, "estimate, 2 cores"),
        Planned("search@lenet5", False, 3600, "estimate, 2 cores"),
    ]
    text = "\n".join(report(planned))
    assert "train@lenet5" in text and "3 min" in text
    assert "about 3 min for the changed stages, up to 63 min in all" in text
    assert "note: search@lenet5 is long (about 60 min)" in text
    assert report([]) == ["dvc repro: every stage is up to date; nothing will run."]


def test_main_asks_dvc_and_never_fails_the_run(monkeypatch, capsys):
    answers = {"status": json.dumps(STATUS), "dag": DOT}
    asked = []

    def fake_dvc(*args: str) -> str:
        asked.append(args)
        return answers[args[0]]

    monkeypatch.setattr(preview, "dvc", fake_dvc)
    assert preview.main(["prune@lenet5"]) == 0
    assert asked[0] == ("status", "--json", "--with-deps", "prune@lenet5")
    assert "dvc repro will run" in capsys.readouterr().out

    def broken(*args: str) -> str:
        raise RuntimeError("`dvc status` failed: not a DVC repository")

    monkeypatch.setattr(preview, "dvc", broken)
    assert preview.main([]) == 0
    assert "no preview of the stages: `dvc status` failed" in capsys.readouterr().out


def test_a_model_with_params_tables_has_note_only_search_stages(tmp_path: Path):
    (tmp_path / "params.yaml").write_text(
        "models:\n  a: {allocation: params}\n  b: {allocation: searched}\n"
    )
    timing_path(tmp_path, "search", "a").parent.mkdir(parents=True)
    timing_path(tmp_path, "search", "a").write_text(
        json.dumps({"completed": True, "total_seconds": 3600})
    )
    assert preview.estimate(tmp_path, "search@a") == (5.0, "allocation: params, writes a note")
    assert preview.estimate(tmp_path, "confirm@a")[0] == 5.0
    assert preview.estimate(tmp_path, "search@b") == (ESTIMATES_S["search"], "estimate, 2 cores")
    (tmp_path / "params.yaml").write_text("not: [valid")
    assert preview.estimate(tmp_path, "search@a")[1] == "last run here"


def test_a_note_s_recorded_time_is_not_a_searched_run_s(tmp_path: Path):
    """Switching a model from params to searched: its last search wrote a note in 2 s, so the
    preview shows what a search costs, not those 2 s."""
    (tmp_path / "params.yaml").write_text("models:\n  a: {allocation: searched}\n")
    timing_path(tmp_path, "search", "a").parent.mkdir(parents=True)
    timing_path(tmp_path, "search", "a").write_text(
        json.dumps({"completed": True, "total_seconds": 2})
    )
    assert preview.estimate(tmp_path, "search@a") == (2.0, "last run here")
    (tmp_path / "search" / "a").mkdir(parents=True)
    note = tmp_path / "search" / "a" / "allocation.json"
    note.write_text(json.dumps({"model": "a", "skipped": "search not run: ..."}))
    assert preview.estimate(tmp_path, "search@a") == (ESTIMATES_S["search"], "estimate, 2 cores")
    note.write_text(json.dumps({"model": "a", "front": []}))
    assert preview.estimate(tmp_path, "search@a") == (2.0, "last run here")


def test_in_a_fresh_clone_stages_with_only_missing_deps_may_run():
    """A fresh clone: outputs not in the cache must be made, but a stage whose deps are only
    missing (upstream outputs to come) runs only if those come out with other bytes."""
    status = {
        "data": [{"changed outs": {"data/MNIST": "not in cache"}}],
        "train@lenet5": [
            {"changed deps": {"data/MNIST": "deleted"}},
            {"changed outs": {"checkpoints/lenet5/dense.pt": "not in cache"}},
        ],
        "sensitivity@lenet5": [{"changed deps": {"checkpoints/lenet5/dense.pt": "deleted"}}],
        "search@lenet5": [{"changed deps": {"checkpoints/lenet5/dense.pt": "deleted"}}],
        "prune@lenet5": [{"changed deps": {"params.yaml": {"models.lenet5.prune": "modified"}}}],
    }
    planned = {p.stage: p.certain for p in plan(Path("."), status, DOT)}
    assert planned["data"] and planned["train@lenet5"] and planned["prune@lenet5"]
    assert planned["sensitivity@lenet5"] is False and planned["search@lenet5"] is False
    assert list(planned)[:3] == ["data", "train@lenet5", "prune@lenet5"]
    assert not preview.must_run(["frozen"]) and preview.must_run(["always changed"])
