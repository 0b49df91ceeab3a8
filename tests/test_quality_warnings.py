"""Loud warnings for numbers that make a run meaningless: a dense model no better than chance,
and a compression stage whose validation error jumped past ERROR_JUMP_FACTOR x the dense one's."""

from __future__ import annotations

import json
import logging

import pytest

from flows.common import (
    CHANCE_MARGIN,
    ERROR_JUMP_FACTOR,
    chance_warning,
    error_jump_warning,
    warn_on_error_jump,
)
from runtime.workspace import Workspace


@pytest.mark.parametrize(
    ("error", "classes", "warned"),
    [(0.90, 10, True), (0.89, 10, True), (0.50, 2, True), (0.85, 10, False), (0.01, 10, False)],
)
def test_a_dense_model_at_chance_is_warned_about(error, classes, warned):
    text = chance_warning("lenet5", error, classes)
    assert (text is not None) == warned
    if warned:
        assert f"chance is {100 * (1 - 1 / classes):.1f}% for {classes} classes" in text
        assert "models.lenet5.train" in text


def test_the_chance_margin_is_the_stated_constant():
    assert chance_warning("m", 0.9 - CHANCE_MARGIN, 10) is not None
    assert chance_warning("m", 0.9 - CHANCE_MARGIN - 1e-6, 10) is None


@pytest.mark.parametrize(
    ("error", "dense", "warned"),
    [
        (0.0085 * ERROR_JUMP_FACTOR + 0.02, 0.0085, True),
        (0.0160, 0.0086, False),  # the searched LeNet-300-100: within the factor
        (0.0100, 0.0010, False),  # over the factor, but under a 1-point rise
        (0.50, 0.10, True),
    ],
)
def test_a_stage_error_past_the_factor_is_warned_about(error, dense, warned):
    text = error_jump_warning("prune", "lenet5", error, dense)
    assert (text is not None) == warned
    if warned:
        assert f"over {ERROR_JUMP_FACTOR:g}x the dense model's" in text
        assert "models.lenet5.prune" in text


def test_the_stage_warning_reads_the_dense_metrics(tmp_path, caplog):
    workspace = Workspace(tmp_path, "lenet5")
    warn_on_error_jump("quantize", workspace, 0.9)  # no train.json yet: nothing to compare
    path = workspace.metrics("train")
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"val_error": 0.01}))
    with caplog.at_level(logging.WARNING):
        warn_on_error_jump("quantize", workspace, 0.9)
    assert [r.levelno for r in caplog.records] == [logging.WARNING]
    assert "quantize of lenet5: validation error 90.00%" in caplog.records[0].getMessage()
