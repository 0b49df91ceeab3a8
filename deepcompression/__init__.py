"""Deep Compression as a pure library: pruning, k-means weight sharing, Huffman-coded files.

No Prefect, no YAML, no file paths here: tensors, arrays, bytes and dataclasses in and out.
"""
