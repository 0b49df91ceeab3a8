"""A stage's import closure holds the files that compute its outputs, not the ones of other paths.

The closure of `flows.<stage>` is its DVC deps (tests/test_dvc_stages.py); these are the edges
narrowed for issue 22, kept narrow: a facade or an unused helper would pull them back in. (The
other way, a module a stage uses is imported at module level, so that it is in the closure.)
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.long(9)

ROOT = Path(__file__).parents[1]
PROBE = (
    "import importlib, json, sys\n"
    "importlib.import_module(sys.argv[1])\n"
    "print(json.dumps(sorted(sys.modules)))\n"
)
ABSENT: dict[str, tuple[str, ...]] = {
    "train": (  # dense training: no pruning masks, no teacher, no file format
        "deepcompression.compress.pruning",
        "deepcompression.compress.distill",
        "deepcompression.format.container",
    ),
    "evaluate": (  # decodes a file: no encoder, no facade
        "deepcompression.format.container",
        "deepcompression.format.encoder",
        "deepcompression.format.coders",
        "deepcompression.format.allocation",
    ),
    "encode": (  # no facade; dense training's helpers only (the device, for the numerics record)
        "deepcompression.format.container",
        "deepcompression.compress.distill",
    ),
    "quantize": ("deepcompression.format.container", "deepcompression.format.spec"),
}
"""Stage -> modules its flow module must not import."""


@pytest.mark.parametrize("stage", sorted(ABSENT))
def test_a_stage_does_not_import_another_paths_modules(stage):
    out = subprocess.run(
        [sys.executable, "-c", PROBE, f"flows.{stage}"],
        cwd=ROOT, capture_output=True, text=True, check=True, timeout=300,
    ).stdout  # fmt: skip
    present = [name for name in ABSENT[stage] if name in set(json.loads(out))]
    assert not present, f"flows.{stage} imports {present}: import the specific module where used"
