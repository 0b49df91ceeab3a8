"""Where each stage reads and writes: one place for every path of the pipeline."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
WHEEL_CACHE_ENV = "DC_WHEEL_CACHE"
"""Overrides the wheel cache folder (scheduled reruns point their worktree at the main repo's)."""


@dataclass(frozen=True)
class Workspace:
    """Pipeline paths of one model under a root folder (the repo root for `dvc repro`, a temp dir
    in tests). The data is shared by every model; everything else has the model in its path."""

    root: Path = Path(".")
    model: str = "lenet_300_100"

    @property
    def data(self) -> Path:
        """MNIST IDX files live in `<data>/MNIST/raw` (torchvision's layout), one copy for all."""
        return self.root / "data"

    @property
    def wheel_cache(self) -> Path:
        """Verified downloads kept between runs and shared by every root: the project's .cache,
        or the folder in $DC_WHEEL_CACHE."""
        return Path(os.environ.get(WHEEL_CACHE_ENV) or PROJECT_ROOT / ".cache" / "wheels")

    def checkpoint(self, stage: str) -> Path:
        """`checkpoints/<model>/<stage>.pt` for dense, pruned and quantized."""
        return self.root / "checkpoints" / self.model / f"{stage}.pt"

    def metrics(self, stage: str) -> Path:
        """`metrics/<model>/<stage>.json`, read by `dvc metrics`."""
        return self.root / "metrics" / self.model / f"{stage}.json"

    def plot(self, name: str) -> Path:
        """`plots/<model>/<name>`, read by `dvc plots`."""
        return self.root / "plots" / self.model / name

    @property
    def compressed(self) -> Path:
        """The Huffman-coded model file, `compressed/<model>.dcz`."""
        return self.root / "compressed" / f"{self.model}.dcz"

    def timing(self, stage: str) -> Path:
        """`runs/<model>/timing/<stage>.json`: wall times, kept out of DVC's outputs so that a
        rerun with the same inputs leaves dvc.lock unchanged."""
        return self.root / "runs" / self.model / "timing" / f"{stage}.json"

    def resume(self, stage: str) -> Path:
        """`runs/<model>/resume/<stage>/`: completed steps of an interrupted stage, to resume."""
        return self.root / "runs" / self.model / "resume" / stage
