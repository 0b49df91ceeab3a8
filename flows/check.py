"""DVC stage `check`: validate every stage's params before any stage touches its outputs.

Every other stage depends on this stage's output, whose bytes never change while the params are
valid, so it reruns whenever params.yaml changes without forcing anything downstream to rerun.
A typo fails here, before DVC removes the outputs of the stages the edit would have rerun.
The `schedule:` section is the scheduled reruns' (no stage reads it): `python -m runtime.schedule`
checks it when it serves or deploys.
"""

from __future__ import annotations

import sys
from pathlib import Path

from deepcompression.config import ConfigError
from flows.params import read_params

OK_FILE = Path("checks") / "params.ok"
OK_TEXT = "params.yaml is valid\n"


def check(params_path: str = "params.yaml", root: str = ".") -> int:
    """Validate the params; write the constant marker on success, print the error and exit 2."""
    try:
        read_params(params_path)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    out = Path(root) / OK_FILE
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(OK_TEXT)
    return 0


if __name__ == "__main__":
    sys.exit(check(*sys.argv[1:]))
