"""``rsitr-bench data fetch``: a dataset package downloaded, unpacked safely, laid out and verified.

Why it is built this way:

* Downloads go through :func:`rsitr_bench.harness.hub.fetch` only, so offline mode, caching, resume and digest checks
  are the same as for model weights; a second fetch of the same package downloads nothing.
* Nothing half-written ever appears in the target folder: the package is unpacked into a temporary sibling,
  read through the dataset plugin and checked against the pinned split sizes, and only then renamed into
  place. On any failure the temporary folder is deleted (the downloads stay in the cache, so a retry is
  cheap) and the target folder is left as it was.
* The dataset is read the way every command reads it, through the plugin host: this module never imports a
  dataset plugin by name, and a package is verified by the same code that later serves the run.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rsitr_bench.data.packages import Package, PackageFile, load_catalog
from rsitr_bench.data.unpack import Limits, merge_into, safe_unzip, strip_single_top_folder
from rsitr_bench.errors import DataError, UserError
from rsitr_bench.harness import hub
from rsitr_bench.harness.atomic import write_json_atomic

BuildDataset = Callable[[str, Path, dict], Any]
PROVENANCE = "rsitr-bench-fetch.json"
_LISTED = 20  # entries of a package folder named in a "does not hold the expected files" error


@dataclass
class FetchReport:
    """What a fetch did.

    Attributes:
        package, dataset: the package fetched and the dataset plugin that reads it.
        root: the folder that now holds the dataset (``--data-root`` for runs).
        files: per download: source, sha256, whether bytes were transferred, or why it was skipped.
        splits: per verified split: images, captions, expected counts and fingerprint.
        provenance: the provenance file written in ``root``.
        verified_package: whether the catalog entry itself was checked on real bytes (see its note).
    """

    package: str
    dataset: str
    root: Path
    files: list[dict[str, Any]] = field(default_factory=list)
    splits: dict[str, dict[str, Any]] = field(default_factory=dict)
    provenance: Path | None = None
    verified_package: bool = False


def fetch_dataset(name_or_package: str, to: Path, *, force: bool = False, package: str | None = None,
                  catalogs: Iterable[Path] = (), build_dataset: BuildDataset | None = None,
                  limits: Limits | None = None) -> FetchReport:
    """Download, unpack, lay out and verify a dataset package into the folder ``to``.

    Arguments:
        name_or_package: a dataset name (its default package is fetched) or a package name.
        to: the target folder; it must be absent or empty unless ``force`` replaces it (after verification).
        package: the package to fetch for the dataset ``name_or_package``.
        catalogs: extra package catalog files (their packages are added to the built-in ones).
        build_dataset: ``(dataset, root, options) -> Dataset``; default: the plugin host's dataset plugins.
        limits: what one archive may hold (size, entries, compression ratio); default :class:`Limits`.
    """
    chosen = load_catalog(catalogs).resolve(name_or_package, package)
    target = Path(to).expanduser().absolute()
    _check_target(target, force)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.fetch-"))
    report = FetchReport(chosen.name, chosen.dataset, target, verified_package=chosen.verified)
    try:
        for entry in chosen.files:
            report.files.append(_fetch_file(chosen, entry, staging, limits or Limits()))
        report.splits = _verify(chosen, staging, build_dataset or _plugin_dataset)
        report.provenance = target / PROVENANCE
        write_json_atomic(staging / PROVENANCE, _provenance(chosen, report))
        _move_into_place(staging, target)
    except BaseException as exc:
        shutil.rmtree(staging, ignore_errors=True)
        if isinstance(exc, UserError) and not isinstance(exc, _Annotated):
            raise _Annotated(f"{exc} Nothing was written to {target}; the downloaded files stay in the cache, so "
                             f"fetching again does not download them again.") from None
        raise
    return report


class _Annotated(DataError):
    """A fetch error whose message already says that the target folder was left untouched."""


def _check_target(target: Path, force: bool) -> None:
    if target.exists() and not target.is_dir():
        raise DataError(f"--to {target} is a file, not a folder. Choose a folder for the dataset.")
    if target.is_dir() and any(target.iterdir()) and not force:
        raise DataError(f"--to {target} is not empty. Choose an empty or new folder, or add --force to replace "
                        f"its content once the new copy is verified.")


def _fetch_file(package: Package, entry: PackageFile, staging: Path, limits: Limits) -> dict[str, Any]:
    if entry.skip_if_present:
        present = sorted(p for p in staging.rglob(entry.name) if p.is_file())
        if present:
            return {"source": entry.source, "skipped": f"the package already holds {present[0].relative_to(staging)}"}
    fetched = hub.fetch(entry.source, sha256=entry.sha256, what=f"{entry.name} of data package {package.name}")
    dest = staging / entry.to
    if entry.unpack == "zip":
        unpacked = staging / f".unpack-{entry.name}"
        unpacked.mkdir()
        stats = safe_unzip(fetched.path, unpacked, limits)
        if package.strip_single_top_folder:
            strip_single_top_folder(unpacked)
        merge_into(unpacked, dest)
        extra = {"unpacked_files": stats.files, "unpacked_bytes": stats.bytes, "skipped_junk": stats.skipped_junk}
    else:
        dest.mkdir(parents=True, exist_ok=True)
        if (dest / entry.name).exists():
            raise DataError(f"Data package {package.name}: {entry.source} would overwrite {entry.to or '.'}/"
                            f"{entry.name}, which an earlier download wrote. Fix the catalog entry.")
        shutil.copyfile(fetched.path, dest / entry.name)
        extra = {}
    return {"source": fetched.source, "sha256": fetched.sha256, "expected_sha256": entry.sha256,
            "downloaded": fetched.downloaded, **extra}


def _verify(package: Package, root: Path, build_dataset: BuildDataset) -> dict[str, dict[str, Any]]:
    """Read every pinned split through the dataset plugin and compare its size with the pin."""
    try:
        dataset = build_dataset(package.dataset, root, {})
    except DataError as exc:
        raise DataError(f"Data package {package.name} does not hold the files dataset {package.dataset!r} needs. "
                        f"Expected (from the dataset plugin): {exc} Found in the package: {_listing(root)}.") from None
    splits = {}
    for name, (images, captions) in package.expect.items():
        try:
            split = dataset.load_split(name)
        except DataError as exc:
            raise DataError(f"Data package {package.name}: split {name!r} cannot be read: {exc} Found in the "
                            f"package: {_listing(root)}.") from None
        found = (split.n_images, split.n_captions)
        if found != (images, captions):
            raise DataError(f"Data package {package.name}: split {name!r} has {found[0]} images / {found[1]} "
                            f"captions, but {images} images / {captions} captions are pinned for it. The download "
                            f"is not the expected copy (a different version or an incomplete archive); report it, or "
                            f"define your own package with its counts in a --catalog file.")
        splits[name] = {"images": found[0], "captions": found[1], "expected": [images, captions],
                        "fingerprint": split.fingerprint()}
    return splits


def _listing(root: Path) -> str:
    entries = sorted(root.iterdir())
    if not entries:
        return "nothing"
    shown = []
    for entry in entries[:_LISTED]:
        if entry.is_dir():
            shown.append(f"{entry.name}/ ({sum(1 for p in entry.rglob('*') if p.is_file())} files)")
        else:
            shown.append(entry.name)
    more = f", ... and {len(entries) - _LISTED} more" if len(entries) > _LISTED else ""
    return ", ".join(shown) + more


def _provenance(package: Package, report: FetchReport) -> dict[str, Any]:
    return {"package": package.name, "dataset": package.dataset, "catalog": package.origin,
            "verified_package": package.verified, "note": package.note, "licence": package.licence,
            "fetched_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "files": report.files, "splits": report.splits}


def _move_into_place(staging: Path, target: Path) -> None:
    """Rename the verified folder to ``target``; an old ``target`` (``--force``) is removed only afterwards."""
    old = None
    if target.is_dir():
        if any(target.iterdir()):
            old = target.parent / f".{target.name}.old-{os.getpid()}"
            target.rename(old)
        else:
            target.rmdir()
    try:
        staging.rename(target)
    except OSError:
        if old is not None:
            old.rename(target)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _plugin_dataset(name: str, root: Path, options: dict) -> Any:
    """Build a dataset through the plugin host, as ``rsitr-bench data verify`` does."""
    from rsitr_bench.harness.config import NoOptions, build_section
    from rsitr_bench.harness.plugins import build_plugin_host

    spec = build_plugin_host().get("datasets", name).spec
    return spec.factory(root, build_section(spec.options or NoOptions, options, "dataset"))
