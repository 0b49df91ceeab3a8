"""Where each stage reads and writes: one place for every path of the pipeline."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Workspace:
    """Pipeline paths under a root folder (the repo root for `dvc repro`, a temp dir in tests)."""

    root: Path = Path(".")

    @property
    def data(self) -> Path:
        """MNIST IDX files live in `<data>/MNIST/raw` (torchvision's layout)."""
        return self.root / "data"

    @property
    def wheel_cache(self) -> Path:
        """Verified downloads kept between runs and shared by every root: the project's .cache."""
        return PROJECT_ROOT / ".cache" / "wheels"

    def checkpoint(self, stage: str) -> Path:
        """`checkpoints/<stage>.pt` for dense, pruned and quantized."""
        return self.root / "checkpoints" / f"{stage}.pt"

    def metrics(self, stage: str) -> Path:
        """`metrics/<stage>.json`, read by `dvc metrics`."""
        return self.root / "metrics" / f"{stage}.json"

    def plot(self, name: str) -> Path:
        """`plots/<name>`, read by `dvc plots`."""
        return self.root / "plots" / name

    @property
    def compressed(self) -> Path:
        """The Huffman-coded model file."""
        return self.root / "compressed" / "model.dcz"
