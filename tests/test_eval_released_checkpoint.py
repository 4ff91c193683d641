"""The released-checkpoint reproduction end to end: `rsitr-bench eval --preset mps-clip-released-rsitmd`.

A reference-layout checkpoint, regenerated from the MPS-CLIP reference fixture in the released structure, is
served under the released file's hub name by the local test hub; the preset downloads it through the catalog,
loads it strictly and scores a tiny RSITMD-layout folder twice (as published, leak-free). The model the CLI
built must reproduce the reference goldens. Skips without the fixture (it exists only beside the development
checkout).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from rsitr_bench.cli.main import main
from rsitr_bench.harness.paths import registry_dir
from rsitr_bench.harness.registry import Registry
from rsitr_bench.methods.mps_clip.method import MpsClip
from rsitr_bench.methods.mps_clip.packing import PackedPerspectives, encode_packed, fuse_for_scoring
from tests.fixtures.mpsclip_reference import reference_fixture_dir, write_reference_checkpoint

REPO, FILE = "lcrucial1f/MPS-CLIP-Models", "MPS-CLIP_ViT-B-32_RSITMD_rmean48.86.pth"


def _tiny_rsitmd(root: Path) -> Path:
    """Two test images in the reference's layout: finetune json with nouns, black-background sub-images."""
    (root / "images").mkdir(parents=True)
    (root / "finetune").mkdir()
    records = []
    for name, colour, nouns in (("airport_1", (120, 120, 130), ["plane", "runway"]),
                                ("beach_2", (200, 190, 120), ["sea"])):
        Image.new("RGB", (256, 256), colour).save(root / "images" / f"{name}.tif")
        records.append({"image": f"test/{name}.tif", "nouns": nouns,
                        "caption": [f"a {n} in the {name.split('_')[0]} scene" for n in nouns * 5][:5]})
        for noun in nouns:
            sub = Image.new("RGB", (256, 256), (0, 0, 0))
            sub.paste(Image.new("RGB", (64, 64), colour), (32, 32))
            (root / "subimages" / "test" / name).mkdir(parents=True, exist_ok=True)
            sub.save(root / "subimages" / "test" / name / f"{noun}_blackbg.png")
    (root / "finetune" / "rsitmd_test1.json").write_text(json.dumps(records))
    return root


@pytest.mark.slow
def test_released_checkpoint_preset_downloads_loads_and_matches_the_goldens(hf_hub, tmp_path, monkeypatch, capsys):
    fixture = reference_fixture_dir()
    if fixture is None:
        pytest.skip("the MPS-CLIP reference fixture is not beside this checkout (development checkout only)")
    checkpoint = write_reference_checkpoint("pre-restore", tmp_path / "released.pth", "geo")
    digest = hf_hub.add_file(REPO, FILE, checkpoint)
    data = _tiny_rsitmd(tmp_path / "rsitmd")

    built: list[MpsClip] = []
    score = MpsClip.score

    def recording_score(self, split, ctx):
        built.append(self)
        return score(self, split, ctx)

    monkeypatch.setattr(MpsClip, "score", recording_score)
    assert main(["eval", "--preset", "mps-clip-released-rsitmd", "--data-root", str(data), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "as published" in out and "compliant" in out and "48.86" in out

    registry = Registry(registry_dir())
    results = {row.tag_dict["row"]: json.loads((registry.run_dir(row.id) / "metrics.json").read_text())
               for row in registry.list()}
    published = next(v for k, v in results.items() if k.startswith("as published"))
    compliant = next(v for k, v in results.items() if k.startswith("compliant"))
    assert published["leakage_audit"]["status"] == "fail (as published)"
    assert not published["compliance"]["compliant"]
    assert compliant["leakage_audit"]["status"] == "pass" and compliant["compliance"]["compliant"]
    for result in (published, compliant):
        assert result["evaluation_only"] and result["weights"]["sha256"] == digest
        assert result["weights"]["source"] == f"hf://{REPO}/{FILE}@{hf_hub.commit(REPO)}"
        assert result["weights"]["reference_checkpoint"]["layout"] == "pre-restore"

    # The network the CLI built from the downloaded file reproduces the reference model's outputs.
    golden = load_file(str(fixture / "golden-pre-restore.safetensors"))
    net = built[0].network("cpu").eval()
    images, subimages, counts = golden["input.images"].float(), golden["input.subimages"].float(), \
        golden["input.sub_counts"]
    packed = PackedPerspectives(subimages, torch.repeat_interleave(torch.arange(3), counts), counts)
    with torch.no_grad():
        g, r, has = encode_packed(net.clip.encode_image, images, packed)
        fused = fuse_for_scoring(g, r, has)
        t = torch.nn.functional.normalize(net.clip.encode_text(golden["input.tokens"]), dim=-1)
    for name, value in {"g": g, "r": r, "fused": fused, "t": t, "sim": fused @ t.T}.items():
        torch.testing.assert_close(value, golden[f"quickgelu.{name}"], atol=1e-4, rtol=0, msg=name)
