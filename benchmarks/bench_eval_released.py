"""Wall time of a cached evaluation of the released MPS-CLIP checkpoint on RSITMD-size data.

RSITMD's test split is 452 images (256 px TIFFs) and 2,260 captions; the released checkpoint is ViT-B-32 in the
reference's pre-restore layout. This benchmark builds that shape with placeholder images and three keyword
sub-images per image (the published, precomputed protocol), writes a reference-layout checkpoint regenerated
from the MPS-CLIP reference fixture (random weights cost the same as real ones), and times one
``rsitr-bench eval`` of the as-published row: checkpoint already on disk ("cached"), every image, sub-image and
caption encoded, metrics computed and the run recorded. It skips where the fixture is absent.

Run (about 5 minutes on a 2-core CPU, one round)::

    HF_HUB_OFFLINE=1 .venv/bin/python -m pytest benchmarks/bench_eval_released.py --benchmark-only -s

``RSITR_BENCH_EVAL_IMAGES`` shrinks the split for a quick look (default 452).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from PIL import Image

from rsitr_bench.cli.main import main
from rsitr_bench.harness.hub import file_digest
from tests.fixtures.mpsclip_reference import reference_fixture_dir, write_reference_checkpoint

N_IMAGES = int(os.environ.get("RSITR_BENCH_EVAL_IMAGES", "452"))
NOUNS = ("plane", "runway", "building")


def _placeholder_rsitmd(root: Path, n_images: int) -> Path:
    """``n_images`` 256-px TIFFs with 5 captions each and 3 black-background sub-images, reference layout."""
    (root / "images").mkdir(parents=True)
    (root / "finetune").mkdir()
    records = []
    for i in range(n_images):
        name = f"scene_{i}"
        colour = (37 * i % 256, 91 * i % 256, 53 * i % 256)
        Image.new("RGB", (256, 256), colour).save(root / "images" / f"{name}.tif")
        records.append({"image": f"test/{name}.tif", "nouns": list(NOUNS),
                        "caption": [f"scene {i} with a {noun} number {k}" for k, noun in enumerate(NOUNS * 2)][:5]})
        folder = root / "subimages" / "test" / name
        folder.mkdir(parents=True)
        for k, noun in enumerate(NOUNS):
            sub = Image.new("RGB", (256, 256), (0, 0, 0))
            sub.paste(Image.new("RGB", (96, 96), colour), (32 * k, 40))
            sub.save(folder / f"{noun}_blackbg.png")
    (root / "finetune" / "rsitmd_test1.json").write_text(json.dumps(records))
    return root


@pytest.mark.benchmark(group="eval-released")
def test_cached_eval_of_released_checkpoint_rsitmd_size(benchmark, tmp_path, monkeypatch):
    if reference_fixture_dir() is None:
        pytest.skip("the MPS-CLIP reference fixture is not beside this checkout (development checkout only)")
    monkeypatch.setenv("RSITR_BENCH_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("RSITR_BENCH_CACHE", str(tmp_path / "cache"))
    checkpoint = write_reference_checkpoint("pre-restore", tmp_path / "released.pth", "geo")
    data = _placeholder_rsitmd(tmp_path / "rsitmd", N_IMAGES)
    argv = ["eval", "--method", "mps-clip-pre-restore", "--checkpoint", str(checkpoint), "--dataset", "rsitmd",
            "--data-root", str(data), "--no-progress", "--set", "method.perspectives=precomputed",
            "--set", "method.crop_mode=masked", "--set", "method.max_perspectives=64",
            "--set", "method.leaky_gallery=true"]
    file_digest(checkpoint)  # "cached": a fetched file's sha256 is computed once and remembered

    assert benchmark.pedantic(main, args=(argv,), rounds=1, iterations=1) == 0
    benchmark.extra_info.update(images=N_IMAGES, captions=5 * N_IMAGES, sub_images=len(NOUNS) * N_IMAGES,
                                torch_threads=__import__("torch").get_num_threads())
