"""Which splits a run loads, and the rules about them: one place, shared by the runner and the reports.

The reports rebuild a recorded run's test split (for per-scene-class recall) with exactly the rules the runner
used to load it, without importing the runner and everything a run needs.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from rsitr_bench.data.model import Split
from rsitr_bench.errors import DataError, UserError
from rsitr_bench.harness.config import RunConfig
from rsitr_bench.harness.plugins import PluginHost


def load_splits(config: RunConfig, host: PluginHost, trainable: bool, target: str = "test") -> dict[str, Split]:
    """Load the splits a run needs, and nothing more.

    A zero-shot method needs only the scored split (test files alone suffice); a trainable method also
    needs train and val. A validation-only run (``target="val"``, used by sweeps) never loads test.
    """
    spec = host.get("datasets", config.dataset).spec
    root = Path(config.data.root).expanduser() if config.data.root else None
    dataset = spec.factory(root, config.dataset_options)
    defaults = dataset.default_splits()
    roles = ["train", "val"] if trainable else []
    if target not in roles:
        roles.append(target)
    names = {role: getattr(config.data, f"{role}_split") or defaults.get(role) for role in roles}
    if "test" in names and names["test"] in (names.get("train"), names.get("val")):
        raise UserError(f"The test split {names['test']!r} is also used for training or validation; "
                        f"the test split is sealed. Choose other data.train_split / data.val_split.")
    if names.get("train") is not None and names.get("train") == names.get("val"):
        raise UserError(f"The split {names['train']!r} is used for both training and validation; model "
                        f"selection needs held-out data. Set data.val_split to another split.")
    splits = {}
    for role, name in names.items():
        if not name:
            raise DataError(f"Dataset {config.dataset!r} declares no {role} split; set data.{role}_split.")
        splits[role] = dataset.load_split(name)
    if config.eval.limit is not None:
        splits[target] = limit_split(splits[target], config.eval.limit)
    return splits


#: The fields of :class:`Split` that hold one entry per image, in image order.
PER_IMAGE_FIELDS = ("image_names", "image_paths", "image_labels", "object_boxes")


def limit_split(split: Split, n_images: int) -> Split:
    """The first ``n_images`` images of ``split`` and their captions (``eval.limit``, ``--limit``), for smoke tests.

    The result is named ``<split>[:N]`` and its fingerprint is its own content's, so a limited run is never
    mistaken for, or grouped with, a run on the whole split; ``annotations["limited_from"]`` keeps the full
    split's size for the result's non-comparable stamp. A limit not below the split's size changes nothing.
    Per-image fields are cut; annotations stay valid as they are, since the kept images keep their indices.
    """
    if n_images >= split.n_images:
        return split
    keep = np.flatnonzero(split.caption_image < n_images)
    per_image = {name: getattr(split, name) for name in PER_IMAGE_FIELDS}
    per_image = {name: None if value is None else value[:n_images] for name, value in per_image.items()}
    return dataclasses.replace(
        split, name=f"{split.name}[:{n_images}]", captions=[split.captions[j] for j in keep],
        caption_image=split.caption_image[keep], **per_image,
        annotations={**split.annotations, "limited_from": {"split": split.name, "images": split.n_images,
                                                           "captions": split.n_captions}})
