"""Unpack a downloaded zip archive without trusting it.

An archive from the internet may try to write outside the target folder (``../`` entries, absolute paths,
drive letters, symbolic links) or to fill the disk (a "zip bomb": a tiny file that inflates to gigabytes).
Every entry is checked *before* anything is written, and the bytes actually inflated are counted while
writing, because the sizes an archive declares can lie. Problems name the offending entry.
"""

from __future__ import annotations

import re
import shutil
import stat
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from rsitr_bench.errors import DataError

_DRIVE = re.compile(r"^[A-Za-z]:")
#: Archive members written by macOS Finder (resource forks, folder metadata), never dataset content.
_JUNK = ("__MACOSX/",)
_CHUNK = 1 << 20
#: Unix file types an entry may declare (high 16 bits of its external attributes) that are not plain content.
_SPECIAL = {stat.S_IFLNK: "a symbolic link", stat.S_IFCHR: "a device", stat.S_IFBLK: "a device",
            stat.S_IFIFO: "a named pipe", stat.S_IFSOCK: "a socket"}


@dataclass(frozen=True)
class Limits:
    """What one archive may hold.

    Attributes:
        max_total_bytes: uncompressed bytes over all entries (RSICD with sub-images is a few GB).
        max_entries: number of entries (RSICD train sub-images are about 10^5 files).
        max_ratio: uncompressed / compressed size of one entry; images and json never come near it.
        ratio_floor_bytes: entries smaller than this are not ratio-checked (a tiny all-zero file is harmless).
    """

    max_total_bytes: int = 64 << 30
    max_entries: int = 2_000_000
    max_ratio: float = 200.0
    ratio_floor_bytes: int = 1 << 20


@dataclass(frozen=True)
class UnpackStats:
    """What an archive held: files written, their bytes, and the junk entries left out."""

    files: int
    bytes: int
    skipped_junk: int


class UnsafeArchiveError(DataError):
    """An archive entry would escape the target folder, is a link, or inflates beyond the limits."""


def safe_unzip(archive: Path, dest: Path, limits: Limits = Limits()) -> UnpackStats:
    """Unpack ``archive`` into the existing, empty folder ``dest``.

    On an unsafe archive nothing is written (every entry is checked first); on a size overrun found while
    inflating, the caller discards ``dest`` (it is a temporary folder).
    """
    try:
        with zipfile.ZipFile(archive) as zf:
            members = zf.infolist()
            plan = [(info, dest / relative) for info, relative in _check(archive, members, limits)]
            written = 0
            for info, target in plan:
                if info.is_dir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                written += _inflate(archive, zf, info, target, limits, written)
            return UnpackStats(files=sum(not i.is_dir() for i, _ in plan), bytes=written,
                               skipped_junk=len(members) - len(plan))
    except zipfile.BadZipFile as exc:
        raise DataError(f"{archive}: not a readable zip archive ({exc}). The download is damaged or is not a zip: "
                        f"delete it from the cache and fetch again.") from None


def _check(archive: Path, members: list[zipfile.ZipInfo], limits: Limits) -> list[tuple[zipfile.ZipInfo, Path]]:
    if len(members) > limits.max_entries:
        raise UnsafeArchiveError(f"{archive}: {len(members)} entries, more than the limit of {limits.max_entries}. "
                                 f"Refusing to unpack it.")
    total = 0
    plan: list[tuple[zipfile.ZipInfo, Path]] = []
    seen: dict[str, str] = {}
    for info in members:
        name = info.filename
        if name.startswith(_JUNK) or "/__MACOSX/" in name:
            continue
        relative = _safe_name(archive, name)
        kind = _SPECIAL.get(stat.S_IFMT(info.external_attr >> 16))
        if kind:
            raise UnsafeArchiveError(f"{archive}: entry {name!r} is {kind}. Archives with links or special "
                                     f"files are refused: a link could point outside the target folder.")
        if info.flag_bits & 0x1:
            raise UnsafeArchiveError(f"{archive}: entry {name!r} is encrypted. Refusing to unpack it.")
        key = relative.as_posix().lower()
        if key in seen and not info.is_dir():
            raise UnsafeArchiveError(f"{archive}: entries {seen[key]!r} and {name!r} write the same file. "
                                     f"Refusing an archive whose content depends on entry order.")
        seen[key] = name
        if (not info.is_dir() and info.file_size >= limits.ratio_floor_bytes
                and info.file_size > limits.max_ratio * max(info.compress_size, 1)):
            raise UnsafeArchiveError(
                f"{archive}: entry {name!r} inflates from {info.compress_size} to {info.file_size} bytes, a "
                f"compression ratio above the limit of {limits.max_ratio:g} (a zip bomb?). Refusing to unpack it.")
        total += info.file_size
        if total > limits.max_total_bytes:
            raise UnsafeArchiveError(f"{archive}: the entries up to {name!r} inflate to more than the limit of "
                                     f"{limits.max_total_bytes} bytes. Refusing to unpack it.")
        plan.append((info, relative))
    return plan


def _safe_name(archive: Path, name: str) -> Path:
    """The entry's path relative to the target folder; anything that could leave it is refused."""
    text = name.replace("\\", "/")
    if text.startswith("/") or _DRIVE.match(text):
        raise UnsafeArchiveError(f"{archive}: entry {name!r} has an absolute path. Refusing to unpack an archive "
                                 f"that writes outside its target folder.")
    parts = [p for p in PurePosixPath(text).parts if p not in ("", ".")]
    if ".." in parts:
        raise UnsafeArchiveError(f"{archive}: entry {name!r} contains '..'. Refusing to unpack an archive that "
                                 f"writes outside its target folder.")
    if not parts or any("\x00" in p for p in parts):
        raise UnsafeArchiveError(f"{archive}: entry {name!r} has no usable file name. Refusing to unpack it.")
    return Path(*parts)


def _inflate(archive: Path, zf: zipfile.ZipFile, info: zipfile.ZipInfo, target: Path, limits: Limits,
             so_far: int) -> int:
    """Write one entry, stopping as soon as it inflates beyond what it declared or the total limit."""
    written = 0
    with zf.open(info) as src, open(target, "xb") as dst:
        while chunk := src.read(_CHUNK):
            written += len(chunk)
            if written > info.file_size or so_far + written > limits.max_total_bytes:
                raise UnsafeArchiveError(f"{archive}: entry {info.filename!r} inflates beyond its declared "
                                         f"{info.file_size} bytes (or the total limit). Refusing the archive.")
            dst.write(chunk)
    return written


def strip_single_top_folder(folder: Path) -> None:
    """Move the content of a lone top-level folder up, repeatedly (``data/rsitmd/images`` -> ``images``).

    A lone folder that holds files only (``images/*.tif``) is kept: it is the content, not a wrapper.
    """
    while True:
        entries = list(folder.iterdir())
        if len(entries) != 1 or not entries[0].is_dir() or not any(p.is_dir() for p in entries[0].iterdir()):
            return
        inner = entries[0]
        parked = folder / f".{inner.name}.strip"
        inner.rename(parked)
        for child in parked.iterdir():
            child.rename(folder / child.name)
        parked.rmdir()


def merge_into(source: Path, dest: Path) -> None:
    """Move everything under ``source`` into ``dest``; an existing file is an error naming it."""
    dest.mkdir(parents=True, exist_ok=True)
    for child in source.iterdir():
        target = dest / child.name
        if target.exists() and child.is_dir() and target.is_dir():
            merge_into(child, target)
        elif target.exists():
            raise DataError(f"Two files of the package write {target}. The package catalog entry lists "
                            f"overlapping downloads: give one of them another 'to' folder.")
        else:
            shutil.move(str(child), str(target))
    shutil.rmtree(source, ignore_errors=True)
