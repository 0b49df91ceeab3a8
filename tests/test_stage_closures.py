"""A stage's import closure holds the files that compute its outputs, not the ones of other paths.

The closure of `flows.<stage>` is its DVC deps (tests/test_dvc_stages.py); these are the edges
narrowed for issue 22, kept narrow: a facade or an unused helper would pull them back in. (The
other way, a module a stage uses is imported at module level, so that it is in the closure.)
"""

from __future__ import annotations

import pytest
from stage_probe import session_probes

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
def test_a_stage_does_not_import_another_paths_modules(stage, tmp_path_factory, worker_id):
    probes = session_probes(tmp_path_factory, worker_id)
    assert not set(ABSENT[stage]) & set(probes["preloaded"]), "the preload hides what is checked"
    modules = set(probes[f"flows.{stage}"]["modules"])
    present = [name for name in ABSENT[stage] if name in modules]
    assert not present, f"flows.{stage} imports {present}: import the specific module where used"
