"""A tensor as the writer lays it out: its header record, its sections' bytes, and the spans
that place it in the payload; and the version-4 choice of storing a raw tensor over the kept
rows of the layer it belongs to (a bias of removed units costs no bytes)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from deepcompression.format.records import Span

__all__ = ["PayloadWriter", "Encoded", "placed_records", "RawTensor", "raws_for"]

ROWS_KEY = "rows_of"


class PayloadWriter:
    """Appends sections back to back and hands out their (offset, length) spans."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []
        self._size = 0

    def add(self, data: bytes) -> list[int]:
        span = Span(self._size, len(data))
        self._parts.append(data)
        self._size += len(data)
        return span.to_json()

    def getvalue(self) -> bytes:
        return b"".join(self._parts)


_SPAN_KEYS = ("data", "codebook")
_NESTED_SPANS = (("units", ("rows", "cols")), ("index", ("table", "stream")),
                 ("weight", ("table", "stream")))  # fmt: skip


@dataclass(frozen=True)
class Encoded:
    """One tensor's header record (spans from its own first section) and its sections' bytes."""

    record: dict
    sections: bytes
    rows: np.ndarray | None = field(default=None, compare=False)
    """Version 4: the kept rows (bool per row) of a layer with removed units."""
    remake: Callable[[tuple[bool, bool]], Encoded] | None = field(default=None, compare=False)
    """A quantized layer's encoding with other stream coders (index, weight: arithmetic?)."""
    over_rows: Callable[[int, np.ndarray], Encoded | None] | None = field(
        default=None, compare=False
    )
    """Version 7, a 1-D quantized tensor: its encoding over the kept rows of the earlier tensor at
    a position, when its surviving positions are exactly those rows (None otherwise)."""
    over_columns: Callable[[int, np.ndarray], Encoded | None] | None = field(
        default=None, compare=False
    )
    """Version 8, a layer with removed units: its encoding with the columns mask over the kept
    rows (given) of the earlier tensor at a position, when its kept columns lie in their blocks."""

    @property
    def index_bits(self) -> int:
        return self.record.get("index_bits", 0)

    @property
    def has_units(self) -> bool:
        return "units" in self.record

    def placed(self, offset: int) -> dict:
        """The record with every span moved to start at payload ``offset``."""
        record = dict(self.record)
        for key in _SPAN_KEYS:
            if key in record:
                record[key] = [record[key][0] + offset, record[key][1]]
        for key, parts in _NESTED_SPANS:
            if key in record:
                inner = dict(record[key])
                for part in parts:
                    inner[part] = [inner[part][0] + offset, inner[part][1]]
                record[key] = inner
        return record


def placed_records(encoded: Sequence[Encoded]) -> list[dict]:
    """Header records of tensors written back to back in this order."""
    records, offset = [], 0
    for item in encoded:
        records.append(item.placed(offset))
        offset += len(item.sections)
    return records


@dataclass(frozen=True)
class RawTensor:
    """A raw tensor's plain encoding; in version 4 also the position of the quantized layer it
    belongs to (``X.bias`` of ``X.weight``, one item per row) and its items, one row each."""

    plain: Encoded
    owner: int | None = None
    items: np.ndarray | None = field(default=None, compare=False)


def raw_tensor(plain: Encoded, names: Sequence[str], shapes: Sequence[tuple[int, ...]],
               binary: bool) -> RawTensor:  # fmt: skip
    """The raw tensor with its owner layer when one can hold it (version 4, 1-D, same rows)."""
    record = plain.record
    owner_name = record["name"].rpartition(".")[0] + ".weight"
    if not binary or len(record["shape"]) != 1 or owner_name not in names:
        return RawTensor(plain)
    owner = list(names).index(owner_name)
    if len(shapes[owner]) < 2 or shapes[owner][0] != record["shape"][0]:
        return RawTensor(plain)
    items = np.frombuffer(plain.sections, dtype=np.uint8).reshape(record["shape"][0], -1)
    return RawTensor(plain, owner, items)


def raws_for(raws: Sequence[RawTensor], layers: Sequence[Encoded]) -> list[Encoded]:
    """Each raw tensor's encoding given the chosen layers: over its owner's kept rows when the
    owner removes units and the removed rows' items are all zero bytes (lossless), else plain."""
    return [_raw_form(raw, layers) for raw in raws]


def _raw_form(raw: RawTensor, layers: Sequence[Encoded]) -> Encoded:
    kept = None if raw.owner is None else layers[raw.owner].rows
    if kept is None or raw.items is None or raw.items[~kept].any():
        return raw.plain
    data = raw.items[kept].tobytes()
    record = {**raw.plain.record, ROWS_KEY: raw.owner, "data": [0, len(data)]}
    return Encoded(record, data)
