"""benchmarks.bench_entropy on files as written: a decoded file's streams are its kept positions
and cluster labels, whatever numbering the file gave them."""

from __future__ import annotations

import numpy as np
import torch

from benchmarks.bench_entropy import decoded_shared, entropy_bytes, stream_rows
from deepcompression.format.container import QuantizedTensor, encode_model, read_info


def test_a_decoded_file_gives_back_its_positions_and_label_partition() -> None:
    generator = torch.Generator().manual_seed(0)
    mask = torch.rand(20, 30, generator=generator) < 0.3
    labels = torch.randint(0, 4, (20, 30), generator=generator) * mask
    centroids = torch.tensor([-0.5, -0.1, 0.2, 0.7])
    tensor = QuantizedTensor("fc.weight", mask, labels, centroids, 2, None)
    data = encode_model([tensor], {"fc.bias": torch.zeros(20)}, {"name": "x", "kwargs": {}}, {})
    shared = decoded_shared(data)
    assert [s.name for s in shared] == ["fc.weight"]
    assert torch.equal(shared[0].mask, mask)
    kept = labels[mask].numpy()
    got = shared[0].labels[mask].numpy()
    pairs = set(zip(kept.tolist(), got.tolist(), strict=True))
    assert len(pairs) == len(set(kept.tolist())) == len(set(got.tolist()))
    rows = stream_rows(shared, list(read_info(data).layers))
    assert [(r[0], r[1]) for r in rows] == [("fc.weight", "index"), ("fc.weight", "weight")]
    assert rows[1][3] == entropy_bytes(kept)
    assert rows[1][2] >= np.floor(rows[1][3])
