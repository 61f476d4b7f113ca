"""The slab KV cache layer: in-place appends, geometric growth, views of the filled part."""

from __future__ import annotations

import torch

from lora_router.adapters.batcher import SlabLayer


def test_slab_appends_in_place_and_grows_keeping_contents() -> None:
    layer = SlabLayer(capacity=4)
    steps = [torch.randn(2, 3, n, 5) for n in (3, 1, 1, 4, 1)]
    for i, s in enumerate(steps):
        k, v = layer.update(s, -s)
        want = torch.cat(steps[: i + 1], dim=2)
        assert torch.equal(k, want) and torch.equal(v, -want)
        assert layer.get_seq_length() == want.shape[2]
    assert layer.capacity >= 10


def test_slab_holding_existing_tensors() -> None:
    k, v = torch.randn(1, 2, 6, 4), torch.randn(1, 2, 6, 4)
    layer = SlabLayer.holding(k, v, capacity=3)
    assert torch.equal(layer.keys, k) and torch.equal(layer.values, v)
    k2, _ = layer.update(torch.ones(1, 2, 1, 4), torch.ones(1, 2, 1, 4))
    assert k2.shape[2] == 7 and torch.equal(k2[:, :, :6], k)
