"""The compressed model file: the public face of the format package (docs/FORMAT.md).

``encode_model`` writes the format (version 3; 1 and 2 on request), choosing per layer, by exact
file bytes, the relative-index width (when asked to) and whether to store removed units;
``decode_model`` reads versions 1 to 3 back to a state_dict bitwise equal to the encoder's input,
and ``read_info`` reports sizes without decoding. Decoding treats the input as untrusted. The
parts live in their own modules: ``spec`` (constants and limits), ``errors``, ``info`` (public
records), ``jsontext`` and ``header`` (the header), ``framing`` (checks 1-11), ``decoder`` and
``encoder``.
"""

from __future__ import annotations

from deepcompression.format.decoder import decode_model, read_info
from deepcompression.format.encoder import encode_model
from deepcompression.format.errors import (
    BadMagic,
    ChecksumMismatch,
    CorruptStream,
    DecodedTooLarge,
    FormatError,
    HeaderTooLarge,
    InvalidArgument,
    InvalidCode,
    InvalidOffset,
    InvalidValue,
    MalformedHeader,
    TruncatedFile,
    UnsupportedVersion,
)
from deepcompression.format.info import (
    DecodedModel,
    FileInfo,
    InputMeta,
    LayerInfo,
    QuantizedTensor,
)
from deepcompression.format.spec import (
    AUTO_INDEX_BITS,
    DEFAULT_MAX_DECODED_BYTES,
    FLAG_HEADER_ZLIB,
    FORMAT_VERSION,
    KIND_HUFFMAN,
    KIND_RAW,
    MAGIC,
    MAX_HEADER_BYTES,
    MAX_HEADER_RATIO,
    MAX_JSON_DEPTH,
    MAX_JSON_INT,
    MAX_JSON_VALUES,
    MAX_JSON_VALUES_PER_BYTE,
    MAX_NDIM,
    MAX_NONZERO_PRODUCT,
    MAX_TOTAL_NUMEL,
    PREAMBLE_SIZE,
    RAW_DTYPES,
    SUPPORTED_VERSIONS,
)

__all__ = [
    "MAGIC",
    "FORMAT_VERSION",
    "SUPPORTED_VERSIONS",
    "FLAG_HEADER_ZLIB",
    "PREAMBLE_SIZE",
    "MAX_HEADER_BYTES",
    "MAX_HEADER_RATIO",
    "MAX_NDIM",
    "MAX_TOTAL_NUMEL",
    "MAX_NONZERO_PRODUCT",
    "MAX_JSON_DEPTH",
    "MAX_JSON_INT",
    "MAX_JSON_VALUES",
    "MAX_JSON_VALUES_PER_BYTE",
    "AUTO_INDEX_BITS",
    "DEFAULT_MAX_DECODED_BYTES",
    "RAW_DTYPES",
    "KIND_RAW",
    "KIND_HUFFMAN",
    "FormatError",
    "BadMagic",
    "UnsupportedVersion",
    "TruncatedFile",
    "HeaderTooLarge",
    "MalformedHeader",
    "ChecksumMismatch",
    "InvalidOffset",
    "InvalidValue",
    "DecodedTooLarge",
    "InvalidCode",
    "CorruptStream",
    "InvalidArgument",
    "QuantizedTensor",
    "InputMeta",
    "LayerInfo",
    "FileInfo",
    "DecodedModel",
    "encode_model",
    "decode_model",
    "read_info",
]
