"""Encoding: ``encode_model`` writes a file, choosing each layer's index width and units by size.

Inputs are checked first (InvalidArgument for anything the reader would refuse); each quantized
layer is encoded in every form the writer may choose, and ``_choose_layers`` keeps the forms that
give the smallest whole file, measured in exact bytes.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from deepcompression.format.binheader import load_header
from deepcompression.format.binwriter import dump_header
from deepcompression.format.coders import choose_coders, coded_stream
from deepcompression.format.errors import InvalidArgument, MalformedHeader
from deepcompression.format.framing import max_json_values
from deepcompression.format.header import parse_header
from deepcompression.format.huffman import (
    HuffmanStream,
    encode_symbols,
)
from deepcompression.format.info import InputMeta, QuantizedTensor
from deepcompression.format.inputs import check_input_spec, check_inputs
from deepcompression.format.jsontext import json_shape, load_json
from deepcompression.format.placed import (
    Encoded,
    PayloadWriter,
    RawTensor,
    placed_records,
    raw_tensor,
    raws_for,
)
from deepcompression.format.sparse_index import encode_positions
from deepcompression.format.spec import (
    AUTO_INDEX_BITS,
    BINARY_HEADER_VERSION,
    BIT_VIEWS,
    CODEBOOK_FLOAT16,
    CODED_ROWS_VERSION,
    DTYPE_NAMES,
    FLAG_HEADER_ZLIB,
    FLAG_INPUT_SPEC,
    FORMAT_VERSION,
    HALF_CODEBOOK_VERSION,
    KIND_HUFFMAN,
    KIND_RAW,
    LINKED_VERSION,
    MAGIC,
    MAX_HEADER_BYTES,
    MAX_HEADER_RATIO,
    MAX_JSON_VALUES,
    PREAMBLE,
    PREAMBLE_SIZE,
    UNITS_VERSION,
)

__all__ = ["encode_model"]


def encode_model(
    quantized: Sequence[QuantizedTensor],
    raw: Mapping[str, torch.Tensor],
    arch: dict,
    provenance: dict,
    *,
    compress_header: bool = True,
    format_version: int = FORMAT_VERSION,
    input_spec: InputMeta | None = None,
    arithmetic: bool = True,
) -> bytes:
    """Serialize quantized layers (then raw tensors) into one compressed-model file.

    Raw tensors are stored bit for bit in their own dtype (one of ``RAW_DTYPES``): to store a
    float16 bias, pass ``bias.half()``. ``arch`` is ``{"name": registry name, "kwargs": {...}}``
    (both keys optional). Deterministic: equal inputs give equal bytes. ``compress_header``
    zlib-compresses the JSON header when that makes it smaller; ``format_version=1`` writes the
    old format (float32 raw tensors only). From version 3 a layer whose mask leaves whole rows
    or columns empty stores them as removed units when that makes the file smaller; a layer with
    ``index_bits=None`` gets the width with the smallest file (``_choose_layers`` says how).
    From version 4 a raw ``X.bias`` of a layer ``X.weight`` that removes rows is stored for the
    kept rows only when its removed rows' items are zero (``placed.raws_for``), and
    ``input_spec`` (preprocessing and class names, for deployment) may be stored. With
    ``arithmetic`` a small stream is arithmetic-coded when that makes the file smaller
    (``coders.choose_coders``); without, every stream is Huffman-coded, the paper's method.
    Raises InvalidArgument for inconsistent inputs.
    """
    check_inputs(quantized, raw, arch, provenance, format_version)
    binary = format_version >= BINARY_HEADER_VERSION
    check_input_spec(input_spec, binary)

    def header_bytes(records: list[dict], check: bool = False) -> bytes:
        return _header(arch, provenance, records, format_version, input_spec, check=check)

    header_bytes([], check=True)
    options = [_quantized_options(q, format_version) for q in quantized]
    names, shapes = [q.name for q in quantized], [q.shape for q in quantized]
    raws: list[RawTensor] = [
        raw_tensor(_encode_raw(name, t, format_version), names, shapes, binary)
        for name, t in raw.items()
    ]

    def file_bytes(layers: Sequence[Encoded]) -> int:
        tensors = [*layers, *raws_for(raws, layers)]
        header = header_bytes(placed_records(tensors))
        stored = _stored_header(header, compress_header, binary)
        return PREAMBLE_SIZE + len(stored[0]) + sum(len(e.sections) for e in tensors)

    chosen = _choose_layers(options, file_bytes)
    if format_version >= CODED_ROWS_VERSION:
        chosen = _coded_rows(chosen, file_bytes)
    if format_version >= LINKED_VERSION:
        chosen = _units_for_links(_linked_columns(chosen, file_bytes), options, file_bytes)
    if binary and arithmetic:
        chosen = choose_coders(chosen, file_bytes)
    encoded = [*chosen, *raws_for(raws, chosen)]
    header = header_bytes(placed_records(encoded), check=True)
    if len(header) > MAX_HEADER_BYTES:
        raise InvalidArgument(
            f"header is {len(header)} bytes, over the {MAX_HEADER_BYTES}-byte cap; "
            "shrink arch/provenance"
        )
    stored, flags = _stored_header(header, compress_header, binary)
    flags |= 0 if input_spec is None else FLAG_INPUT_SPEC
    payload = b"".join(e.sections for e in encoded)
    preamble = PREAMBLE.pack(
        MAGIC,
        format_version,
        flags,
        len(stored),
        len(header),
        zlib.crc32(stored),
        zlib.crc32(payload),
    )
    return preamble + stored + payload


def _header(
    arch: dict,
    provenance: dict,
    records: list[dict],
    version: int,
    spec: InputMeta | None,
    *,
    check: bool = False,
) -> bytes:
    """The header as written: binary (version 4 on) or JSON; ``check`` reads it back as the
    reader would and turns any refusal into InvalidArgument."""
    if version < BINARY_HEADER_VERSION:
        header = {"arch": arch, "provenance": provenance, "tensors": records}
        return _dump_json(header) if check else _fast_json(header)
    data = dump_header(arch, provenance, records, spec, version)
    if check:
        try:
            parse_header(load_header(data, spec is not None, version)[0], version)
        except MalformedHeader as err:
            raise InvalidArgument(f"arch/provenance or a tensor break a header rule: {err}") from (
                err
            )
    return data


def _stored_header(header: bytes, compress: bool, binary: bool) -> tuple[bytes, int]:
    """The header as stored and its flags: zlib level 9 when asked for, shorter, and within the
    reader's inflation (and, for JSON, value-count) limits for that stored length."""
    if compress:
        packed = zlib.compress(header, 9)
        if len(packed) < len(header) and (
            len(header) <= MAX_HEADER_RATIO * len(packed)
            if binary
            else _within_limits(header, len(packed))
        ):
            return packed, FLAG_HEADER_ZLIB
    return header, 0


def _within_limits(header_json: bytes, stored_len: int) -> bool:
    """Whether JSON stored in ``stored_len`` bytes keeps the ratio and value limits (cheap test
    first: values never exceed the count of commas and opening brackets plus one)."""
    if len(header_json) > MAX_HEADER_RATIO * stored_len:
        return False
    limit = max_json_values(stored_len)
    marks = sum(header_json.count(mark) for mark in (b",", b"[", b"{")) + 1
    return marks <= limit or json_shape(header_json)[1] <= limit


def _fast_json(header: dict) -> bytes:
    """The header JSON the writer would write, without re-validating it (size evaluation only)."""
    return json.dumps(header, sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                      allow_nan=False).encode("ascii")  # fmt: skip


def _choose_layers(
    options: Sequence[Sequence[Encoded]], file_bytes: Callable[[Sequence[Encoded]], int]
) -> list[Encoded]:
    """One encoding per layer (its index width and units form), the file as small as found.

    Starts: every single width for all layers (each without removed units) and each layer's
    fewest payload bytes; from each single-width start, units are toggled per layer while that
    shrinks the file; from the smallest of these, any change of one layer that shrinks the file
    is kept until none does. So the result is never larger than the file with removed units
    nowhere (the version-2 layout), nor than any single width for every layer.
    """
    if all(len(layer) == 1 for layer in options):
        return [layer[0] for layer in options]
    widths = sorted({e.index_bits for layer in options for e in layer})
    starts = [[_pick(layer, width) for layer in options] for width in widths]
    cheapest = [
        min(_pick_all(layer), key=lambda e: (len(e.sections), e.index_bits)) for layer in options
    ]
    candidates = [_descend(start, options, file_bytes, same_width=True) for start in starts]
    best = min([*candidates, cheapest], key=file_bytes)
    return _descend(best, options, file_bytes, same_width=False)


def _pick_all(layer: Sequence[Encoded]) -> list[Encoded]:
    """A layer's encodings without removed units."""
    return [e for e in layer if not e.has_units]


def _pick(layer: Sequence[Encoded], width: int) -> Encoded:
    """The layer's encoding at ``width`` without removed units (its only width if it is fixed)."""
    plain = _pick_all(layer)
    return next((e for e in plain if e.index_bits == width), plain[0])


def _descend(
    choice: list[Encoded],
    options: Sequence[Sequence[Encoded]],
    file_bytes: Callable[[Sequence[Encoded]], int],
    *,
    same_width: bool,
) -> list[Encoded]:
    """Keep any one-layer change that makes the file smaller until none does (deterministic)."""
    best = file_bytes(choice)
    improved = True
    while improved:
        improved = False
        for i, layer in enumerate(options):
            for candidate in layer:
                current = choice[i]
                if candidate is current or (
                    same_width and candidate.index_bits != current.index_bits
                ):
                    continue
                trial = [*choice[:i], candidate, *choice[i + 1 :]]
                size = file_bytes(trial)
                if size < best:
                    choice, best, improved = trial, size, True
    return choice


def _quantized_options(q: QuantizedTensor, version: int) -> list[Encoded]:
    """Every encoding the writer may choose for a layer: each candidate width, with and
    (version 3, when some row or column holds no surviving weight) without removed units."""
    name = q.name
    k = q.centroids.numel()
    mask = q.mask.detach().cpu().numpy()
    flat = mask.reshape(-1)
    labels = q.labels.detach().cpu().reshape(-1).numpy()[flat].astype(np.int64)
    if labels.size and (labels.min() < 0 or labels.max() >= k):
        bad = int(np.flatnonzero((labels < 0) | (labels >= k))[0])
        raise InvalidArgument(
            f"layer {name!r}: label {int(labels[bad])} at surviving position "
            f"{int(np.flatnonzero(flat)[bad])} is outside the codebook range [0, {k})"
        )
    half = version >= HALF_CODEBOOK_VERSION and k > 0 and _exact_in_half(q.centroids)
    common = _LayerCommon(
        name=name,
        shape=q.shape,
        weight_bits=q.weight_bits,
        codebook=_tensor_bytes(q.centroids.half() if half else q.centroids),
        half=half,
        weight=encode_symbols(labels),
        labels=labels,
        k=k,
        linkable=version >= LINKED_VERSION,
    )
    widths = AUTO_INDEX_BITS if q.index_bits is None else (q.index_bits,)
    forms: list[tuple[np.ndarray, np.ndarray] | None] = [None]
    if version >= UNITS_VERSION and (units := _removable_units(mask)) is not None:
        forms.append(units)
    encoded = [_encode_layer(common, mask, width, form) for form in forms for width in widths]
    if version < CODED_ROWS_VERSION or mask.ndim != 1:
        return encoded
    over_rows = functools.partial(_over_rows, common, mask)
    return [dataclasses.replace(e, over_rows=over_rows) for e in encoded]


def _over_rows(
    layer: _LayerCommon, mask: np.ndarray, owner: int, kept: np.ndarray
) -> Encoded | None:
    """The 1-D layer over the kept rows of tensor ``owner`` (version 7), when its surviving
    positions are exactly those rows."""
    if mask.shape != kept.shape or not np.array_equal(mask, kept):
        return None
    return _encode_rows(layer, owner)


def _encode_rows(layer: _LayerCommon, owner: int, coders: tuple[bool, bool] = (False, False)
                 ) -> Encoded:  # fmt: skip
    """A layer stored over an earlier tensor's kept rows: codebook and weight stream only (its
    index stream is empty: the positions are those rows)."""
    writer = PayloadWriter()
    record: dict = {
        "kind": KIND_HUFFMAN,
        "name": layer.name,
        "shape": list(layer.shape),
        "rows_of": owner,
        "nnz": layer.weight.n_symbols,
        "weight_bits": layer.weight_bits,
        "index_bits": 1,
        "codebook": writer.add(layer.codebook),
    }
    if layer.half:
        record["codebook_dtype"] = CODEBOOK_FLOAT16
    weight = coded_stream(layer.weight, layer.labels, layer.k, layer.weight_bits, arith=coders[1])
    index_table, weight_table = writer.add(b""), writer.add(weight[0])
    index_stream, weight_stream = writer.add(b""), writer.add(weight[1].tobytes())
    record["index"] = {"table": index_table, "stream": index_stream, "bits": 0, "symbols": 0}
    record["weight"] = {"table": weight_table, "stream": weight_stream, **weight[2]}
    return Encoded(
        record, writer.getvalue(), None, functools.partial(_encode_rows, layer, owner)
    )


def _coded_rows(
    chosen: list[Encoded], file_bytes: Callable[[Sequence[Encoded]], int]
) -> list[Encoded]:
    """Each 1-D layer ``X.bias`` whose surviving positions are the kept rows of an earlier
    layer ``X.weight`` with removed units, stored over those rows when the file gets smaller
    (version 7: a k-means-shared bias of kept units needs no index stream)."""
    names = [e.record["name"] for e in chosen]
    size = file_bytes(chosen)
    for i, layer in enumerate(chosen):
        owner_name = layer.record["name"].rpartition(".")[0] + ".weight"
        if layer.over_rows is None or owner_name not in names[:i]:
            continue
        owner = names.index(owner_name)
        kept = chosen[owner].rows
        form = None if kept is None else layer.over_rows(owner, kept)
        chosen, size = _keep_smaller(chosen, size, i, form, file_bytes)
    return chosen


def _linked_columns(
    chosen: list[Encoded], file_bytes: Callable[[Sequence[Encoded]], int]
) -> list[Encoded]:
    """Each layer with removed units whose kept columns all lie in the column blocks of an
    earlier layer's kept rows (its inputs are that layer's outputs) stores its columns mask over
    those blocks, from the nearest such layer, when the file gets smaller (version 8)."""
    size = file_bytes(chosen)
    for i, layer in enumerate(chosen):
        if layer.over_columns is None:
            continue
        form = next(
            (
                linked
                for owner in range(i - 1, -1, -1)
                if (kept := chosen[owner].rows) is not None
                and (linked := layer.over_columns(owner, kept)) is not None
            ),
            None,
        )
        chosen, size = _keep_smaller(chosen, size, i, form, file_bytes)
    return chosen


def _units_for_links(
    chosen: list[Encoded],
    options: Sequence[Sequence[Encoded]],
    file_bytes: Callable[[Sequence[Encoded]], int],
) -> list[Encoded]:
    """Each layer stored without removed units tried with them (same index width) together with
    what they allow later tensors (its bias over its kept rows, columns masks over them), kept
    when the whole file gets smaller: a few removed units may not pay alone (version 8)."""
    size = file_bytes(chosen)
    for i in range(len(chosen)):
        layer = chosen[i]
        form = next(
            (e for e in options[i] if e.has_units and e.index_bits == layer.index_bits), None
        )
        if layer.has_units or layer.record.get("rows_of") is not None or form is None:
            continue
        trial = [*chosen[:i], form, *chosen[i + 1 :]]
        trial = _linked_columns(_coded_rows(trial, file_bytes), file_bytes)
        if (trial_size := file_bytes(trial)) < size:
            chosen, size = trial, trial_size
    return chosen


def _keep_smaller(
    chosen: list[Encoded],
    size: int,
    i: int,
    form: Encoded | None,
    file_bytes: Callable[[Sequence[Encoded]], int],
) -> tuple[list[Encoded], int]:
    """`chosen` with layer ``i`` replaced by ``form`` when that makes the file smaller than
    ``size`` (the file bytes of `chosen`), and the file bytes of the result."""
    if form is None:
        return chosen, size
    trial = [*chosen[:i], form, *chosen[i + 1 :]]
    trial_size = file_bytes(trial)
    return (trial, trial_size) if trial_size < size else (chosen, size)


def _columns_mask(cols: np.ndarray, owner_rows: np.ndarray) -> bytes | None:
    """A columns mask over the column blocks of an owner's kept rows (version 8): b"" when it
    keeps every candidate; None when the columns are not a multiple of the owner's rows or a
    kept column lies outside the blocks."""
    blocks = owner_rows.size
    if blocks < 1 or cols.size < blocks or cols.size % blocks:
        return None
    candidates = np.repeat(owner_rows, cols.size // blocks)
    if cols[~candidates].any():
        return None
    picked = cols[candidates]
    return b"" if picked.all() else np.packbits(picked, bitorder="big").tobytes()


def _exact_in_half(centroids: torch.Tensor) -> bool:
    """Whether every centroid is exactly a float16 value (bit for bit back to float32), so the
    codebook can be stored at 2 bytes an entry and decode to the same model."""
    back = centroids.detach().cpu().half().float()
    return torch.equal(back.view(torch.int32), centroids.detach().cpu().view(torch.int32))


def _removable_units(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """(kept rows, kept columns) of a mask of 2+ dims whose some row (dimension 0) or column
    (dimension 1) holds no surviving weight; None when there is none to remove."""
    if mask.ndim < 2:
        return None
    rows = mask.reshape(mask.shape[0], -1).any(axis=1)
    cols = np.moveaxis(mask, 1, 0).reshape(mask.shape[1], -1).any(axis=1)
    if rows.all() and cols.all():
        return None
    return rows, cols


@dataclass(frozen=True)
class _LayerCommon:
    """What every encoding of one layer shares: its codebook and weight stream."""

    name: str
    shape: tuple[int, ...]
    weight_bits: int
    codebook: bytes
    half: bool
    weight: HuffmanStream
    labels: np.ndarray
    k: int
    linkable: bool = False
    """Version 8: its columns mask may run over an earlier layer's kept rows."""


def _encode_layer(
    layer: _LayerCommon,
    mask: np.ndarray,
    index_bits: int,
    units: tuple[np.ndarray, np.ndarray] | None,
    coders: tuple[bool, bool] = (False, False),
    *,
    cols_of: tuple[int, bytes] | None = None,
) -> Encoded:
    """A layer's sections and record at one index width, with or without removed units, each
    stream Huffman-coded or (``coders``: index, weight; version 4) arithmetic-coded; with
    ``cols_of`` (version 8: owner position, mask) its columns mask over an owner's kept rows."""
    writer = PayloadWriter()
    record: dict = {
        "kind": KIND_HUFFMAN,
        "name": layer.name,
        "shape": list(layer.shape),
        "nnz": layer.weight.n_symbols,
        "weight_bits": layer.weight_bits,
        "index_bits": index_bits,
        "codebook": writer.add(layer.codebook),
    }
    if layer.half:
        record["codebook_dtype"] = CODEBOOK_FLOAT16
    stored = mask.reshape(-1)
    if units is not None:
        rows, cols = units
        cols_mask = np.packbits(cols, bitorder="big").tobytes() if cols_of is None else cols_of[1]
        record["units"] = {
            "rows": writer.add(np.packbits(rows, bitorder="big").tobytes()),
            "cols": writer.add(cols_mask),
            "kept_rows": int(rows.sum()),
            "kept_cols": int(cols.sum()),
        }
        if cols_of is not None:
            record["units"]["cols_of"] = cols_of[0]
        stored = mask[np.ix_(rows, cols)].reshape(-1)
    index_symbols = encode_positions(stored, index_bits)
    index = encode_symbols(index_symbols)
    streams = (
        coded_stream(index, index_symbols, 1 << index_bits, index_bits, arith=coders[0]),
        coded_stream(layer.weight, layer.labels, layer.k, layer.weight_bits, arith=coders[1]),
    )
    tables = [writer.add(table) for table, _, _ in streams]
    for key, table, (_, bits, fields) in zip(("index", "weight"), tables, streams, strict=True):
        record[key] = {"table": table, "stream": writer.add(bits.tobytes()), **fields}
    remake = functools.partial(_encode_layer, layer, mask, index_bits, units, cols_of=cols_of)
    over_columns = None
    if units is not None and layer.linkable and cols_of is None:
        over_columns = functools.partial(_over_columns, layer, mask, index_bits, units, coders)
    return Encoded(
        record, writer.getvalue(), None if units is None else units[0], remake,
        over_columns=over_columns,
    )  # fmt: skip


def _over_columns(
    layer: _LayerCommon,
    mask: np.ndarray,
    index_bits: int,
    units: tuple[np.ndarray, np.ndarray],
    coders: tuple[bool, bool],
    owner: int,
    owner_rows: np.ndarray,
) -> Encoded | None:
    """The layer with its columns mask over tensor ``owner``'s kept rows (version 8), when its
    kept columns all lie in those rows' blocks."""
    cols_mask = _columns_mask(units[1], owner_rows)
    if cols_mask is None:
        return None
    return _encode_layer(layer, mask, index_bits, units, coders, cols_of=(owner, cols_mask))


def _encode_raw(name: str, tensor: torch.Tensor, version: int) -> Encoded:
    """A raw tensor's items and header record (with dtype from version 2)."""
    record = {"kind": KIND_RAW, "name": name, "shape": list(tensor.shape)}
    if version >= 2:
        record["dtype"] = DTYPE_NAMES[tensor.dtype]
    data = _tensor_bytes(tensor)
    record["data"] = [0, len(data)]
    return Encoded(record, data)


def _tensor_bytes(tensor: torch.Tensor) -> bytes:
    """The tensor's items row-major, little-endian, bit for bit; bools as bytes 0/1."""
    flat = tensor.detach().cpu().contiguous().reshape(-1)
    if flat.dtype == torch.bool:
        flat = flat.view(torch.uint8) != 0  # a bool tensor's bytes may be other than 0/1
    int_dtype, code = BIT_VIEWS[flat.element_size()]
    return flat.view(int_dtype).numpy().astype(code, copy=False).tobytes()


def _dump_json(obj: dict) -> bytes:
    """Deterministic ASCII JSON that the reader accepts, else InvalidArgument."""
    try:
        text = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                          allow_nan=False)  # fmt: skip
    except (TypeError, ValueError) as err:
        raise InvalidArgument(
            f"arch/provenance must be JSON-able dicts with str keys and finite numbers: {err}"
        ) from err
    except RecursionError as err:
        raise InvalidArgument("arch/provenance are nested too deeply") from err
    data = text.encode("ascii")
    try:
        load_json(data, MAX_JSON_VALUES)
    except MalformedHeader as err:
        raise InvalidArgument(f"arch/provenance break a header JSON rule: {err}") from err
    return data
