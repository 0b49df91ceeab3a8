"""`repro:` tags (runtime/runinfo.py): a stage finds the tag of the `dvc` process above it, and a
rerun that started `dvc` itself gets the same tag from its pid at once, even before the kernel
shows the new command line (the race that once left a scheduled rerun untagged)."""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from runtime.runinfo import invocation_tag, process_tag

ROOT = Path(__file__).parents[1]
TAG = re.compile(r"^repro:(\d{4}-\d{2}-\d{2}-\d{6})-(\d+)$")


@contextmanager
def started(command: list[str], **kwargs) -> Iterator[subprocess.Popen]:
    """A child process for the test's duration, killed and reaped after it."""
    child = subprocess.Popen(command, **kwargs)
    try:
        yield child
    finally:
        child.kill()
        child.wait()


def test_a_process_tag_is_its_start_time_and_pid_with_no_look_at_its_command_line():
    """`sleep` is no dvc: a stage under it finds no invocation, yet its starter, which knows what
    it started, gets its tag (start time and pid) without reading its command line."""
    with started(["sleep", "30"]) as child:
        assert invocation_tag(child.pid) is None
        tag = process_tag(child.pid)
        assert tag is not None and (match := TAG.match(tag))
        assert int(match[2]) == child.pid
        when = time.mktime(time.strptime(match[1], "%Y-%m-%d-%H%M%S"))
        assert abs(when - time.time()) < 60
    assert process_tag(child.pid) is None


def test_a_stage_under_dvc_gets_the_tag_its_starter_got(tmp_path):
    """A script named `dvc` starts a stage-like child that asks for its invocation tag: it is the
    tag the starter computed from the pid alone, the moment Popen returned."""
    out = tmp_path / "stage_tag.txt"
    script = tmp_path / "dvc"
    script.write_text(
        "#!/bin/sh\n"
        f"{sys.executable} -c 'from runtime.runinfo import invocation_tag; "
        f"open(\"{out}\", \"w\").write(str(invocation_tag()))'\n"
        "sleep 30\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    with started([str(script)], env=env) as child:
        starter_tag = process_tag(child.pid)
        deadline = time.monotonic() + 60
        while not out.exists() or not out.read_text():
            if time.monotonic() > deadline:
                pytest.fail("the stage-like child wrote no tag within 60 s")
            time.sleep(0.05)
        assert out.read_text() == starter_tag
