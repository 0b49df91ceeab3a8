"""Checkpoints as bytes: architecture, weights, masks and codebooks in one safe-to-load blob.

Loaded with `torch.load(weights_only=True)`, so a checkpoint can hold only tensors and plain data.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from deepcompression.networks import build_model


class CheckpointError(ValueError):
    """A checkpoint is unreadable or belongs to another model."""


@dataclass
class Checkpoint:
    """What a stage hands to the next: the network by name, its weights, and compression state.

    `masks` (bool, keyed "fc1.weight") come with pruning; `centroids`/`labels` with quantization.
    """

    arch: dict[str, Any]
    state_dict: dict[str, torch.Tensor]
    masks: dict[str, torch.Tensor] = field(default_factory=dict)
    centroids: dict[str, torch.Tensor] = field(default_factory=dict)
    labels: dict[str, torch.Tensor] = field(default_factory=dict)
    bits: dict[str, int] = field(default_factory=dict)

    @classmethod
    def of(cls, model: nn.Module, arch: dict[str, Any], **state: Any) -> Checkpoint:
        """Snapshot `model` (weights copied to CPU) with optional masks/codebooks."""
        weights = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        return cls(arch=dict(arch), state_dict=weights, **state)

    def build(self, device: torch.device | str = "cpu") -> nn.Module:
        """Rebuild the network from `arch` and load the weights (keys and shapes must match)."""
        model = build_model(self.arch["name"], **self.arch.get("kwargs", {}))
        try:
            model.load_state_dict(self.state_dict, strict=True)
        except RuntimeError as err:
            raise CheckpointError(
                f"checkpoint weights do not fit model {self.arch['name']!r}: {err}"
            ) from None
        return model.to(device)

    def expect_model(self, name: str) -> None:
        """Refuse a checkpoint of another network, naming both."""
        if self.arch.get("name") != name:
            raise CheckpointError(
                f"checkpoint is for model {self.arch.get('name')!r} but params.yaml asks for "
                f"{name!r}; rerun the earlier stages (dvc repro) or set model.name"
            )

    def to_bytes(self) -> bytes:
        """Serialise with torch.save."""
        buffer = io.BytesIO()
        torch.save(
            {
                "arch": self.arch,
                "state_dict": self.state_dict,
                "masks": {k: v.cpu() for k, v in self.masks.items()},
                "centroids": {k: v.cpu() for k, v in self.centroids.items()},
                "labels": {k: v.cpu() for k, v in self.labels.items()},
                "bits": dict(self.bits),
            },
            buffer,
        )
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> Checkpoint:
        """Load with `weights_only=True`; anything that is not a checkpoint is a CheckpointError."""
        try:
            raw = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        except Exception as err:
            raise CheckpointError(f"not a readable checkpoint: {err}") from None
        if not isinstance(raw, dict) or "arch" not in raw or "state_dict" not in raw:
            raise CheckpointError("not a deepcompression checkpoint: missing 'arch'/'state_dict'")
        return cls(
            arch=raw["arch"],
            state_dict=raw["state_dict"],
            masks=raw.get("masks", {}),
            centroids=raw.get("centroids", {}),
            labels=raw.get("labels", {}),
            bits=raw.get("bits", {}),
        )
