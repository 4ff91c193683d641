"""Pretrain the embedded ``rsitr-tiny`` CLIP on a synthetic-rs corpus disjoint from the benchmark.

The embedded default needs a backbone that is better than chance, or comparisons between methods on it
mean nothing. No CLIP weights can be downloaded here, so rsitr-bench trains its own tiny one, reproducibly,
on a corpus generated from seed 1000 (the benchmark splits use seed 0; images are seeded by sha256 of
(corpus seed, split, index), so the corpora cannot share an image).

The exact command that produced ``rsitr_bench/clip/weights/rsitr-tiny-synthetic.safetensors``:

    HF_HUB_OFFLINE=1 python scripts/train_embedded_backbone.py --out rsitr_bench/clip/weights

Training uses only the pretraining corpus: its own held-out slice is used for the progress report, and no
benchmark split (train, val or test of seed 0) is ever read.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from rsitr_bench.clip.backbones import EMBEDDED_TAG, build_backbone
from rsitr_bench.data.images import load_rgb
from rsitr_bench.datasets.synthetic import SyntheticOptions, make_dataset
from rsitr_bench.harness.store import file_sha256
from rsitr_bench.metrics import retrieval_metrics

PRETRAIN_SEED = 1000


def encode_split(backbone, split) -> torch.Tensor:
    return torch.stack([backbone.preprocess(load_rgb(p)) for p in split.image_paths])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--images", type=int, default=4000)
    parser.add_argument("--holdout", type=int, default=300)
    parser.add_argument("--epochs", type=int, default=25)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)

    options = SyntheticOptions(n_train=args.images, n_val=args.holdout, n_test=0, seed=PRETRAIN_SEED)
    corpus = make_dataset(None, options)
    train, held = corpus.load_split("train"), corpus.load_split("val")
    backbone = build_backbone("rsitr-tiny", init_seed=args.seed)
    model, tokenizer = backbone.model.train(), backbone.tokenizer
    pixels = encode_split(backbone, train)
    tokens = tokenizer(train.captions)
    owned = [np.flatnonzero(train.caption_image == i) for i in range(train.n_images)]

    steps_per_epoch = math.ceil(train.n_images / args.batch_size)
    total = args.epochs * steps_per_epoch
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embedding" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embedding" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=args.lr, betas=(0.9, 0.98), eps=1e-6)
    warmup = max(1, total // 20)
    def schedule(step: int) -> float:  # linear warm-up, then cosine decay
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / (total - warmup)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
    start = time.time()
    for epoch in range(args.epochs):
        order = rng.permutation(train.n_images)
        losses = []
        for b in range(steps_per_epoch):
            idx = order[b * args.batch_size:(b + 1) * args.batch_size]
            caps = np.array([rng.choice(owned[i]) for i in idx])  # one caption per image: no false negatives
            img = F.normalize(model.encode_image(pixels[idx]), dim=-1)
            txt = F.normalize(model.encode_text(tokens[caps]), dim=-1)
            logits = model.logit_scale.exp().clamp(max=100) * img @ txt.T
            labels = torch.arange(len(idx))
            loss = 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            losses.append(loss.item())
        if epoch % 5 == 4 or epoch == args.epochs - 1:
            model.eval()
            with torch.no_grad():
                img = F.normalize(model.encode_image(encode_split(backbone, held)), dim=-1)
                txt = F.normalize(model.encode_text(tokenizer(held.captions)), dim=-1)
            res = retrieval_metrics((img @ txt.T).numpy(), held.caption_image)
            model.train()
            print(f"epoch {epoch + 1}/{args.epochs} loss {np.mean(losses):.3f} held-out mR {res.metrics['mR']:.2f} "
                  f"({time.time() - start:.0f} s)", flush=True)

    args.out.mkdir(parents=True, exist_ok=True)
    weights = args.out / f"rsitr-tiny-{EMBEDDED_TAG}.safetensors"
    save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, str(weights))
    meta = {"model": "rsitr-tiny", "pretrain_corpus": {"dataset": "synthetic-rs", **vars(options)},
            "args": {k: str(v) for k, v in vars(args).items()}, "sha256": file_sha256(weights),
            "train_seconds": round(time.time() - start, 1),
            "command": "HF_HUB_OFFLINE=1 python scripts/train_embedded_backbone.py --out rsitr_bench/clip/weights"}
    (args.out / f"rsitr-tiny-{EMBEDDED_TAG}.json").write_text(json.dumps(meta, indent=2) + "\n")
    print(f"saved {weights} ({weights.stat().st_size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
