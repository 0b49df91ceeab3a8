"""Scheduled reruns: dvc output parsing, schedule config, and a real deployment run by a worker.

The deployment test points the flow at a tiny git+DVC project with one cheap stage (see
test_schedule_worktree.py), so it checks real `dvc repro` behaviour: the first run runs the stage
in the rerun's worktree, the next one skips it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st
from prefect.client.schemas.objects import ConcurrencyLimitStrategy
from test_schedule_worktree import STAGE, commit, far_cron, runs, tiny_project, worktree_of

from deepcompression.config import ConfigError
from runtime.monitor import HEARTBEAT_S
from runtime.recovery import WATCHED_TAGS, ZOMBIE_WITHIN
from runtime.rerun import (
    DvcReproError,
    MetricsFileError,
    ProjectDirError,
    ReproOutcome,
    check_project_dir,
    flatten_metrics,
    metric_rows,
    parse_repro_output,
    read_metrics,
    repro_command,
    repro_env,
    rerun_markdown,
)
from runtime.schedule import (
    CODE_ROOT,
    ENTRYPOINT,
    FLOW_NAME,
    RERUN_ENV,
    RERUN_TAG,
    ScheduleError,
    check_schedule,
    deploy,
    resolve_schedule,
    scheduled_rerun,
)
from runtime.schedule_config import ScheduleConfig

pytestmark = pytest.mark.long(25)

WORKER_TIMEOUT_S = 120
REPO_PARAMS = CODE_ROOT / "params.yaml"

# Output of `dvc repro` 3.67 on a three-stage pipeline, stage command output included.
DVC_OUTPUT = """\
'data/raw.dvc' didn't change, skipping
Stage 'prepare' didn't change, skipping
Running stage 'train':
> python train.py
Running stage 'model' is what train.py prints, not dvc
Updating lock file 'dvc.lock'
Stage 'evaluate@lenet5' is cached - skipping run, checking out outputs
Updating lock file 'dvc.lock'

To track the changes with git, run:

\tgit add dvc.lock
Use `dvc push` to send your updates to remote storage.
"""


def test_parse_repro_output_classifies_real_dvc_lines():
    outcome = parse_repro_output(DVC_OUTPUT.splitlines())
    assert outcome == ReproOutcome(
        stages_run=("train",),
        stages_skipped=("data/raw.dvc", "prepare"),
        stages_restored=("evaluate@lenet5",),
    )


def test_parse_repro_output_of_an_unchanged_pipeline_ran_nothing():
    lines = ["Stage 'data' didn't change, skipping", "Data and pipelines are up to date."]
    outcome = parse_repro_output(lines)
    assert outcome.stages_run == ()
    assert outcome.to_dict() == {
        "stages_run": [],
        "stages_skipped": ["data"],
        "stages_restored": [],
    }


def test_parse_repro_output_ignores_colour_codes_and_line_endings():
    lines = [
        "\x1b[32mRunning stage 'train':\x1b[0m\r\n",
        "  Stage 'data' didn't change, skipping\n",
    ]
    assert parse_repro_output(lines) == ReproOutcome(("train",), ("data",))


_stage_names = st.text(
    alphabet=st.characters(codec="ascii", categories=["L", "N"], include_characters="_-@/:."),
    min_size=1,
    max_size=12,
)
_noise = st.sampled_from(
    ["", "> python -m flows.run train", "Updating lock file 'dvc.lock'", "epoch 3/30: loss 0.1"]
)


@given(
    st.lists(
        st.tuples(_stage_names, st.sampled_from(["run", "skipped", "restored"])),
        unique_by=lambda pair: pair[0],
        max_size=8,
    ),
    st.lists(_noise, max_size=8),
)
def test_parse_repro_output_recovers_every_stage_in_order(stages, noise):
    templates = {
        "run": "Running stage '{}':",
        "skipped": "Stage '{}' didn't change, skipping",
        "restored": "Stage '{}' is cached - skipping run, checking out outputs",
    }
    lines = []
    for i, (name, kind) in enumerate(stages):
        lines.append(templates[kind].format(name))
        lines.extend(noise[i : i + 1])
    outcome = parse_repro_output(lines)
    expected = {kind: tuple(n for n, k in stages if k == kind) for kind in templates}
    assert outcome == ReproOutcome(expected["run"], expected["skipped"], expected["restored"])


def test_flatten_metrics_and_rows():
    flat = flatten_metrics({"error": 0.02, "sizes": {"fc1": {"bits": 5}}, "curve": [1, 2]})
    assert flat == {"error": 0.02, "sizes.fc1.bits": 5, "curve": "[1, 2]"}
    rows = metric_rows({"train": {"error": 0.02}, "encode": {"ratio": 40.1, "bytes": 9}})
    assert rows == [
        {"file": "train", "metric": "error", "value": 0.02},
        {"file": "encode", "metric": "ratio", "value": 40.1},
        {"file": "encode", "metric": "bytes", "value": 9},
    ]


def test_rerun_markdown_says_when_nothing_ran():
    idle = rerun_markdown(ReproOutcome((), ("train",)), {"train": {"error": 0.5}}, "/p")
    assert "no stage ran" in idle
    assert "**stages skipped (unchanged)**: `train`" in idle
    assert "| train | error | 0.5 |" in idle
    busy = rerun_markdown(ReproOutcome(("train",)), {}, "/p")
    assert "1 stage(s) reran" in busy
    assert "**stages run**: `train`" in busy


def test_repro_env_puts_this_venv_first_and_drops_run_ids():
    base = {"PATH": "/usr/bin", "PREFECT__FLOW_RUN_ID": "x", "PREFECT_API_URL": "http://a/api"}
    env = repro_env(base)
    assert env["PATH"].split(os.pathsep) == [str(Path(sys.executable).parent), "/usr/bin"]
    assert "PREFECT__FLOW_RUN_ID" not in env
    assert env["PREFECT_API_URL"] == "http://a/api"
    assert env["PYTHONUNBUFFERED"] == "1"
    assert repro_env(base, "http://b/api")["PREFECT_API_URL"] == "http://b/api"
    assert repro_command(["train", "prune"]) == [
        sys.executable,
        "-m",
        "dvc",
        "repro",
        "train",
        "prune",
    ]
    assert repro_command(None) == [sys.executable, "-m", "dvc", "repro"]


def test_project_dir_and_metrics_errors(tmp_path):
    with pytest.raises(ProjectDirError, match="no dvc.yaml"):
        check_project_dir(tmp_path)
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    (tmp_path / "metrics").mkdir()
    assert read_metrics.fn(str(tmp_path)) == {}
    (tmp_path / "metrics" / "a.json").write_text("[1, 2]")
    with pytest.raises(MetricsFileError, match="not an object"):
        read_metrics.fn(str(tmp_path))
    (tmp_path / "metrics" / "a.json").write_text("{broken")
    with pytest.raises(MetricsFileError, match="not readable JSON"):
        read_metrics.fn(str(tmp_path))


def test_check_schedule_rejects_bad_cron_and_timezone():
    assert (
        check_schedule(ScheduleConfig("*/15 2 * * 1-5", "Europe/Berlin")).cron == "*/15 2 * * 1-5"
    )
    with pytest.raises(ScheduleError, match="5 fields"):
        check_schedule(ScheduleConfig("0 3 * *", "UTC"))
    with pytest.raises(ScheduleError, match="not valid"):
        check_schedule(ScheduleConfig("61 3 * * *", "UTC"))
    with pytest.raises(ScheduleError, match="time zone"):
        check_schedule(ScheduleConfig("0 3 * * *", "Mars/Olympus"))


SCHEDULE_YAML = """\
schedule:
  cron: '30 4 * * 0'
  timezone: Asia/Tokyo
  branch: release
  worktree: /srv/rerun
  push: false
"""


def test_resolve_schedule_reads_params_and_lets_the_command_line_override(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text(SCHEDULE_YAML)
    read = ScheduleConfig("30 4 * * 0", "Asia/Tokyo", "release", "/srv/rerun", False)
    assert resolve_schedule(params) == read
    overridden = resolve_schedule(params, cron="0 1 * * *", timezone="UTC")
    assert overridden == ScheduleConfig("0 1 * * *", "UTC", "release", "/srv/rerun", False)
    params.write_text(SCHEDULE_YAML.replace("'30 4 * * 0'", "3"))
    with pytest.raises(ConfigError, match="schedule.cron: expected a string"):
        resolve_schedule(params)
    params.write_text(SCHEDULE_YAML + "  every: day\n")
    with pytest.raises(ConfigError, match="schedule.every: unknown key"):
        resolve_schedule(params)
    params.write_text(SCHEDULE_YAML.replace("push: false", "push: maybe"))
    with pytest.raises(ConfigError, match="schedule.push"):
        resolve_schedule(params)
    missing = tmp_path / "none.yaml"
    assert resolve_schedule(missing, cron="5 * * * *", timezone="UTC").cron == "5 * * * *"
    with pytest.raises(ValueError, match="not found"):
        resolve_schedule(missing)


def test_prefect_yaml_matches_params_schedule_and_entrypoint():
    spec = yaml.safe_load((CODE_ROOT / "prefect.yaml").read_text())
    (deployment,) = spec["deployments"]
    assert deployment["entrypoint"] == ENTRYPOINT
    path, name = ENTRYPOINT.split(":")
    assert (CODE_ROOT / path).is_file() and name == scheduled_rerun.fn.__name__
    (schedule,) = deployment["schedules"]
    params = yaml.safe_load(REPO_PARAMS.read_text())["schedule"]
    assert (schedule["cron"], schedule["timezone"]) == (params["cron"], params["timezone"])
    assert deployment["concurrency_limit"] == {"limit": 1, "collision_strategy": "CANCEL_NEW"}
    defaults = ScheduleConfig()
    assert deployment["parameters"] == {
        "project_dir": ".",
        "branch": "{{ git-branch.stdout }}",
        "worktree": params.get("worktree", defaults.worktree),
        "push": params.get("push", defaults.push),
    }
    pull = spec["pull"][0]["prefect.deployments.steps.set_working_directory"]
    assert pull["directory"] == "{{ repo-root.stdout }}"
    steps = [s["prefect.deployments.steps.run_shell_script"] for s in spec["build"]]
    assert [s["id"] for s in steps] == ["repo-root", "git-branch"]
    assert deployment["tags"] == [RERUN_TAG]
    assert deployment["work_pool"]["job_variables"] == {"env": RERUN_ENV}


def test_reruns_send_heartbeats_the_zombie_automation_watches():
    from prefect.settings import get_current_settings, temporary_settings

    from runtime.schedule import serve_settings

    with temporary_settings(updates=serve_settings("http://127.0.0.1:9/api")):
        served = get_current_settings().to_environment_variables(exclude_unset=True)
    assert served["PREFECT_FLOWS_HEARTBEAT_FREQUENCY"] == str(HEARTBEAT_S), "what served runs get"
    assert RERUN_TAG in WATCHED_TAGS
    assert RERUN_ENV["PREFECT_FLOWS_HEARTBEAT_FREQUENCY"] == str(HEARTBEAT_S)
    assert ZOMBIE_WITHIN.total_seconds() >= 3 * HEARTBEAT_S


def _wait_final(client, flow_run_id, deadline: float):
    while True:
        run = client.read_flow_run(flow_run_id)
        if run.state is not None and run.state.is_final():
            return run
        assert time.monotonic() < deadline, f"flow run still {run.state} after the time limit"
        time.sleep(0.5)


def _artifacts(client, flow_run_id) -> dict[str, Any]:
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    found = client.read_artifacts(
        artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
    )
    return {a.key: a.data for a in found}


def _log_lines(client, flow_run_id, text: str) -> list[str]:
    """The flow run's log messages that contain `text` (for a failing assertion's message)."""
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    logs = client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])))
    return [log.message for log in logs if text in log.message]


def test_deployment_runs_on_a_process_worker_then_skips_unchanged(prefect_api, tmp_path):
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment

    project = tiny_project(tmp_path / "project").resolve()
    pool = f"test-pool-{uuid.uuid4().hex[:8]}"
    tz = "Asia/Tokyo"
    config = check_schedule(ScheduleConfig(far_cron(tz), tz, push=False))
    deployment_id = deploy(config, pool, project_dir=project, name="nightly-test")

    with get_client(sync_client=True) as client:
        deployment = client.read_deployment(deployment_id)
        (schedule,) = deployment.schedules
        assert (schedule.schedule.cron, schedule.schedule.timezone) == (config.cron, tz)
        assert deployment.work_pool_name == pool
        assert deployment.parameters == {
            "project_dir": str(project),
            "branch": "main",
            "worktree": str(worktree_of(project)),
            "push": False,
        }
        assert deployment.global_concurrency_limit.limit == 1
        strategy = deployment.concurrency_options.collision_strategy
        assert strategy == ConcurrencyLimitStrategy.CANCEL_NEW
        assert deployment.entrypoint == ENTRYPOINT
        assert deployment.tags == [RERUN_TAG]
        assert deployment.job_variables == {"env": RERUN_ENV}
        assert deployment.pull_steps == [
            {"prefect.deployments.steps.set_working_directory": {"directory": str(CODE_ROOT)}}
        ]

        flow_run = run_deployment(f"{FLOW_NAME}/nightly-test", timeout=0)
        worker_env = dict(
            os.environ,
            PREFECT_API_URL=prefect_api,
            PREFECT_HOME=str(tmp_path / "prefect-home"),
            PREFECT_SERVER_ANALYTICS_ENABLED="false",
        )
        start = time.monotonic()
        worker = subprocess.run(
            [sys.executable, "-m", "prefect", "worker", "start", "--pool", pool]
            + ["--type", "process", "--run-once", "--limit", "1"],
            cwd=tmp_path,
            env=worker_env,
            capture_output=True,
            text=True,
            timeout=WORKER_TIMEOUT_S,
        )
        final = _wait_final(client, flow_run.id, start + WORKER_TIMEOUT_S)
        worker_log = worker.stdout[-3000:] + worker.stderr[-3000:]
        assert final.state.is_completed(), f"{final.state}\n{worker_log}"
        assert final.name.startswith("rerun-main-"), final.name
        repro = [tag for tag in final.tags if tag.startswith("repro:")]
        tagging = _log_lines(client, flow_run.id, "tag")
        assert RERUN_TAG in final.tags and len(repro) == 1, f"no shared repro tag: {tagging}"
        artifacts = _artifacts(client, flow_run.id)

    tree = worktree_of(project)
    assert (tree / "runs.log").read_text().splitlines() == [sys.prefix]
    assert not (project / "runs.log").exists()
    rows = json.loads(artifacts["rerun-metrics"])
    assert {"file": "score", "metric": "chars", "value": 6} in rows
    assert {"file": "score", "metric": "detail.lines", "value": 1} in rows
    assert f"**stages run**: `{STAGE}`" in artifacts["rerun-report"]
    assert "of branch `main`" in artifacts["rerun-report"]

    again = scheduled_rerun(project_dir=str(project), push=False)
    assert again["stages_run"] == [] and again["stages_skipped"] == [STAGE]
    assert runs(tree) == 1

    (project / "input.txt").write_text("hello again\n")
    commit(project, "new input")
    changed = scheduled_rerun(project_dir=str(project), targets=[STAGE], push=False)
    assert changed["stages_run"] == [STAGE] and changed["targets"] == [STAGE]
    assert changed["metrics"]["score"]["chars"] == 12


def test_failed_stage_fails_the_run_with_the_output_tail(prefect_api, tmp_path):
    failing = "import sys\nprint('about to fail: bad input')\nsys.exit(3)\n"
    project = tiny_project(tmp_path / "project", failing)
    with pytest.raises(DvcReproError, match="exited with status") as err:
        scheduled_rerun(project_dir=str(project), push=False)
    assert "about to fail: bad input" in str(err.value)
    assert runs(project) == 0 and runs(worktree_of(project)) == 0


def test_command_line_rejects_a_bad_schedule_before_contacting_prefect(tmp_path, capsys):
    from runtime.schedule import main

    params = tmp_path / "params.yaml"
    params.write_text(SCHEDULE_YAML)
    assert main(["serve", "--params", str(params), "--cron", "0 3 * *"]) == 2
    assert "5 fields" in capsys.readouterr().err
    assert main(["serve", "--params", str(params), "--project-dir", str(tmp_path)]) == 2
    assert "no dvc.yaml" in capsys.readouterr().err
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")  # a DVC project, but no git branch
    params.write_text(SCHEDULE_YAML.replace("branch: release", "branch: null"))
    assert main(["serve", "--params", str(params), "--project-dir", str(tmp_path)]) == 2
    assert "no branch checked out" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["deploy", "--params", str(params)])
    assert "deploy needs --pool" in capsys.readouterr().err
