"""Images too large to preload: uint8 rows (a read-only memmap of an IDX file) read in batches
through a DataLoader and normalised per batch by the preloaded path's own function, so every
batch is bit for bit what slicing the preloaded float32 tensor gives."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

Normaliser = Callable[[torch.Tensor], torch.Tensor]
"""uint8 (B, C, S, S) -> float32 (B, C, S, S): the function the preloaded path normalises with."""

Rows = slice | torch.Tensor
"""Which rows one batch holds: a range (evaluation) or positions (a shuffled training batch)."""


@dataclass(frozen=True)
class StreamedImages:
    """A split read in batches instead of preloaded: uint8 (N, C, S, S) `images`, normalised per
    batch and moved to `device`. `shape`, `dtype` and `ndim` describe it as the float32 tensor it
    stands for; slicing it gives a view (nothing is read)."""

    images: np.ndarray
    normalise: Normaliser
    device: torch.device = torch.device("cpu")

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def shape(self) -> torch.Size:
        """(N, C, S, S), as the preloaded tensor's."""
        return torch.Size(int(d) for d in self.images.shape)

    @property
    def ndim(self) -> int:
        """4, as the preloaded tensor's."""
        return self.images.ndim

    @property
    def dtype(self) -> torch.dtype:
        """float32: what every batch is."""
        return torch.float32

    def to(self, device: torch.device | str) -> StreamedImages:
        """The same rows, their batches sent to `device` (as `Tensor.to` moves preloaded data)."""
        return dataclasses.replace(self, device=torch.device(device))

    def __getitem__(self, rows: slice) -> StreamedImages:
        """A contiguous range of the rows, still streamed (as slicing a preloaded tensor)."""
        if not isinstance(rows, slice) or rows.step not in (None, 1):
            raise TypeError("streamed images take a contiguous slice; read rows with `read`")
        return dataclasses.replace(self, images=self.images[rows])

    def read(self, rows: Rows) -> torch.Tensor:
        """The rows as a normalised float32 batch on the CPU, in the order given."""
        index = rows if isinstance(rows, slice) else rows.cpu().numpy()
        batch = self.images[index]
        return self.normalise(torch.from_numpy(np.array(batch, dtype=np.uint8, copy=True)))


class _Batches(Dataset):
    """The DataLoader's view of streamed images: one `__getitems__` call reads a whole batch."""

    def __init__(self, images: StreamedImages) -> None:
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, row: int) -> torch.Tensor:
        return self.images.read(slice(row, row + 1))[0]

    def __getitems__(self, rows: Rows) -> torch.Tensor:
        return self.images.read(rows)


def _as_read(batch: torch.Tensor) -> torch.Tensor:
    """The DataLoader's collate function: a batch is read whole already."""
    return batch


def batches(x: torch.Tensor | StreamedImages, rows: Sequence[Rows]) -> Iterator[torch.Tensor]:
    """x's batches in the order of `rows`: slices of a preloaded tensor, or read through a
    DataLoader whose batch sampler is `rows` itself, each sent to x's device."""
    if isinstance(x, torch.Tensor):
        return (x[r] for r in rows)
    loader = DataLoader(
        _Batches(x),
        batch_sampler=rows,
        collate_fn=_as_read,
        pin_memory=x.device.type == "cuda",
    )
    return (batch.to(x.device) for batch in loader)
