"""Prefect tasks of the scheduled rerun: `dvc repro` in a project folder, then its metrics files.

`dvc repro` decides what reruns (only stages whose code, data or params changed), so a rerun with
nothing changed trains nothing; its output says which stages ran and which it skipped.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.settings import PREFECT_API_URL

from deepcompression.report import markdown_table
from tasks.log import run_logger

TAIL_LINES = 40
"""How many of dvc's last output lines a failed run's error message quotes."""

METRICS_GLOB = "metrics/*.json"

_ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
_RAN = re.compile(r"^Running stage '(?P<stage>.+)':$")
_SKIPPED = re.compile(r"^(?:Stage )?'(?P<stage>.+)' didn't change, skipping$")
_RESTORED = re.compile(r"^Stage '(?P<stage>.+)' is cached - skipping run, checking out outputs$")


class ProjectDirError(ValueError):
    """`project_dir` is not a folder holding a DVC pipeline (dvc.yaml)."""


class DvcReproError(RuntimeError):
    """`dvc repro` exited with a non-zero status; the message quotes the end of its output."""


class MetricsFileError(ValueError):
    """A metrics JSON file could not be read as a JSON object."""


@dataclass(frozen=True)
class ReproOutcome:
    """Which stages one `dvc repro` ran, skipped as unchanged, or restored from dvc's run cache."""

    stages_run: tuple[str, ...] = ()
    stages_skipped: tuple[str, ...] = ()
    stages_restored: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, list[str]]:
        """Plain lists, for the flow's return value and the artifacts."""
        return {key: list(value) for key, value in asdict(self).items()}


def clean_line(line: str) -> str:
    """One output line without colour codes and surrounding whitespace."""
    return _ANSI_ESCAPE.sub("", line).strip()


def parse_repro_output(lines: Iterable[str]) -> ReproOutcome:
    """Classify stages from `dvc repro` output lines (each stage once, in first-seen order)."""
    found: dict[str, list[str]] = {"run": [], "skipped": [], "restored": []}
    for raw in lines:
        line = clean_line(raw)
        for kind, pattern in (("run", _RAN), ("skipped", _SKIPPED), ("restored", _RESTORED)):
            match = pattern.match(line)
            if match and match["stage"] not in found[kind]:
                found[kind].append(match["stage"])
                break
    return ReproOutcome(tuple(found["run"]), tuple(found["skipped"]), tuple(found["restored"]))


def check_project_dir(project_dir: str | Path) -> Path:
    """The absolute project folder; ProjectDirError unless it exists and holds a dvc.yaml."""
    path = Path(project_dir).expanduser().resolve()
    if not (path / "dvc.yaml").is_file():
        raise ProjectDirError(
            f"{path} has no dvc.yaml: set the flow parameter project_dir to the folder of the "
            "DVC pipeline (the repository root)"
        )
    return path


def repro_command(targets: Iterable[str] | None = None) -> list[str]:
    """`dvc repro [targets]` run by this interpreter, so the venv's dvc is the one used."""
    return [sys.executable, "-m", "dvc", "repro", *(targets or [])]


def repro_env(base: Mapping[str, str], api_url: str | None = None) -> dict[str, str]:
    """`base` with this venv's bin first on PATH (stage cmds call its python), unbuffered output.

    Drops the `PREFECT__*` runtime keys of the current run so each stage's own flow run is a new,
    separate run rather than one that claims this run's id; `api_url` (this run's Prefect API)
    makes the stages record their runs on the same server.
    """
    env = {k: v for k, v in base.items() if not k.startswith("PREFECT__")}
    if api_url:
        env["PREFECT_API_URL"] = api_url
    bin_dir = str(Path(sys.executable).parent)
    env["PATH"] = f"{bin_dir}{os.pathsep}{base['PATH']}" if base.get("PATH") else bin_dir
    env["PYTHONUNBUFFERED"] = "1"
    env.setdefault("DVC_NO_ANALYTICS", "1")
    return env


@task(name="dvc-repro", cache_policy=NO_CACHE)
def run_dvc_repro(project_dir: str, targets: list[str] | None = None) -> ReproOutcome:
    """Run `dvc repro` in `project_dir`, log each output line, say which stages ran or skipped."""
    logger = run_logger()
    cwd = check_project_dir(project_dir)
    command = repro_command(targets)
    logger.info("running %s in %s", " ".join(command[2:]), cwd)
    lines: list[str] = []
    start = time.monotonic()
    with subprocess.Popen(
        command,
        cwd=cwd,
        env=repro_env(os.environ, PREFECT_API_URL.value()),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
    ) as process:
        assert process.stdout is not None
        for raw in process.stdout:
            line = clean_line(raw)
            if line:
                logger.info("dvc | %s", line)
                lines.append(line)
    seconds = time.monotonic() - start
    if process.returncode != 0:
        quoted = "\n".join(lines[-TAIL_LINES:]) or "(no output)"
        raise DvcReproError(
            f"dvc repro exited with status {process.returncode} after {seconds:.1f} s in {cwd}; "
            f"fix the failing stage and rerun. Last output lines:\n{quoted}"
        )
    outcome = parse_repro_output(lines)
    logger.info(
        "dvc repro done in %.1f s: ran %s, skipped %s, restored %s",
        seconds,
        list(outcome.stages_run),
        list(outcome.stages_skipped),
        list(outcome.stages_restored),
    )
    return outcome


def flatten_metrics(metrics: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested metrics as one level of dotted keys; lists become JSON text."""
    flat: dict[str, Any] = {}
    for key, value in metrics.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten_metrics(value, f"{name}."))
        elif isinstance(value, list):
            flat[name] = json.dumps(value)
        else:
            flat[name] = value
    return flat


@task(name="read-metrics", cache_policy=NO_CACHE)
def read_metrics(project_dir: str) -> dict[str, dict[str, Any]]:
    """Every `metrics/*.json` of the project, keyed by file stem and flattened to dotted keys."""
    found: dict[str, dict[str, Any]] = {}
    for path in sorted(check_project_dir(project_dir).glob(METRICS_GLOB)):
        try:
            payload = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise MetricsFileError(
                f"{path} is not readable JSON ({err}); rerun its stage"
            ) from None
        if not isinstance(payload, dict):
            raise MetricsFileError(
                f"{path} holds a JSON {type(payload).__name__}, not an object; "
                "write metrics as a JSON object of name: value"
            )
        found[path.stem] = flatten_metrics(payload)
    return found


def metric_rows(metrics: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per metric: {"file", "metric", "value"} (the `rerun-metrics` table)."""
    return [
        {"file": stem, "metric": name, "value": value}
        for stem, values in metrics.items()
        for name, value in values.items()
    ]


def _stage_list(stages: Iterable[str]) -> str:
    names = [f"`{s}`" for s in stages]
    return ", ".join(names) if names else "none"


def rerun_markdown(
    outcome: ReproOutcome, metrics: Mapping[str, Mapping[str, Any]], project_dir: str
) -> str:
    """The `rerun-report` markdown: what reran, what was skipped, and every metric."""
    verdict = (
        "Nothing changed: no stage ran, nothing was trained."
        if not outcome.stages_run
        else f"{len(outcome.stages_run)} stage(s) reran because their code, data or params changed."
    )
    return (
        f"# Scheduled rerun of `{project_dir}`\n\n{verdict}\n\n"
        f"- **stages run**: {_stage_list(outcome.stages_run)}\n"
        f"- **stages skipped (unchanged)**: {_stage_list(outcome.stages_skipped)}\n"
        f"- **stages restored from run cache**: {_stage_list(outcome.stages_restored)}\n\n"
        f"## Metrics\n\n{markdown_table(metric_rows(metrics))}"
    )


@task(name="publish-rerun-report", cache_policy=NO_CACHE)
def publish_rerun_report(
    outcome: ReproOutcome, metrics: Mapping[str, Mapping[str, Any]], project_dir: str
) -> None:
    """Attach the `rerun-metrics` table and the `rerun-report` markdown to the flow run."""
    create_table_artifact(
        key="rerun-metrics",
        table=metric_rows(metrics),
        description="scheduled rerun: every metric of metrics/*.json",
    )
    create_markdown_artifact(
        key="rerun-report",
        markdown=rerun_markdown(outcome, metrics, project_dir),
        description="scheduled rerun: stages run and skipped, metrics",
    )
