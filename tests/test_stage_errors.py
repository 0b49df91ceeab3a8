"""A failing stage says its error once, plainly (no traceback on the console), writes the
traceback to runs/<model>/<stage>-error.log and says how to restore the previous outputs."""

from __future__ import annotations

import argparse
import logging

from deepcompression.data.errors import DataError
from flows.run import _NoFailureEcho, error_log_path, report_failure


def _raised(exc: Exception) -> Exception:
    try:
        raise exc
    except Exception as caught:
        return caught


def test_a_failure_is_said_once_with_its_traceback_in_the_log(tmp_path, capsys):
    args = argparse.Namespace(root=str(tmp_path), stage="train", model="lenet5")
    exc = _raised(DataError("data/x/meta.json not found; run the data stage first"))
    assert report_failure(args, exc) == 1
    err = capsys.readouterr().err
    assert err.count("data/x/meta.json not found") == 1
    assert err.startswith("error: train@lenet5: data/x/meta.json not found")
    assert "Traceback" not in err and "`dvc checkout train@lenet5`" in err
    log = error_log_path(str(tmp_path), "train", "lenet5")
    assert log == tmp_path / "runs" / "lenet5" / "train-error.log"
    assert log.read_text().startswith("Traceback (most recent call last):")
    assert str(log) in err


def test_an_unexpected_error_is_named_by_its_type(tmp_path, capsys):
    args = argparse.Namespace(root=str(tmp_path), stage="data", model=None)
    report_failure(args, _raised(KeyError("points")))
    err = capsys.readouterr().err
    assert err.startswith("error: data: KeyError: 'points'")
    assert (tmp_path / "runs" / "shared" / "data-error.log").is_file()


def _record(name: str, message: str, exc: Exception | None = None) -> logging.LogRecord:
    exc_info = (type(exc), exc, None) if exc else None
    return logging.LogRecord(name, logging.ERROR, __file__, 1, message, None, exc_info)


def test_prefects_failure_echoes_stay_off_the_console():
    keep = _NoFailureEcho().filter
    boom = ValueError("boom")
    assert not keep(_record("prefect.flow_runs", "Encountered exception during execution", boom))
    assert not keep(_record("prefect.task_runs", "Encountered exception", boom))
    assert not keep(_record("prefect.flow_runs", "Finished in state Failed('boom')"))
    assert keep(_record("prefect.flow_runs", "Finished in state Completed()"))
    assert keep(_record("prefect.flow_runs", "dense lenet5: validation error 0.80%"))
    assert keep(_record("runtime.guard", "the server went away", boom))
