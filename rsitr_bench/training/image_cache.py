"""Decoded images kept on disk as uint8 arrays, so that training decodes each image once, ever.

Training revisits every image each epoch, and scoring the validation split after each epoch revisits those
too; decoding a JPEG or TIFF each time costs more than everything else the input pipeline does. Each image
is decoded once into an ``H×W×3`` uint8 array at its native resolution and saved as a ``.npy`` entry of the
content store (:class:`~rsitr_bench.harness.store.ContentStore`, namespace ``images``); later reads map it
read-only, so they cost a page-cache lookup, and DataLoader workers reading the same image share its pages
instead of each holding a copy.

Native resolution, not the backbone's input size: MPS-CLIP cuts its sub-images from the full image
(docs/mps-clip.md §1.3), and a box of a 256-px image resized to 224 px first would lose the very detail the
sub-images are for, and a random crop (augmentation) needs the full image too.

A view that is the same every time, the image resized and centre-cropped to the encoder's input (no random
augmentation: scoring, ``augment: none``, or augmentation on the device), is cached as well, as an entry of its
own (namespace ``views``): :meth:`ImageCache.view`, keyed by the image's key and a text naming the view's
settings (:meth:`ImageCache.view_key`). Reading one is then a mapped file and nothing else; resizing a 256-px
image to 224 px costs several times more than that, so without it a cached epoch would still be dominated by
the resize (benchmarks/bench_input_pipeline.py). Views are mapped copy-on-write rather than read-only, so that
``torch.from_numpy`` can wrap them without a copy and without writing to the entry.

Entries (images and views: 3-D uint8 arrays) are standard ``.npy`` files (``np.load`` reads them) whose header
is written here, byte for byte what ``np.save`` writes, so that reading one back is an ``mmap`` and a comparison
with that header (:func:`_map_entry`) rather than ``np.load(mmap_mode="r")``, whose header parsing and
``np.memmap`` construction cost several times more: a large share of decoding a 256-px TIFF, which would leave
the cache little to save (benchmarks/bench_input_pipeline.py measures both).

The key is the sha256 of the image file's bytes plus the decode settings (:data:`DECODE_VERSION`, the
Pillow version, whose decoders may change a pixel between releases), so an image whose bytes change misses
the cache whatever its name, and a cache directory can be shared by every dataset, split and run. The file
digest is memoised per process by (path, size, mtime) (:func:`~rsitr_bench.harness.store.image_digest`).

Entries are written to a temporary sibling and renamed into place, so concurrent creators (ranks, workers,
parallel runs) each write a complete file and the last rename wins with identical bytes. Like the store's
other self-checking entries they are not fsynced (a cold pass writes thousands of them): an entry torn by a
crash is shorter than its header says, or has none, and is decoded again and replaced.
"""

from __future__ import annotations

import mmap
import re
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
import PIL
from PIL import Image

from rsitr_bench.data.images import load_rgb, missing_image, unreadable_image
from rsitr_bench.data.model import Split
from rsitr_bench.harness.store import ContentStore, digest, image_digest

#: Bumped whenever what an entry holds changes (dtype, layout, colour conversion).
DECODE_VERSION = 1
NAMESPACE = "images"
#: Bumped whenever how a view entry is keyed or laid out changes.
VIEW_VERSION = 1
VIEW_NAMESPACE = "views"


class ImageCache:
    """Decoded RGB images as read-only, memory-mapped ``H×W×3`` uint8 arrays, and views derived from them
    (module docstring).

    Arguments:
        root: the content-addressed cache directory (the run context's ``cache_dir``).

    ``counters`` counts ``image_cache_hits`` and ``image_cache_misses`` (a miss decodes), and
    ``view_cache_hits`` and ``view_cache_misses`` (a miss computes the view), in this process.
    """

    def __init__(self, root: Path):
        self.files = ContentStore(Path(root), NAMESPACE, ".npy", durable=False)
        self.views = ContentStore(Path(root), VIEW_NAMESPACE, ".npy", durable=False)
        self.counters: Counter = Counter()

    def key(self, path: Path, record: str = "") -> str:
        """The entry's key: the file's content digest plus the decode settings."""
        try:
            content = image_digest(Path(path))
        except FileNotFoundError:
            raise missing_image(path, record) from None
        except OSError as exc:
            raise unreadable_image(path, record, exc) from None
        return digest("decoded-rgb-uint8", DECODE_VERSION, PIL.__version__, content)

    def array(self, path: Path, record: str = "", key: str | None = None) -> np.ndarray:
        """The image at ``path`` as an ``H×W×3`` uint8 array: mapped from the cache, or decoded and stored.

        Arguments:
            record: what refers to the image, for the error a missing or broken file raises.
            key: :meth:`key` of the file, when the caller already has it.
        """
        key = key or self.key(path, record)
        pixels = _stored(self.files, key, lambda: np.asarray(load_rgb(Path(path), record), dtype=np.uint8),
                         self.counters, "image", copy_on_write=False)
        pixels.flags.writeable = False  # a fresh decode is as read-only as a mapped entry
        return pixels

    @staticmethod
    def view_key(image_key: str, settings: str) -> str:
        """The key of a view of an image: the image's :meth:`key` and ``settings``, a stable text naming
        everything the view depends on (its caller's job), so a view is invalidated with the image's bytes
        or with its settings."""
        return digest("image-view-uint8", VIEW_VERSION, image_key, settings)

    def view(self, key: str, make: Callable[[], np.ndarray]) -> np.ndarray:
        """A deterministic function of an image (e.g. its resized, centre-cropped encoder input) as a 3-D uint8
        array, under :meth:`view_key`: mapped from the cache, or ``make()`` and stored.

        The array is mapped copy-on-write: writable, as ``torch.from_numpy`` wants, without ever writing to the
        entry.
        """
        return _stored(self.views, key, make, self.counters, "view", copy_on_write=True)


def _stored(files: ContentStore, key: str, make: Callable[[], np.ndarray], counters: Counter, label: str,
            copy_on_write: bool) -> np.ndarray:
    """Entry ``key`` of ``files``, mapped; on a miss, ``make()``'s 3-D uint8 array, written as the entry."""
    cached = _map_entry(files.path(key), copy_on_write)
    if cached is not None:
        counters[f"{label}_cache_hits"] += 1
        return cached
    counters[f"{label}_cache_misses"] += 1
    pixels = np.ascontiguousarray(make(), dtype=np.uint8)
    files.write(key, _npy_header(pixels.shape) + pixels.tobytes())
    return pixels


_SHAPE = re.compile(rb"\{'descr': '\|u1', 'fortran_order': False, 'shape': \((\d+), (\d+), (\d+)\), \}")


def _npy_header(shape: tuple[int, ...]) -> bytes:
    """The ``.npy`` (format 1.0) header of a 3-D uint8 array, padded to 64 bytes as numpy does."""
    if len(shape) != 3:
        raise ValueError(f"cache entries are 3-D uint8 arrays, not of shape {shape}")
    text = f"{{'descr': '|u1', 'fortran_order': False, 'shape': {tuple(map(int, shape))}, }}"
    pad = -(10 + len(text) + 1) % 64
    header = (text + " " * pad + "\n").encode("latin1")
    return b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header


def _map_entry(path: Path, copy_on_write: bool = False) -> np.ndarray | None:
    """The array an entry written by :func:`_stored` holds, memory-mapped (read-only, or private
    copy-on-write); None when the entry is absent, empty, torn or not one of ours."""
    try:
        with open(path, "rb") as fh:
            mapped = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_COPY if copy_on_write else mmap.ACCESS_READ)
    except (OSError, ValueError):  # absent, or empty (mmap refuses a zero-length file)
        return None
    found = _SHAPE.search(mapped, 10, 128)
    if found is not None:
        shape = tuple(int(n) for n in found.groups())
        header = _npy_header(shape)
        if mapped[:len(header)] == header and len(mapped) == len(header) + shape[0] * shape[1] * shape[2]:
            return np.frombuffer(mapped, dtype=np.uint8, offset=len(header)).reshape(shape)
    mapped.close()
    return None


class ImageBank:
    """The images of one split through an :class:`ImageCache`, by index.

    Holds no pixels: each access maps the cached entry (microseconds), so a bank over 30 000 images costs
    nothing, and one pickled into DataLoader workers carries only the split and the cache's location.
    File digests and entry keys are computed once per bank and process.
    """

    def __init__(self, split: Split, cache: ImageCache):
        self.split = split
        self.cache = cache
        self._keys: dict[int, str] = {}
        self._view_keys: dict[tuple[int, str], str] = {}

    def __len__(self) -> int:
        return self.split.n_images

    def array(self, index: int) -> np.ndarray:
        """Image ``index`` as a read-only ``H×W×3`` uint8 array."""
        return self.cache.array(Path(self.split.image_paths[index]), self._record(index), self._key(index))

    def view(self, index: int, settings: str, make: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
        """``make(array(index))``, a 3-D uint8 array, through the view cache (:meth:`ImageCache.view`).

        Arguments:
            settings: a stable text naming everything ``make`` depends on besides the image.
        """
        key = self._view_keys.get((index, settings))
        if key is None:
            key = self._view_keys[index, settings] = self.cache.view_key(self._key(index), settings)
        return self.cache.view(key, lambda: make(self.array(index)))

    def __getitem__(self, index: int) -> Image.Image:
        """Image ``index`` as an RGB PIL image (a copy; the PIL transforms need one)."""
        return Image.fromarray(self.array(index))

    def _key(self, index: int) -> str:
        key = self._keys.get(index)
        if key is None:
            key = self._keys[index] = self.cache.key(Path(self.split.image_paths[index]), self._record(index))
        return key

    def _record(self, index: int) -> str:
        return f"{self.split.dataset} {self.split.name} image {index}"
