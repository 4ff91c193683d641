"""The per-run guidance service: keywords and perspectives for a split, behind the leakage guard.

A method asks ``ctx.guidance.perspectives(split, keywords=..., generator=...)``. The service, not the
method, decides the split's role from object identity with the run's ``roles``: training items are
*queries* (their captions are the training signal), val and test items are *gallery* items whose captions
are sealed by :class:`~rsitr_bench.guidance.ItemContext`. A provider that asks for sealed captions is
refused, the refusal is recorded in the run's :class:`~rsitr_bench.guidance.LeakageAudit` (stamped
``fail``) and the item simply gets no keywords: the run goes on, visibly non-compliant.

Everything the plugins compute is cached by content (see :mod:`rsitr_bench.harness.store`), so a second
run, a resumed ``prepare`` or another shard reuses it. Bad input never crashes a run or borrows another
item's result; each case is counted in :attr:`GuidanceResult.stats`.
"""

from __future__ import annotations

import dataclasses
import logging
from collections import Counter
from collections.abc import Callable, Hashable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from rsitr_bench.api import GuidanceEnv, GuidanceResult, PerspectiveGenerator
from rsitr_bench.clip.backbones import Backbone
from rsitr_bench.data.model import Split
from rsitr_bench.errors import DataError
from rsitr_bench.guidance.context import (
    CaptionAccessRefused,
    ItemContext,
    ItemRole,
    LeakageAudit,
    Perspective,
    SplitRole,
    item_contexts,
)
from rsitr_bench.guidance.crops import crop_perspectives
from rsitr_bench.guidance.lexicon import normalize_keyword
from rsitr_bench.guidance.perspective_cache import PerspectiveCache
from rsitr_bench.harness.config import NoOptions, build_section
from rsitr_bench.harness.store import digest, image_digest

__all__ = ["GuidanceService", "STAT_KEYS", "crop_perspectives"]

#: The service's own counters, in every :class:`GuidanceResult`. A plugin's counters are declared by its spec
#: (``counters``) and reported, zero or not, by the results that used it; undeclared ones only when non-zero.
STAT_KEYS: tuple[str, ...] = (
    "items", "empty_captions", "refused_caption_reads", "no_keywords", "nothing_detected",
    "keywords_unmatched", "invalid_perspectives", "corrupt_cache_entries", "keyword_cache_hits",
    "keyword_cache_misses", "perspective_cache_hits", "perspective_cache_misses", "generator_calls",
)


def _memoised(build: Callable[[], Backbone]) -> Callable[[], Backbone]:
    built: list[Backbone] = []

    def get() -> Backbone:
        if not built:
            built.append(build())
        return built[0]

    return get


class GuidanceService:
    """Computes keywords and perspectives for the splits of one run.

    Arguments:
        host: the plugin host (keyword providers and perspective generators are looked up by name).
        roles: the run's splits by role, ``{"train": ..., "val": ..., "test": ...}`` (any may be absent).
        audit: the run's leakage audit; its :meth:`~rsitr_bench.guidance.LeakageAudit.stamp` is the
            result's ``leakage_audit`` entry.
        cache_dir: the shared cache directory.
        progress: whether to draw progress bars.

    Attributes:
        counters: the run's totals of every :attr:`GuidanceResult.stats` counter, over all calls.
        non_deployable: names of the generators used that declare ``deployable=False`` (oracles); the runner
            stamps a run that used any as non-compliant.
    """

    def __init__(self, host: Any, roles: dict[str, Split], audit: LeakageAudit, cache_dir: Path,
                 device: str = "cpu", log: logging.Logger | None = None, progress: bool = True):
        unknown = set(roles) - {"train", "val", "test"}
        if unknown:
            raise ValueError(f"roles has unknown keys {sorted(unknown)}; expected train, val and test")
        self.host = host
        self.roles = dict(roles)
        self.audit = audit
        self.cache_dir = Path(cache_dir)
        self.device = device
        self.log = log or logging.getLogger("rsitr_bench.guidance.context")
        self.progress = progress
        self.counters: Counter = Counter()
        self.non_deployable: set[str] = set()
        self._envs: dict[Any, tuple[Callable[[], Backbone], GuidanceEnv]] = {}
        self._plugins: dict[tuple, Any] = {}

    def role_of(self, split: Split) -> tuple[SplitRole, ItemRole]:
        """The split's role, by identity: val/test (gallery) wins should the same object fill two roles."""
        for name in ("test", "val", "train"):
            if self.roles.get(name) is split:
                return name, ("query" if name == "train" else "gallery")
        raise ValueError(f"split {split.dataset}/{split.name} is none of this run's train/val/test splits; "
                         f"the guidance service only serves the run's own split objects")

    def perspectives(self, split: Split, *, keywords: str, generator: str, backbone: Callable[[], Backbone],
                     keyword_options: dict | None = None, generator_options: dict | None = None,
                     max_per_image: int | None = 4, indices: Sequence[int] | None = None,
                     with_masks: bool = True) -> GuidanceResult:
        """Keywords and perspectives for every image of ``split`` (or the image ``indices`` given).

        Arguments:
            keywords, generator: registered keyword provider and perspective generator names.
            backbone: builds the method's backbone; called at most once, and only if a plugin needs it.
            keyword_options, generator_options: plugin options, validated against the plugin's declaration.
            max_per_image: keywords (and so perspectives) kept per image, in the provider's order;
                ``None`` keeps them all.
            with_masks: keep the perspectives' masks in the result; ``False`` drops them (crop-mode methods
                need boxes only; the masks stay cached).
        """
        if max_per_image is not None and max_per_image < 1:
            raise ValueError(f"max_per_image must be >= 1, got {max_per_image}")
        split_role, role = self.role_of(split)
        env = self._env(backbone)
        before = Counter(env.counters)
        provider, kw_options, kw_spec = self._plugin("keywords", keywords, keyword_options, env)
        gen, gen_options, gen_spec = self._plugin("perspectives", generator, generator_options, env)
        uses_keywords = gen_spec.keyword_guided
        # A generator whose output derives from each item's own captions (``precomputed``: the published
        # sub-images) declares it; its val/test gallery items are recorded as leaked, from the cache or not,
        # and its cache entries are keyed by the item's name too (two images with equal pixels have other nouns).
        own_captions = gen_spec.derived_from_own_captions
        # An oracle (``deployable=False``) alone gets contexts that carry the items' ground-truth boxes; its cache
        # entries are keyed by those boxes too, since they, not the pixels, decide its output.
        oracle = not gen_spec.deployable
        if oracle and split.object_boxes is None:
            raise DataError(f"Perspective generator {generator!r} reads ground-truth object boxes, and dataset "
                            f"{split.dataset!r} (split {split.name}) declares none. Use it on a dataset that has "
                            f"them (synthetic-rs), or choose a deployable generator (clip-saliency, samgeo).")
        if oracle:
            self.non_deployable.add(generator)
        gen_identity = gen.identity
        cache = PerspectiveCache(self.cache_dir, env.counters)

        contexts = item_contexts(split, split_role, role, self.audit)
        gen_contexts = item_contexts(split, split_role, role, self.audit, ground_truth=True) if oracle else contexts
        chosen = list(range(split.n_images)) if indices is None else [int(i) for i in indices]
        all_keywords: list[list[str]] = []
        all_perspectives: list[list[Perspective]] = []
        refused = 0
        bar = tqdm(chosen, desc=f"perspectives {split.name} ({keywords} → {generator})", unit="img",
                   disable=not self.progress, leave=False)
        for index in bar:
            item = contexts[index]
            env.counters["items"] += 1
            if own_captions and not item.exposes_captions:
                self.audit.record(item.where, True, True)
            try:
                raw = provider.keywords(item)
            except CaptionAccessRefused as exc:
                raw = []
                env.counters["refused_caption_reads"] += 1
                if not refused:
                    self.log.warning("%s The run will be stamped leakage_audit: fail.", exc)
                refused += 1
            named = (normalize_keyword(k) for k in raw or [] if isinstance(k, str))
            kws = list(dict.fromkeys(k for k in named if k))[:max_per_image]
            if not kws:
                env.counters["no_keywords"] += 1
            found: list[Perspective] = []
            if kws or not uses_keywords:
                identity = digest(gen_identity, item.image_name) if own_captions else gen_identity
                if oracle:
                    identity = digest(identity, [(o.label, list(o.box)) for o in split.object_boxes[index]])
                found = self._perspectives_of(gen_contexts[index], kws if uses_keywords else [], gen, identity,
                                              cache, env.counters, max_per_image)
            if not with_masks:
                found = [dataclasses.replace(p, mask=None) for p in found]
            all_keywords.append(kws)
            all_perspectives.append(found)

        stats = {key: 0 for key in (*STAT_KEYS, *kw_spec.counters, *gen_spec.counters)}
        stats.update({k: v - before.get(k, 0) for k, v in env.counters.items() if v - before.get(k, 0)})
        self.counters.update(stats)
        config = {"keywords": {"name": keywords, **dataclasses.asdict(kw_options)},
                  "perspectives": {"name": generator, **dataclasses.asdict(gen_options)},
                  "max_per_image": max_per_image, "keyword_guided": uses_keywords}
        return GuidanceResult(split.name, split_role, role, chosen, all_keywords, all_perspectives, stats,
                              config)

    # ------------------------------------------------------------------------------------------ internals

    def _env(self, backbone: Callable[[], Backbone]) -> GuidanceEnv:
        """One environment (one memoised backbone, one set of loaded plugins) per backbone callable.

        Callables are matched by equality where they are hashable, so ``self.backbone`` (a new bound-method
        object at every access) finds the environment, and the models, of the previous call.
        """
        key = backbone if isinstance(backbone, Hashable) else id(backbone)
        if key not in self._envs:
            train = self.roles.get("train")
            env = GuidanceEnv(backbone=_memoised(backbone),
                              train_captions=list(train.captions) if train is not None else [],
                              cache_dir=self.cache_dir, device=self.device, log=self.log)
            self._envs[key] = (backbone, env)  # holding the callable keeps an id key unique
        return self._envs[key][1]

    def _plugin(self, kind: str, name: str, values: dict | None, env: GuidanceEnv) -> tuple[Any, Any, Any]:
        """Build (once per run) a provider or generator from its validated options; also return its spec."""
        spec = self.host.get(kind, name).spec
        options = build_section(spec.options or NoOptions, values, kind)
        key = (kind, name, digest(dataclasses.asdict(options)), id(env))
        if key not in self._plugins:
            self._plugins[key] = spec.factory(options, env)
        return self._plugins[key], options, spec

    def _perspectives_of(self, item: ItemContext, kws: list[str], gen: PerspectiveGenerator, gen_identity: str,
                         cache: PerspectiveCache, counters: Counter, cap: int | None) -> list[Perspective]:
        image_hash = image_digest(item.image_path)
        with Image.open(item.image_path) as img:
            size = img.size
        cached = cache.get(image_hash, kws, gen_identity, size)
        if cached is not None:
            return cached
        counters["generator_calls"] += 1
        found = _sanitize(gen.generate(item, list(kws)), kws, size, bool(kws), counters)[:cap]
        if kws and not found:
            counters["nothing_detected"] += 1
        counters["keywords_unmatched"] += len(set(kws) - {p.keyword for p in found})
        cache.put(image_hash, kws, gen_identity, size, found)
        return found


def _sanitize(found: Sequence[Any], kws: list[str], size: tuple[int, int], keyed: bool,
              counters: Counter) -> list[Perspective]:
    """Keep well-formed perspectives of this image only: known keyword, box inside, mask of its size."""
    width, height = size
    kept: list[Perspective] = []
    seen: set[str] = set()
    for p in found or []:
        ok = isinstance(p, Perspective) and (not keyed or (p.keyword in kws and p.keyword not in seen))
        if ok:
            x0, y0, x1, y1 = (int(round(v)) for v in p.box)
            box = (max(0, x0), max(0, y0), min(width, x1), min(height, y1))
            mask = None if p.mask is None else np.asarray(p.mask).astype(bool)
            ok = box[2] > box[0] and box[3] > box[1] and (mask is None or mask.shape == (height, width))
        if not ok:
            counters["invalid_perspectives"] += 1
            continue
        seen.add(p.keyword)
        kept.append(Perspective(p.keyword, box, float(p.score), mask))
    return kept
