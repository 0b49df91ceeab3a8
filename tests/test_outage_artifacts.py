"""Artifacts as the UI shows them: keyed progress artifacts and rounded metrics (a real API)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId
from prefect.context import FlowRunContext

from runtime.artifacts import artifact_key, display_value, publish_report
from runtime.log import epoch_reporter, progress_key
from runtime.resilient import task

pytestmark = pytest.mark.slow


def epoch(n: int) -> SimpleNamespace:
    """An epoch record as deepcompression.training makes them."""
    return SimpleNamespace(
        epoch=n, lr=0.01, train_loss=0.2, val_loss=0.1, val_error=0.0162, seconds=1.0
    )


@task(name="retrain", task_run_name="retrain-{iteration}")
def retrain(iteration: int) -> int:
    """Two epochs reported through the project's epoch reporter."""
    report = epoch_reporter(f"retrain {iteration}", 2)
    for n in (1, 2):
        report(epoch(n))
    return iteration


@flow(name="artifact-check")
def artifact_flow() -> str:
    """One retraining task, then a per-epoch report with unrounded metrics."""
    retrain(2)
    rows = [{"epoch": 1, "val_error": 0.06184072126220887, "val_loss": 0.123456789}]
    metrics = {"val_error": 0.06184072126220887, "density": 0.0801, "loss": 0.123456789}
    publish_report(
        "lenet5-prune",
        "Pruning",
        rows,
        {**metrics, "epochs": 30, "layers": {}},
        rows_title="Per epoch",
    )
    return str(FlowRunContext.get().flow_run.id)


def test_progress_artifacts_are_keyed_and_reports_rounded(prefect_api: str) -> None:
    run_id = artifact_flow()
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run_id]))
        )
    by_key = {a.key: a for a in artifacts}
    assert progress_key("retrain 2") == "progress-retrain-2"
    assert by_key["progress-retrain-2"].type == "progress"
    assert float(by_key["progress-retrain-2"].data) == 100.0

    table = {row["metric"]: row["value"] for row in json.loads(by_key["lenet5-prune-metrics"].data)}
    assert table == {"val_error": "6.18%", "density": "8.01%", "loss": "0.1235", "epochs": 30}
    report = by_key["lenet5-prune-report"].data
    assert "## Per epoch" in report and "| 1 | 6.18% | 0.1235 |" in report
    assert "0.0618407" not in report and "0.123456789" not in report
    assert by_key["lenet5-prune-report"].description == "lenet5-prune: per epoch and metrics"


def test_old_publish_report_calls_still_work_and_keys_are_valid(prefect_api: str) -> None:
    @flow(name="old-call")
    def old_call() -> None:
        publish_report("train", "Training", [{"layer": "fc1", "kept": "8%"}], {"error": 0.5})

    old_call()
    assert artifact_key("Retrain 2 / fine_tune") == "retrain-2-fine-tune"
    assert display_value("test_error", 0.0158) == "1.58%"
    assert display_value("file_ratio", 39.8712) == "39.87"
    assert display_value("epochs", 30) == 30 and display_value("done", True) is True
