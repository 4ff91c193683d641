"""The content-addressed cache: one digest function, one on-disk layout, one rule for a bad entry.

Every cache of the harness (CLIP features, keywords, perspectives) keys its entries by a digest of what they
were computed from, so a rerun, a resumed ``prepare`` or another shard finds them whatever the run or split
is called. Entries live under ``<cache>/<namespace>/<key[:2]>/<key><suffix>``, one file each (rather than a
database), which lets several processes or machines fill one cache directory in parallel. An entry that
cannot be read back is deleted and recomputed: never trusted, never replaced by another item's result.

Two JSON encodings feed the digest, one per store, because the keys already on users' disks must keep their
bytes: the feature store has always hashed Python's default ``json.dumps`` text (:data:`SPACED`), the
keyword and perspective stores the compact UTF-8 text (:data:`COMPACT`). Changing either would silently
orphan every cached entry, so each store names its encoding and a test pins both.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from rsitr_bench.harness.atomic import write_bytes_atomic, write_text_atomic


@dataclass(frozen=True)
class JsonEncoding:
    """How :func:`digest` turns its parts into text (keys are always sorted, unknown types ``str()``-ed)."""

    separators: tuple[str, str]
    ensure_ascii: bool


#: Keyword and perspective stores, and the weight-digest memo: compact separators, UTF-8 text.
COMPACT = JsonEncoding(separators=(",", ":"), ensure_ascii=False)
#: The feature store: ``json.dumps``'s defaults (``", "``, ``": "``, ASCII escapes).
SPACED = JsonEncoding(separators=(", ", ": "), ensure_ascii=True)


def digest(*parts: object, encoding: JsonEncoding = COMPACT) -> str:
    """sha256 of a canonical JSON encoding of ``parts``: the key of a cache entry."""
    text = json.dumps(parts, sort_keys=True, separators=encoding.separators, default=str,
                      ensure_ascii=encoding.ensure_ascii)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    """sha256 of a file's bytes, read in chunks (weight files can be gigabytes)."""
    sha = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            sha.update(block)
    return sha.hexdigest()


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


class ContentStore:
    """Raw entries under ``<root>/<namespace>/<key[:2]>/<key><suffix>``, replaced atomically.

    Arguments:
        durable: fsync each entry before the rename. Worth it for large, unchecked payloads (feature
            arrays); a store whose entries carry their own checksum (:class:`CheckedStore`) skips it, since
            a torn entry is detected on read anyway and an fsync per small entry would dominate a cold run.
    """

    def __init__(self, root: Path, namespace: str, suffix: str, durable: bool):
        self.root = Path(root) / namespace
        self.suffix = suffix
        self.durable = durable

    def path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}{self.suffix}"

    def read(self, key: str) -> bytes | None:
        """The entry's bytes, or None when there is none."""
        try:
            return self.path(key).read_bytes()
        except FileNotFoundError:
            return None

    def discard(self, key: str) -> None:
        """Delete an entry that failed its reader's check, so it is recomputed."""
        self.path(key).unlink(missing_ok=True)

    def write(self, key: str, data: bytes) -> None:
        if self.durable:
            write_bytes_atomic(self.path(key), data)
        else:
            _replace_unsynced(self.path(key), data)


class CheckedStore:
    """JSON payloads in ``<root>/<namespace>/<key[:2]>/<key>.json`` that carry their own sha256.

    A truncated or altered entry fails the check, is counted as corrupt, deleted and recomputed.

    Arguments:
        counters: receives ``<label>_cache_hits``, ``<label>_cache_misses`` and ``corrupt_cache_entries``.
    """

    def __init__(self, root: Path, namespace: str, label: str, counters: Counter | None = None):
        self.files = ContentStore(root, namespace, ".json", durable=False)
        self.label = label
        self.counters = counters if counters is not None else Counter()

    def path(self, key: str) -> Path:
        return self.files.path(key)

    def get(self, key: str, valid: Callable[[Any], bool] | None = None) -> Any | None:
        """The payload stored under ``key``, or None when absent or corrupt (a corrupt file is removed).

        Arguments:
            valid: an extra check of the payload (e.g. that it names the expected image); a payload that
                fails it is treated exactly like one whose checksum fails.
        """
        data = self.files.read(key)
        if data is None:
            self.counters[f"{self.label}_cache_misses"] += 1
            return None
        try:
            entry = json.loads(data.decode("utf-8"))
            ok = isinstance(entry, dict) and entry.get("sha256") == digest(entry.get("payload"))
            ok = ok and (valid is None or valid(entry["payload"]))
        except (ValueError, TypeError, KeyError, UnicodeDecodeError):
            ok = False
        if not ok:
            self.counters["corrupt_cache_entries"] += 1
            self.counters[f"{self.label}_cache_misses"] += 1
            self.files.discard(key)
            return None
        self.counters[f"{self.label}_cache_hits"] += 1
        return entry["payload"]

    def put(self, key: str, payload: Any) -> None:
        entry = {"sha256": digest(payload), "payload": payload}
        self.files.write(key, json.dumps(entry, separators=(",", ":"), ensure_ascii=False).encode("utf-8"))


def _replace_unsynced(path: Path, data: bytes) -> None:
    """Write a temporary sibling and rename it into place, without fsync.

    Readers never see a half-written entry (the rename is atomic). A crash can still leave a torn file
    behind the rename; only stores whose entries carry their own checksum use this, so that file is
    detected and recomputed.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
