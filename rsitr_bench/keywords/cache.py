"""Content-addressed, self-checking stores for keywords and perspectives.

Every entry is one small JSON file, written atomically, that carries the sha256 of its own payload. A
truncated or altered entry fails the check, is counted as corrupt, deleted and recomputed: it is never
trusted and never replaced by another item's result. One file per entry (rather than a database) is what
lets several processes or machines fill the same cache directory in parallel, shard by shard.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections import Counter
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Any

from rsitr_bench.atomic import write_text_atomic
from rsitr_bench.backbones import file_sha256


def digest(*parts: object) -> str:
    """sha256 of a canonical JSON encoding of ``parts``: the key of a cache entry."""
    text = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str, ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class CheckedStore:
    """JSON payloads under ``<root>/<namespace>/<key[:2]>/<key>.json``, verified on every read.

    Arguments:
        counters: receives ``<label>_cache_hits``, ``<label>_cache_misses`` and ``corrupt_cache_entries``.
    """

    def __init__(self, root: Path, namespace: str, label: str, counters: Counter | None = None):
        self.root = Path(root) / namespace
        self.label = label
        self.counters = counters if counters is not None else Counter()

    def path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.json"

    def get(self, key: str, valid: Callable[[Any], bool] | None = None) -> Any | None:
        """The payload stored under ``key``, or None when absent or corrupt (a corrupt file is removed).

        Arguments:
            valid: an extra check of the payload (e.g. that it names the expected image); a payload that
                fails it is treated exactly like one whose checksum fails.
        """
        path = self.path(key)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            self.counters[f"{self.label}_cache_misses"] += 1
            return None
        try:
            entry = json.loads(text)
            ok = isinstance(entry, dict) and entry.get("sha256") == digest(entry.get("payload"))
            ok = ok and (valid is None or valid(entry["payload"]))
        except (ValueError, TypeError, KeyError, UnicodeDecodeError):
            ok = False
        if not ok:
            self.counters["corrupt_cache_entries"] += 1
            self.counters[f"{self.label}_cache_misses"] += 1
            path.unlink(missing_ok=True)
            return None
        self.counters[f"{self.label}_cache_hits"] += 1
        return entry["payload"]

    def put(self, key: str, payload: Any) -> None:
        entry = {"sha256": digest(payload), "payload": payload}
        _replace_unsynced(self.path(key), json.dumps(entry, separators=(",", ":"), ensure_ascii=False))


def _replace_unsynced(path: Path, text: str) -> None:
    """Write a temporary sibling and rename it into place, without fsync.

    Readers never see a half-written entry (the rename is atomic). A crash can still leave a torn file
    behind the rename, but every entry carries its own checksum, so that file is detected and recomputed:
    an fsync per entry (two thirds of a cold run's time on small images) would buy nothing.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@lru_cache(maxsize=1 << 16)
def _file_digest(path: str, size: int, mtime_ns: int) -> str:
    return file_sha256(Path(path))


def image_digest(path: Path) -> str:
    """sha256 of an image file's bytes, memoised per (path, size, mtime) within the process."""
    stat = os.stat(path)
    return _file_digest(str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns)


def weights_digest(path: Path, cache_dir: Path) -> str:
    """sha256 of a (possibly multi-GB) weight file, remembered across processes by (path, size, mtime).

    Model versions are part of every perspective key; hashing a 2.5 GB SAM checkpoint on each run would cost
    seconds for nothing, so the digest is kept next to the cache.
    """
    stat = os.stat(path)
    name = digest(str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns)
    memo = Path(cache_dir) / "digests" / f"{name}.txt"
    try:
        known = memo.read_text().strip()
        if len(known) == 64:
            return known
    except OSError:
        pass
    value = file_sha256(Path(path))
    write_text_atomic(memo, value)
    return value
