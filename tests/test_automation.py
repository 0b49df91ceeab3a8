"""The zombie automation: which runs it watches, and a comparison that does not depend on the
hash seed (a different seed must not make `runtime.server start` delete and recreate it)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from prefect.events.schemas.events import RelatedResource

from runtime.monitor import HEARTBEAT_S, STAGE_SETTINGS
from runtime.recovery import ZOMBIE_WITHIN, zombie_automation

pytestmark = pytest.mark.long(10)

ROOT = Path(__file__).parents[1]
CHECK = (
    "import sys\n"
    "from prefect.events.schemas.automations import AutomationCore\n"
    "from runtime.recovery import _same, zombie_automation\n"
    "mine, given = zombie_automation(), sys.stdin.read()\n"
    "print(mine.model_dump_json())\n"
    "if given:\n"
    "    print(_same(AutomationCore.model_validate_json(given), mine))\n"
)
"""Prints this interpreter's automation as stored, then whether the one on stdin (stored by
another interpreter) is the same to it."""


def _python(code: str, seed: int, stdin: str = "") -> str:
    """`code`'s output in a fresh interpreter with PYTHONHASHSEED=`seed`."""
    env = dict(os.environ, PYTHONHASHSEED=str(seed), PYTHONPATH=str(ROOT))
    done = subprocess.run(
        [sys.executable, "-c", code],
        input=stdin,
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return done.stdout.strip()


def test_an_identical_automation_is_the_same_under_any_hash_seed():
    """Three interpreters: seed 0 stores; seed 7 stores and compares seed 0's; seed 0 compares
    seed 7's."""
    (first,) = _python(CHECK, 0).splitlines()
    second, same = _python(CHECK, 7, first).splitlines()
    assert first != second, "the two seeds store the trigger's sets in different orders"
    assert same == "True"
    assert _python(CHECK, 0, second).splitlines()[1] == "True"


def _tag(name: str) -> RelatedResource:
    return RelatedResource(
        {"prefect.resource.id": f"prefect.tag.{name}", "prefect.resource.role": "tag"}
    )


def test_only_the_projects_runs_are_watched_within_three_heartbeats():
    related = zombie_automation().trigger.match_related
    assert related.includes([_tag("stage:prune"), _tag("model:lenet5")])
    assert related.includes([_tag("scheduled-rerun")])
    assert not related.includes([_tag("mine"), _tag("params:abc")])
    assert not related.includes([])
    stage_heartbeat = {setting: value for _, setting, value in STAGE_SETTINGS}
    assert stage_heartbeat["flows.heartbeat_frequency"] == str(HEARTBEAT_S)
    assert ZOMBIE_WITHIN.total_seconds() == 3 * HEARTBEAT_S
