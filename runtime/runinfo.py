"""Names and tags that make runs findable in the Prefect UI: what ran, for which model, when.

Stage processes of one `dvc repro` share its process as an ancestor; its start time and pid make
the `repro:<when>-<pid>` tag that ties the stages of one invocation together.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _proc_stat(pid: int) -> tuple[str, int, int] | None:
    """(command name, parent pid, start time in clock ticks since boot) of a process, if known."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    name = text[text.index("(") + 1 : text.rindex(")")]
    fields = text[text.rindex(")") + 2 :].split()
    return name, int(fields[1]), int(fields[19])


def _is_dvc(pid: int, name: str) -> bool:
    """Whether a process is DVC: `dvc ...`, `.venv/bin/dvc ...` or `python -m dvc ...`."""
    if name == "dvc":
        return True
    try:
        args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return any(Path(a.decode(errors="replace")).name == "dvc" for a in args[:3])


def _boot_time() -> float:
    """Seconds since the epoch at which the machine booted (/proc/stat btime)."""
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith("btime "):
            return float(line.split()[1])
    return 0.0


def _tag(pid: int, start_ticks: int) -> str:
    """`repro:<YYYY-mm-dd-HHMMSS>-<pid>`: the process's start time (set when it was forked, so
    the same before and after it execs) and its pid."""
    started = _boot_time() + start_ticks / CLOCK_TICKS
    return f"repro:{time.strftime('%Y-%m-%d-%H%M%S', time.localtime(started))}-{pid}"


def process_tag(pid: int) -> str | None:
    """The `repro:` tag of process `pid`, which the caller knows is a `dvc repro` (it started
    it); None once it has exited. No check of its command line: right after `Popen` returns the
    kernel may not have set it yet (exec closes the parent's pipe before the new arguments are
    in place), which is how a rerun once went untagged."""
    stat = _proc_stat(pid)
    return None if stat is None else _tag(pid, stat[2])


def invocation_tag(parent_pid: int | None = None) -> str | None:
    """The `repro:` tag of the `dvc` process that started this stage, if any: `parent_pid`
    (default this process's parent) or one of its ancestors."""
    pid = os.getppid() if parent_pid is None else parent_pid
    for _ in range(8):
        stat = _proc_stat(pid)
        if stat is None or pid <= 1:
            return None
        name, parent, start_ticks = stat
        if _is_dvc(pid, name):
            return _tag(pid, start_ticks)
        pid = parent
    return None
