"""Sanity check of the ``synthetic-rs-fine`` regime on a non-test split: do crops resolve what the global view loses?

Zero-shot, with the embedded ``rsitr-tiny`` backbone and no training, it scores the split's images as

- ``global``: the global embedding g (the whole image resized to the 64-pixel input), as ``global-clip``;
- ``+ largest``, ``+ union``, ``+ every``: MPS-CLIP's test-time fusion ``normalize(0.5·(g + r))``
  (docs/mps-clip.md §6.2), r the normalised mean of crops from the ground-truth boxes of *every* object class
  in the image: each class's largest object (``oracle-boxes`` default), the box around each class's objects
  (``instances: union``), or every object alone. These are upper bounds (perfect keywords, perfect boxes).

and prints R@1/5/10 both ways, mR and, since a family's 8 scenes share their background, text→image R@1
within each caption's own family (chance: 12.5 %). It reads only the split it is given, never test:

    HF_HUB_OFFLINE=1 python scripts/check_fine_regime.py --split val
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from rsitr_bench.clip.backbones import EMBEDDED_TAG, build_backbone
from rsitr_bench.clip.encode import encode_images, encode_texts
from rsitr_bench.data.images import load_rgb
from rsitr_bench.data.model import ObjectBox, Split
from rsitr_bench.datasets.synthetic_fine import FineOptions, make_fine_dataset
from rsitr_bench.datasets.synthetic_fine_scenes import FAMILY_SIZE
from rsitr_bench.guidance.context import Perspective
from rsitr_bench.guidance.crops import crop_perspectives
from rsitr_bench.metrics import retrieval_metrics
from rsitr_bench.perspectives.oracle import oracle_box

Box = tuple[int, int, int, int]


def per_class(instances: str) -> Callable[[list[ObjectBox]], list[Box]]:
    """The boxes ``oracle-boxes`` with ``instances`` gives when every class of the image is a keyword."""
    def boxes(objects: list[ObjectBox]) -> list[Box]:
        by_class: dict[str, list[ObjectBox]] = {}
        for obj in objects:
            by_class.setdefault(obj.label, []).append(obj)
        return [oracle_box(group, instances) for group in by_class.values()]
    return boxes


def every_object(objects: list[ObjectBox]) -> list[Box]:
    return [obj.box for obj in objects]


def fused(backbone, split: Split, g: torch.Tensor, boxes_of: Callable[[list[ObjectBox]], list[Box]]) -> torch.Tensor:
    """``normalize(0.5·(g + r))`` per image, r the normalised mean of its crops' embeddings."""
    assert split.object_boxes is not None
    out = []
    for i, path in enumerate(split.image_paths):
        crops = crop_perspectives(load_rgb(path), [Perspective("", b) for b in boxes_of(split.object_boxes[i])])
        r = F.normalize(encode_images(backbone, crops).mean(0), dim=-1)
        out.append(F.normalize(0.5 * (g[i] + r), dim=-1))
    return torch.stack(out)


def within_family_r1(sim: np.ndarray, caption_image: np.ndarray) -> float:
    """Text→image R@1 (%) when each caption ranks only the images of its own family."""
    hits = []
    for c, image in enumerate(caption_image):
        start = image - image % FAMILY_SIZE
        family = sim[start:start + FAMILY_SIZE, c]
        hits.append(start + int(np.argmax(family)) == image)
    return 100 * float(np.mean(hits))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--split", choices=("train", "val"), default="val", help="never test (default: val)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    split = make_fine_dataset(None, FineOptions()).load_split(args.split)
    backbone = build_backbone("rsitr-tiny", EMBEDDED_TAG)
    backbone.model.eval()
    texts = encode_texts(backbone, split.captions)
    g = torch.cat([encode_images(backbone, [load_rgb(p)]) for p in split.image_paths])
    galleries = {"global": g,
                 "+ largest": fused(backbone, split, g, per_class("largest")),
                 "+ union": fused(backbone, split, g, per_class("union")),
                 "+ every": fused(backbone, split, g, every_object)}
    print(f"synthetic-rs-fine {args.split}: {split.n_images} images, {split.n_captions} captions, rsitr-tiny "
          f"zero-shot")
    print(f"{'gallery':<11}{'i2t R@1':>9}{'R@5':>7}{'R@10':>7}{'t2i R@1':>9}{'R@5':>7}{'R@10':>7}{'mR':>7}"
          f"{'in-family t2i R@1':>19}")
    for name, gallery in galleries.items():
        sim = (gallery @ texts.T).numpy()
        m = retrieval_metrics(sim, split.caption_image).metrics
        row = [m[f"i2t_R@{k}"] for k in (1, 5, 10)] + [m[f"t2i_R@{k}"] for k in (1, 5, 10)] + [m["mR"]]
        print(f"{name:<11}" + "".join(f"{v:>{9 if j in (0, 3) else 7}.2f}" for j, v in enumerate(row))
              + f"{within_family_r1(sim, split.caption_image):>19.2f}")


if __name__ == "__main__":
    main()
