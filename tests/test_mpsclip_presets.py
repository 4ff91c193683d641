"""The MPS-CLIP presets against the reference: published values, and every remaining deviation documented."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image
from torchvision import transforms as T

from rsitr_bench.harness.plugins import build_plugin_host
from rsitr_bench.methods.mps_clip.presets import _ALWAYS, DEVIATIONS
from rsitr_bench.training.clip_training import train_transform

DOC = (Path(__file__).resolve().parents[1] / "docs" / "mps-clip.md").read_text()
SECTION = DOC[DOC.index("### 2.7"):DOC.index("## 3.")]


def test_every_registered_preset_declares_its_deviations():
    host = build_plugin_host()
    assert sorted(DEVIATIONS) == sorted(n for n in host.names("methods") if n.startswith("mps-clip"))


@pytest.mark.parametrize("preset", sorted(DEVIATIONS))
def test_the_docs_list_every_deviation_of_a_preset(preset):
    (row,) = [line for line in SECTION.splitlines() if line.startswith(f"| `{preset}` |")]
    for deviation in DEVIATIONS[preset]:
        where = SECTION if deviation in _ALWAYS else row
        assert f"**{deviation.what}**" in where, (preset, deviation.what)


def test_randaugment_follows_the_reference_crop_and_flip():
    preprocess = T.Compose([T.Resize(32), T.CenterCrop(32), T.ToTensor()])
    steps = train_transform(preprocess, "randaugment").transforms
    assert [type(t) for t in steps[:3]] == [T.RandomResizedCrop, T.RandomHorizontalFlip, T.RandAugment]
    assert steps[0].scale == (0.5, 1.0) and (steps[2].num_ops, steps[2].magnitude) == (2, 7)
    assert steps[3] is preprocess
    assert train_transform(preprocess, "randaugment")(Image.new("RGB", (40, 40), "red")).shape == (3, 32, 32)
