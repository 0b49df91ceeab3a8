"""The format's constants as docs/FORMAT.md states them: magic, versions, flags, limits, dtypes.

Every limit the reader enforces is here, so the reader, the writer and the document agree on one
number each.
"""

from __future__ import annotations

import struct

import torch

from deepcompression.format.huffman import MAX_SYMBOL_BITS

MAGIC = b"\x89DCZ\r\n\x1a\n"
FORMAT_VERSION = 8
"""The version ``encode_model`` writes by default."""
SUPPORTED_VERSIONS = (1, 2, 3, 4, 5, 6, 7, 8)
UNITS_VERSION = 3
"""The first version whose Huffman tensors may declare removed units."""
BINARY_HEADER_VERSION = 4
"""The first version whose header is binary (varints, a string table, typed values), not JSON."""
SHORT_VALUES_VERSION = 5
"""The first version with 8- and 16-byte digests, decimal numbers and digit class names."""
HALF_CODEBOOK_VERSION = 6
"""The first version whose Huffman tensors may store their codebook as float16."""
CODED_ROWS_VERSION = 7
"""The first version whose 1-D Huffman tensors may be stored over an earlier tensor's kept rows
(no index stream: the positions are those rows)."""
LINKED_VERSION = 8
"""The first version with 4-byte digests, bias names derived from their owner's, and column masks
over an earlier tensor's kept rows (a layer's inputs are the previous layer's kept units)."""
CODEBOOK_FLOAT16 = "float16"
"""The header's ``codebook_dtype`` (version 6) of a codebook of binary16 items (binary32 else)."""
STATIC_STRINGS = (
    "name", "kwargs", "model", "params", "params_sha256", "code_sha256", "git_revision",
    "lenet_300_100", "lenet5", "weight", "bias", "running_mean", "running_var",
    "num_batches_tracked", "num_classes", "in_channels", "image_size", "width", "depth",
    "features", "classifier", "layer1", "layer2", "layer3", "layer4", "downsample",
    "conv1", "conv2", "conv3", "bn1", "bn2", "bn3", "fc", "fc1", "fc2", "fc3",
    "0", "1", "2", "3", "4", "5", "6", "7", "8", "9",
)  # fmt: skip
"""Strings every version-4 header knows without storing them: string references 0-45."""
AUTO_INDEX_BITS = tuple(range(1, MAX_SYMBOL_BITS + 1))
"""Widths the writer tries for a layer whose ``index_bits`` is None (auto)."""
FLAG_HEADER_ZLIB = 0x0001
FLAG_INPUT_SPEC = 0x0002
"""Version 4: the header holds the network's input spec (preprocessing and class names)."""
MAX_INPUT_CHANNELS = 1 << 16
MAX_IMAGE_SIZE = 1 << 16
MAX_CLASSES = 1 << 20
"""Caps on an input spec's channels, image side and class count."""
CODER_ARITH = "arith"
"""The header's name (version 4) for an adaptive arithmetic-coded stream (Huffman otherwise)."""
MAX_FILE_ARITH_SYMBOLS = 1 << 16
"""Most arithmetic-coded symbols in one file: bounds the pure-Python decoding time."""
PREAMBLE = struct.Struct("<8sHHIIII")
PREAMBLE_SIZE = PREAMBLE.size
MAX_HEADER_BYTES = 16 * 1024 * 1024
"""Cap on both the stored and the decompressed header length."""
MAX_HEADER_RATIO = 64
"""Cap on a compressed header's inflation: ``json_len <= 64 * header_len`` (zlib reaches ~1000)."""
MAX_NDIM = 16
MAX_TOTAL_NUMEL = 1 << 28
"""Cap on every dimension, and on the summed element count of all tensors in one file."""
MAX_NONZERO_PRODUCT = 1 << 59
"""Cap on the product of a shape's non-zero dimensions when one is 0: even at 8 bytes per item,
the empty tensor's nominal byte size and every stride in bytes stay below 2**63 (int64)."""
MAX_JSON_DEPTH = 64
"""Most arrays/objects open at once in the header JSON (the top-level object is depth 1)."""
MAX_JSON_INT = (1 << 53) - 1
"""Largest magnitude of a header integer literal (every such integer is exact in a double)."""
MAX_JSON_VALUES = 1 << 20
"""Most JSON values (objects, arrays, strings, numbers, literals; keys excluded) in a header."""
MAX_JSON_VALUES_PER_BYTE = 8
"""Most JSON values per stored header byte: a header's parsed size is paid for in file bytes."""
DEFAULT_MAX_DECODED_BYTES = 10**9
"""Default cap on the bytes ``decode_model`` allocates for decoded tensors: 1 GB holds VGG-16's
138M float32 parameters but refuses a file at the format's cap (2**28 float32 = 1 GiB)."""
KIND_RAW = "raw"
KIND_HUFFMAN = "huffman"
FLOAT_BYTES = 4
HALF_BYTES = 2
DTYPES: dict[str, tuple[torch.dtype, int]] = {
    "float32": (torch.float32, 4),
    "float16": (torch.float16, 2),
    "bfloat16": (torch.bfloat16, 2),
    "float64": (torch.float64, 8),
    "int8": (torch.int8, 1),
    "int16": (torch.int16, 2),
    "int32": (torch.int32, 4),
    "int64": (torch.int64, 8),
    "uint8": (torch.uint8, 1),
    "bool": (torch.bool, 1),
}
"""Each raw dtype name: its torch dtype and item size in bytes."""
RAW_DTYPES = tuple(DTYPES)
"""Names of the dtypes a version-2 raw tensor may have (the header's ``dtype`` values)."""
DTYPE_NAMES = {dtype: name for name, (dtype, _) in DTYPES.items()}
BIT_VIEWS: dict[int, tuple[torch.dtype, str]] = {
    1: (torch.uint8, "<u1"),
    2: (torch.int16, "<i2"),
    4: (torch.int32, "<i4"),
    8: (torch.int64, "<i8"),
}
"""Integer dtype of each item size, used to move raw tensors' bits without reinterpretation."""
