"""The data package catalog: what ``rsitr-bench data fetch`` may download, and what the result must hold.

Packages are data (``rsitr_bench/data/packages.yaml``), not code, so adding a mirror is an edit of one
YAML entry. Extra catalog files (``--catalog FILE``) may add packages, e.g. a local mirror or a test package;
they may not redefine a built-in package, so nobody weakens the pinned expectations by accident.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from rsitr_bench.errors import DataError

BUILTIN = "packages.yaml"
UNPACK = ("zip", "none")


@dataclass(frozen=True)
class PackageFile:
    """One download of a package.

    Attributes:
        source: ``hf://datasets/OWNER/REPO/PATH[@REV]``, an http(s) URL or a local path (see rsitr_bench.harness.hub).
        sha256: the expected digest, or None where none is known.
        size_mb: approximate download size, for the listing; None when unknown.
        unpack: ``zip`` (unpacked safely) or ``none`` (copied as is).
        to: folder inside the package folder where it goes ("" for the root).
        skip_if_present: needed only when the files fetched before it lack a file of the same name.
    """

    source: str
    sha256: str | None
    size_mb: float | None
    unpack: str
    to: str = ""
    skip_if_present: bool = False

    @property
    def name(self) -> str:
        """The file name the source ends in (revision suffix and query removed)."""
        tail = self.source.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1]
        return tail.split("@", 1)[0]


@dataclass(frozen=True)
class Package:
    """A downloadable copy of one dataset, and the split sizes it must have once unpacked."""

    name: str
    dataset: str
    title: str
    files: tuple[PackageFile, ...]
    expect: Mapping[str, tuple[int, int]]
    licence: str
    verified: bool
    note: str
    default: bool = False
    strip_single_top_folder: bool = True
    origin: str = BUILTIN

    @property
    def size_mb(self) -> float | None:
        sizes = [f.size_mb for f in self.files]
        return None if any(s is None for s in sizes) else sum(sizes)


class Catalog:
    """Every known package, by name, in catalog order."""

    def __init__(self, packages: Iterable[Package]):
        self.packages: dict[str, Package] = {}
        for package in packages:
            if package.name in self.packages:
                first = self.packages[package.name]
                raise DataError(f"{package.origin}: package {package.name!r} is already defined in {first.origin}. "
                                f"Give the package another name (built-in packages cannot be redefined).")
            self.packages[package.name] = package
        defaults: dict[str, str] = {}
        for package in self.packages.values():
            if package.default and package.dataset in defaults:
                raise DataError(f"{package.origin}: package {package.name!r} and {defaults[package.dataset]!r} "
                                f"are both the default of dataset {package.dataset!r}; mark only one default: true.")
            if package.default:
                defaults[package.dataset] = package.name

    def resolve(self, dataset: str, package: str | None = None) -> Package:
        """The package to fetch for ``dataset``: the one named, else the dataset's default.

        ``dataset`` may itself be a package name (``fetch_dataset("rsitmd-mpsclip", ...)``).
        """
        if package is None and dataset in self.packages:
            return self.packages[dataset]
        if package is not None:
            if package not in self.packages:
                raise DataError(f"Unknown data package {package!r}. Known packages: {self._listing()}. "
                                f"`rsitr-bench data packages` describes each one.")
            chosen = self.packages[package]
            if chosen.dataset != dataset:
                raise DataError(f"Package {package!r} holds dataset {chosen.dataset!r}, not {dataset!r}. Fetch it "
                                f"with `rsitr-bench data fetch {chosen.dataset} --package {package}`.")
            return chosen
        candidates = [p for p in self.packages.values() if p.dataset == dataset]
        if not candidates:
            raise DataError(f"No data package for {dataset!r}. Known packages: {self._listing()}. A dataset without "
                            f"a package must be downloaded by hand (see docs/datasets.md).")
        return next((p for p in candidates if p.default), candidates[0])

    def _listing(self) -> str:
        return ", ".join(f"{p.name} ({p.dataset})" for p in self.packages.values()) or "(none)"


def load_catalog(extra: Iterable[Path] = ()) -> Catalog:
    """The built-in catalog plus the packages of each ``extra`` YAML file."""
    text = resources.files("rsitr_bench.data").joinpath(BUILTIN).read_text(encoding="utf-8")
    packages = parse_catalog(yaml.safe_load(text), "rsitr_bench/datasets/" + BUILTIN)
    for path in extra:
        path = Path(path).expanduser()
        try:
            tree = yaml.safe_load(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise DataError(f"Cannot read the package catalog {path}: {exc.strerror or exc}. Check the path.") from None
        except yaml.YAMLError as exc:
            raise DataError(f"{path}: not valid YAML ({exc}). Fix the file.") from None
        packages += parse_catalog(tree, str(path))
    return Catalog(packages)


def parse_catalog(tree: Any, origin: str) -> list[Package]:
    """Check and convert a catalog tree ``{"packages": [...]}``; every problem names the entry and field."""
    if not isinstance(tree, dict) or not isinstance(tree.get("packages"), list):
        raise DataError(f"{origin}: expected a mapping with a 'packages' list. See rsitr_bench/datasets/"
                        f"{BUILTIN} for the format.")
    return [_package(entry, f"{origin} (packages[{i}])", origin) for i, entry in enumerate(tree["packages"])]


def _package(entry: Any, where: str, origin: str) -> Package:
    if not isinstance(entry, dict):
        raise DataError(f"{where}: expected a mapping, found {type(entry).__name__}.")
    known = {"name", "dataset", "default", "title", "files", "layout", "expect", "licence", "verified", "note"}
    _no_unknown(entry, known, where)
    name = _text(entry, "name", where)
    where = f"{where} {name!r}"
    files = entry.get("files")
    if not isinstance(files, list) or not files:
        raise DataError(f"{where}: 'files' must be a non-empty list of downloads.")
    layout = entry.get("layout") or {}
    if not isinstance(layout, dict):
        raise DataError(f"{where}: 'layout' must be a mapping.")
    _no_unknown(layout, {"strip_single_top_folder"}, f"{where} layout")
    verified = entry.get("verified")
    if not isinstance(verified, bool):
        raise DataError(f"{where}: 'verified' must be true or false (true only when checked on real bytes).")
    return Package(name=name, dataset=_text(entry, "dataset", where), title=_text(entry, "title", where),
                   files=tuple(_file(f, f"{where} files[{k}]") for k, f in enumerate(files)),
                   expect=_expect(entry.get("expect"), where), licence=_text(entry, "licence", where),
                   verified=verified, note=str(entry.get("note") or ""), default=bool(entry.get("default", False)),
                   strip_single_top_folder=bool(layout.get("strip_single_top_folder", True)), origin=origin)


def _file(entry: Any, where: str) -> PackageFile:
    if not isinstance(entry, dict):
        raise DataError(f"{where}: expected a mapping with 'source'.")
    _no_unknown(entry, {"source", "sha256", "size_mb", "unpack", "to", "skip_if_present"}, where)
    sha = entry.get("sha256")
    if sha is not None and (not isinstance(sha, str) or len(sha) != 64
                            or any(c not in "0123456789abcdef" for c in sha.lower())):
        raise DataError(f"{where}: 'sha256' must be 64 hex digits or null, found {sha!r}.")
    unpack = entry.get("unpack", "none")
    if unpack not in UNPACK:
        raise DataError(f"{where}: 'unpack' is {unpack!r}; use one of {', '.join(UNPACK)}.")
    to = str(entry.get("to") or "")
    if to and (PurePosixPath(to).is_absolute() or ".." in PurePosixPath(to).parts):
        raise DataError(f"{where}: 'to' must be a folder inside the package folder, found {to!r}.")
    size = entry.get("size_mb")
    if size is not None and not isinstance(size, (int, float)):
        raise DataError(f"{where}: 'size_mb' must be a number or null.")
    return PackageFile(source=_text(entry, "source", where), sha256=sha.lower() if sha else None, size_mb=size,
                       unpack=unpack, to=to, skip_if_present=bool(entry.get("skip_if_present", False)))


def _expect(value: Any, where: str) -> dict[str, tuple[int, int]]:
    if not isinstance(value, dict) or not value:
        raise DataError(f"{where}: 'expect' must map at least one split to [images, captions].")
    out = {}
    for split, counts in value.items():
        if (not isinstance(counts, list) or len(counts) != 2
                or not all(isinstance(c, int) and not isinstance(c, bool) and c > 0 for c in counts)):
            raise DataError(f"{where}: expect.{split} must be [images, captions] (positive integers), "
                            f"found {counts!r}.")
        out[str(split)] = (counts[0], counts[1])
    return out


def _text(entry: Mapping[str, Any], key: str, where: str) -> str:
    value = entry.get(key)
    if not isinstance(value, str) or not value.strip():
        raise DataError(f"{where}: '{key}' must be non-empty text.")
    return value.strip()


def _no_unknown(entry: Mapping[str, Any], known: set[str], where: str) -> None:
    unknown = sorted(set(entry) - known)
    if unknown:
        raise DataError(f"{where}: unknown field(s) {', '.join(unknown)}; valid: {', '.join(sorted(known))}.")
