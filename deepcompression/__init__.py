"""Deep Compression as a pure library: pruning, k-means weight sharing, Huffman-coded files.

No Prefect, no YAML, no file paths here: tensors, arrays, bytes and dataclasses in and out.
``deepcompression.load(path or bytes)`` gives a compressed file's network, ready in eval mode.
"""

from typing import Any


def __getattr__(name: str) -> Any:
    """``load`` and ``load_with_info`` (deepcompression.format.loader), imported on first use."""
    if name in ("load", "load_with_info"):
        from deepcompression.format import loader

        return getattr(loader, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
