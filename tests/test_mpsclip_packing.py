"""Packed perspectives: only real sub-images are encoded, with the same results as the padded reference."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from rsitr_bench.methods.mps_clip.adapter import add_g2a_adapters
from rsitr_bench.methods.mps_clip.packing import (
    PackedPerspectives,
    encode_packed,
    encode_padded,
    fuse_for_scoring,
    regions_or_global,
    segment_mean_normalized,
)
from tests.fixtures.mpsclip_models import IMAGE, SMALL_ADAPTER, tiny_clip

pytestmark = pytest.mark.usefixtures("one_torch_thread")

COUNTS = [2, 0, 3, 1]


def _packed(counts=COUNTS, seed=0) -> tuple[torch.Tensor, PackedPerspectives]:
    gen = torch.Generator().manual_seed(seed)
    images = torch.randn(len(counts), *IMAGE, generator=gen)
    return images, PackedPerspectives.from_list([torch.randn(k, *IMAGE, generator=gen) for k in counts])


class CountingEncoder:
    """Records how many images each call encodes."""

    def __init__(self, encode):
        self.encode, self.calls = encode, []

    def __call__(self, x):
        self.calls.append(x.shape[0])
        return self.encode(x)


def test_pack_layout_and_padded_round_trip():
    _, packed = _packed()
    assert packed.owner.tolist() == [0, 0, 2, 2, 2, 3]
    pixels, mask = packed.padded()
    assert pixels.shape == (4, 3, *IMAGE) and mask.tolist() == [[True, True, False], [False] * 3,
                                                                [True] * 3, [True, False, False]]
    assert torch.equal(pixels[2, 1], packed.pixels[3]) and float(pixels[1].abs().sum()) == 0.0
    with pytest.raises(ValueError, match="image_shape"):
        PackedPerspectives.from_list([torch.empty(0, *IMAGE)])
    empty = PackedPerspectives.from_list([torch.empty(0, *IMAGE)] * 2, IMAGE)
    assert empty.pixels.shape == (0, *IMAGE) and empty.counts.tolist() == [0, 0]


def test_segment_mean_by_hand():
    e = torch.tensor([[3.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
    r = segment_mean_normalized(e, torch.tensor([0, 0, 2]), torch.tensor([2, 0, 1]))
    s = 2 ** -0.5
    torch.testing.assert_close(r, torch.tensor([[s, s], [0.0, 0.0], [s, s]]))


@pytest.mark.parametrize("variant", ["serial", "parallel"])
def test_packed_equals_padded_and_encodes_only_real_subimages(variant):
    model = tiny_clip()
    add_g2a_adapters(model, variant, **SMALL_ADAPTER)
    with torch.no_grad():
        for p in model.parameters():  # make the adapters non-trivial
            p.add_(0.01 * torch.randn_like(p))
    model.eval()
    images, packed = _packed()
    packed_enc, padded_enc = CountingEncoder(model.encode_image), CountingEncoder(model.encode_image)
    with torch.no_grad():
        g1, r1, has1 = encode_packed(packed_enc, images, packed)
        g2, r2, has2 = encode_padded(padded_enc, images, *packed.padded())
    assert packed_enc.calls == [4 + sum(COUNTS)]  # one call, no padded slot
    assert padded_enc.calls == [4 + 4 * max(COUNTS)]
    assert has1.tolist() == has2.tolist() == [True, False, True, True]
    torch.testing.assert_close(g1, g2, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(r1, r2, rtol=1e-5, atol=1e-6)
    assert float(r1[1].abs().sum()) == 0.0
    # and each r is the normalised mean of individually encoded, normalised sub-images
    with torch.no_grad():
        alone = F.normalize(model.encode_image(packed.pixels[2:5]), dim=-1).mean(0)
    torch.testing.assert_close(r1[2], F.normalize(alone, dim=0), rtol=1e-5, atol=1e-6)


def test_packed_and_padded_gradients_agree():
    model = tiny_clip()
    add_g2a_adapters(model, "serial", dropout=0.0, drop_path=0.0, **SMALL_ADAPTER)
    images, packed = _packed()
    grads = []
    for encode in (lambda: encode_packed(model.encode_image, images, packed),
                   lambda: encode_padded(model.encode_image, images, *packed.padded())):
        model.zero_grad()
        g, r, has = encode()
        (regions_or_global(g, r, has) * torch.linspace(-1, 1, g.shape[1])).sum().backward()
        grads.append(model.visual.proj.grad.clone())
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-4, atol=1e-6)


def test_scoring_fusion_and_training_fallback():
    g = F.normalize(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), dim=-1)
    r = torch.tensor([[0.0, 1.0], [0.0, 0.0]])
    has = torch.tensor([True, False])
    s = 2 ** -0.5
    # normalize(0.5·(g + r)) with perspectives; exactly g without
    torch.testing.assert_close(fuse_for_scoring(g, r, has), torch.tensor([[s, s], [0.0, 1.0]]))
    assert torch.equal(regions_or_global(g, r, has), torch.tensor([[0.0, 1.0], [0.0, 1.0]]))
