"""``rsitr-bench data fetch``: a tiny package served by the loopback hub, unpacked safely, verified, and used.

Every package here is defined in a test-written catalog (``--catalog``), so the real pins stay untouched.
"""

from __future__ import annotations

import io
import json
import stat
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from rsitr_bench.cli.main import main
from rsitr_bench.data.packages import load_catalog
from rsitr_bench.errors import DataError

REPO = "test-org/tiny-rsitmd"
IMAGES = {"pir_train": ["airport_1.tif", "beach_2.tif"], "pir_val": ["bridge_3.tif", "church_4.tif"],
          "test": ["desert_5.tif", "forest_6.tif"]}


def _tif(seed: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (24, 24), (40 * seed % 255, 90, 160)).save(buf, format="TIFF")
    return buf.getvalue()


def _layout(with_annotations: bool = True) -> dict[str, bytes]:
    """A tiny RSITMD copy in the HarMA finetune layout, under one top-level folder (as archives often are)."""
    files: dict[str, bytes] = {}
    for k, name in enumerate(n for names in IMAGES.values() for n in names):
        files[f"tiny-rsitmd/images/{name}"] = _tif(k + 1)
    if with_annotations:
        train = [{"caption": f"{name} caption {c}", "image": f"train/{name}", "image_id": i}
                 for i, name in enumerate(IMAGES["pir_train"]) for c in range(5)]
        files["tiny-rsitmd/rsitmd_train.json"] = json.dumps(train).encode()
        for split, label in (("pir_val", "val"), ("test", "test")):
            records = [{"image": f"{label}/{name}", "caption": [f"{name} caption {c}" for c in range(5)]}
                       for name in IMAGES[split]]
            files[f"tiny-rsitmd/rsitmd_{label}.json"] = json.dumps(records).encode()
    return files


def _zip(files: dict[str, bytes], extra: list[tuple[zipfile.ZipInfo, bytes]] = ()) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
        for info, data in extra:
            zf.writestr(info, data)
    return buf.getvalue()


def _catalog(tmp_path: Path, expect: dict[str, list[int]], archive: str = "tiny.zip") -> Path:
    path = tmp_path / "catalog.yaml"
    entry = {"name": "tiny-rsitmd", "dataset": "rsitmd", "title": "test package", "licence": "test data",
             "verified": False, "note": "written by the test",
             "files": [{"source": f"hf://datasets/{REPO}/{archive}", "sha256": None, "unpack": "zip"}],
             "expect": expect}
    path.write_text(json.dumps({"packages": [entry]}))  # JSON is YAML
    return path


def _fetch(catalog: Path, to: Path) -> list[str]:
    return ["data", "fetch", "rsitmd", "--package", "tiny-rsitmd", "--catalog", str(catalog), "--to", str(to)]


def _err(capsys) -> str:
    """The error paragraph without the terminal wrapping (which may break a path at a hyphen)."""
    return "".join(capsys.readouterr().err.split())


def _has(text: str, *parts: str) -> bool:
    return all("".join(p.split()) in text for p in parts)


def _assert_untouched(to: Path) -> None:
    """DIR is still empty and no temporary sibling was left behind."""
    assert to.is_dir() and not any(to.iterdir())
    assert [p.name for p in to.parent.iterdir() if p.name.startswith(f".{to.name}")] == []


@pytest.mark.slow
def test_fetch_then_verify_then_run_global_clip(hf_hub, tmp_path, capsys):
    hf_hub.add_file(REPO, "tiny.zip", _zip(_layout()), repo_type="dataset")
    catalog = _catalog(tmp_path, {"test": [2, 10], "pir_train": [2, 10], "pir_val": [2, 10]})
    to = tmp_path / "data" / "rsitmd"
    assert main(_fetch(catalog, to)) == 0
    out = capsys.readouterr().out
    assert "is in" in out and "not verified on real bytes" in out
    assert (to / "images" / "airport_1.tif").is_file() and (to / "rsitmd_test.json").is_file()
    provenance = json.loads((to / "rsitr-bench-fetch.json").read_text())
    assert provenance["package"] == "tiny-rsitmd" and provenance["fetched_at"]
    (download,) = provenance["files"]
    assert download["source"].startswith(f"hf://datasets/{REPO}/tiny.zip@")
    assert download["sha256"] == hf_hub.sha256(REPO, "tiny.zip", repo_type="dataset")
    assert provenance["splits"]["test"]["images"] == 2 and provenance["splits"]["test"]["fingerprint"]["sha256"]

    assert main(["data", "verify", "--dataset", "rsitmd", "--data-root", str(to)]) == 0
    capsys.readouterr()
    assert main(["eval", "--method", "global-clip", "--dataset", "rsitmd", "--data-root", str(to),
                 "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "mR" in out and "recorded as run" in out
    run_dir = Path(out.split(" in ")[-1].strip())
    result = json.loads((run_dir / "metrics.json").read_text())
    assert result["evaluation_only"] and result["fingerprints"]["test"]["images"] == 2
    assert result["fingerprints"]["test"]["sha256"] == provenance["splits"]["test"]["fingerprint"]["sha256"]

    # A second fetch into a non-empty folder needs --force; with it, the cached archive is reused.
    assert main(_fetch(catalog, to)) == 2
    assert _has(_err(capsys), "is not empty", "--force")
    hf_hub.requests.clear()
    assert main([*_fetch(catalog, to), "--force"]) == 0
    assert not any(r.method == "GET" for r in hf_hub.requests)
    assert (to / "images" / "airport_1.tif").is_file()


def _symlink(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info


@pytest.mark.parametrize("entry, data, message", [
    (zipfile.ZipInfo("tiny-rsitmd/../../evil.txt"), b"x", "contains '..'"),
    (zipfile.ZipInfo("/etc/evil.txt"), b"x", "absolute path"),
    (zipfile.ZipInfo("C:/evil.txt"), b"x", "absolute path"),
    (_symlink("tiny-rsitmd/images/link.tif"), b"/etc/passwd", "symbolic link"),
    (zipfile.ZipInfo("tiny-rsitmd/bomb.bin"), bytes(4 << 20), "compression ratio"),
])
def test_unsafe_archives_are_refused_and_dir_stays_empty(hf_hub, tmp_path, capsys, entry, data, message):
    entry.compress_type = zipfile.ZIP_DEFLATED
    hf_hub.add_file(REPO, "tiny.zip", _zip(_layout(), [(entry, data)]), repo_type="dataset")
    to = tmp_path / "out"
    to.mkdir()
    assert main(_fetch(_catalog(tmp_path, {"test": [2, 10]}), to)) == 2
    assert _has(_err(capsys), message, entry.filename, "Nothing was written")
    _assert_untouched(to)


def test_package_without_the_expected_files_lists_what_it_found(hf_hub, tmp_path, capsys):
    hf_hub.add_file(REPO, "tiny.zip", _zip(_layout(with_annotations=False)), repo_type="dataset")
    to = tmp_path / "out"
    to.mkdir()
    assert main(_fetch(_catalog(tmp_path, {"test": [2, 10]}), to)) == 2
    assert _has(_err(capsys), "does not hold the files dataset 'rsitmd' needs", "dataset_RSITMD.json",
                "Found in the package: images/ (6 files)")
    _assert_untouched(to)


def test_count_mismatch_names_split_and_counts(hf_hub, tmp_path, capsys):
    hf_hub.add_file(REPO, "tiny.zip", _zip(_layout()), repo_type="dataset")
    to = tmp_path / "out"
    to.mkdir()
    assert main(_fetch(_catalog(tmp_path, {"test": [3, 15]}), to)) == 2
    assert _has(_err(capsys), "split 'test' has 2 images / 10 captions, but 3 images / 15 captions are pinned")
    _assert_untouched(to)


def test_unknown_package_lists_the_known_ones(tmp_path, capsys):
    assert main(["data", "fetch", "rsitmd", "--package", "nope", "--to", str(tmp_path / "out")]) == 2
    assert _has(_err(capsys), "Unknown data package 'nope'", "rsitmd-mpsclip (rsitmd)", "rsicd-mpsclip")
    assert not (tmp_path / "out").exists()


def test_offline_miss_fails_without_writing(hf_hub, tmp_path, capsys, monkeypatch):
    hf_hub.add_file(REPO, "tiny.zip", _zip(_layout()), repo_type="dataset")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    to = tmp_path / "out"
    to.mkdir()
    assert main(_fetch(_catalog(tmp_path, {"test": [2, 10]}), to)) == 2
    assert _has(_err(capsys), "tiny.zip", "Nothing was written")
    assert hf_hub.requests == []
    _assert_untouched(to)


def test_packages_lists_the_catalog_and_real_pins_hold(capsys):
    assert main(["data", "packages"]) == 0
    out = capsys.readouterr().out
    assert "rsitmd-mpsclip" in out and "test 452/2260" in out and "test 1093/5465" in out
    catalog = load_catalog()
    assert catalog.resolve("rsitmd").name == "rsitmd-mpsclip"
    assert catalog.resolve("rsicd").expect["test"] == (1093, 5465)
    # Every digest is either absent or a real pin, never a placeholder; no package claims a check it lacks.
    assert all(f.sha256 is None or len(f.sha256) == 64 for p in catalog.packages.values() for f in p.files)


def test_a_catalog_file_cannot_redefine_a_builtin_package(tmp_path):
    path = tmp_path / "catalog.yaml"
    path.write_text(json.dumps({"packages": [{
        "name": "rsitmd-mpsclip", "dataset": "rsitmd", "title": "weaker pins", "licence": "-", "verified": True,
        "note": "", "files": [{"source": "x.zip", "unpack": "zip"}], "expect": {"test": [1, 5]}}]}))
    with pytest.raises(DataError, match="already defined"):
        load_catalog([path])
