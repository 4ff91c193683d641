"""``data stats|verify|diff``: the counts, the image checks, the split diff, and the CLI around them."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
from PIL import Image

from rsitr_bench.cli.data import add_data_commands, run_data_command
from rsitr_bench.data.model import Split
from rsitr_bench.data.stats import diff_splits, split_stats, verify_images
from rsitr_bench.datasets.real import SPECS
from tests.fixtures.dataset_writers import Item, make_items, of_split, write_images, write_karpathy, write_lines


def make_split(captions_per_image: list[list[str]], names: list[str] | None = None, paths=None) -> Split:
    names = names or [f"img_{i}.tif" for i in range(len(captions_per_image))]
    return Split(dataset="d", name="test", image_names=names,
                 image_paths=paths or [Path(n) for n in names],
                 captions=[c for caps in captions_per_image for c in caps],
                 caption_image=[i for i, caps in enumerate(captions_per_image) for _ in caps])


def test_split_stats_counts_the_quirks():
    split = make_split([
        ["a sea .", "a sea .", "a sea .", "", "the port"],   # padding duplicates + one blank caption
        ["A sea .", "the port", "x"],                        # shares "the port"; "A sea ." only under lower
        ["y", "z"],
    ])
    stats = split_stats(split)
    assert (stats["images"], stats["captions"], stats["distinct_captions"]) == (3, 10, 7)
    assert stats["captions_per_image"] == {"min": 2, "max": 5, "mean": 3.333, "histogram": {2: 1, 3: 1, 5: 1}}
    assert stats["blank_captions"] == 1
    assert (stats["duplicate_captions_within_image"], stats["images_with_duplicate_captions"]) == (2, 1)
    assert (stats["captions_shared_across_images"], stats["images_sharing_a_caption"]) == (1, 2)
    assert stats["ambiguous_t2i_queries"] == 2
    lower = split_stats(split, "lower")
    assert lower["captions_shared_across_images"] == 2 and lower["ambiguous_t2i_queries"] == 6
    assert lower["most_images_per_shared_caption"] == 2
    assert lower["fingerprint"]["normalization"] == "lower" and lower["fingerprint"] != stats["fingerprint"]


@pytest.mark.filterwarnings("ignore:Corrupt EXIF data")
def test_verify_images_finds_missing_corrupt_and_mislabelled_files(tmp_path):
    write_images(tmp_path, ["ok.tif", "ok.jpg"])
    (tmp_path / "broken.tif").write_bytes(b"II*\x00garbage")
    Image.new("RGB", (4, 4)).save(tmp_path / "png_inside.tif", format="PNG")
    names = ["ok.tif", "ok.jpg", "broken.tif", "png_inside.tif", "absent.tif"]
    split = make_split([["c"]] * 5, names, [tmp_path / n for n in names])
    report = verify_images(split)
    problems = {p["image"]: p["problem"] for p in report["problems"]}
    assert report["checked"] == 5 and set(problems) == {"broken.tif", "png_inside.tif", "absent.tif"}
    assert problems["absent.tif"] == "missing"
    assert problems["broken.tif"].startswith("does not decode") and "broken.tif" in problems["broken.tif"]
    assert problems["png_inside.tif"].startswith("wrong extension: .tif but the content is PNG")
    seen = {tmp_path / "ok.tif"}
    assert verify_images(split, seen)["checked"] == 4


def test_diff_splits_explains_a_fingerprint_difference():
    a = make_split([["x", "y"], ["p", "p"], ["same"]], ["1.tif", "2.tif", "3.tif"])
    b = make_split([["x", "Y"], ["p"], ["new"]], ["1.tif", "2.tif", "4.tif"])
    report = diff_splits(a, b)
    assert not report["same_fingerprint"]
    assert report["only_in_a"] == ["3.tif"] and report["only_in_b"] == ["4.tif"] and report["images_in_both"] == 2
    assert report["differences"] == [{"image": "1.tif", "only_in_a": ["y"], "only_in_b": ["Y"]},
                                     {"image": "2.tif", "only_in_a": ["p"], "only_in_b": []}]
    assert diff_splits(a, a)["same_fingerprint"] and diff_splits(a, a)["differences"] == []
    assert diff_splits(make_split([["A ."]]), make_split([["a"]]), "pre_caption")["same_fingerprint"]


# -- the command line -------------------------------------------------------------------------------------

FACTORIES = {spec.name: spec.factory for spec in SPECS}


def build(name: str, root: Path | None, options: dict):
    return FACTORIES[name](root, options)


def run(argv: list[str], builder=build) -> int:
    parser = argparse.ArgumentParser(prog="rsitr-bench")
    add_data_commands(parser.add_subparsers(dest="command"))
    return run_data_command(parser.parse_args(["data", *argv]), builder)


@pytest.fixture
def sydney_root(tmp_path) -> Path:
    items = make_items({"train": 6, "val": 3, "test": 4}, classed=False)
    write_karpathy(tmp_path / "dataset.json", items)
    write_images(tmp_path / "images", [it.name for it in of_split(items, "test")])
    return tmp_path


def test_stats_json_reports_every_split_without_images(sydney_root, capsys):
    assert run(["stats", "--dataset", "sydney", "--data-root", str(sydney_root), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [s["split"] for s in out["splits"]] == ["train", "val", "test", "trainval"]
    test = out["splits"][2]
    assert (test["images"], test["captions"], test["format"]) == (4, 20, "karpathy")
    assert test["expected"] == {"images": 58, "captions": 290} and len(test["fingerprint"]["sha256"]) == 64


def test_stats_table_lists_skipped_records_and_size_notes(sydney_root, capsys):
    code = run(["stats", "--dataset", "sydney", "--data-root", str(sydney_root), "--split", "train",
                "--allow-missing-images"])
    out = capsys.readouterr().out
    assert code == 1  # every train image is missing: zero images left is an error
    assert "train: ERROR" in out and "zero images left" in out
    assert run(["stats", "--dataset", "sydney", "--data-root", str(sydney_root), "--split", "test",
                "--normalization", "lower"]) == 0
    out = capsys.readouterr().out
    assert "ambiguous t2i" in out and "note: the published split has 58 images / 290 captions" in out


def test_stats_with_skipped_images(tmp_path, capsys):
    items = make_items({"test": 4}, classed=False)
    write_karpathy(tmp_path / "dataset.json", items)
    write_images(tmp_path / "images", [it.name for it in items[:3]])
    run(["stats", "--dataset", "sydney", "--data-root", str(tmp_path), "--allow-missing-images", "--json"])
    test = json.loads(capsys.readouterr().out)["splits"][0]
    assert test["skipped_records"] == 1 and test["skipped"][0]["image"] == items[3].name
    run(["stats", "--dataset", "sydney", "--data-root", str(tmp_path), "--allow-missing-images"])
    assert f"skipped {items[3].name}: image file not found" in capsys.readouterr().out


def test_verify_exit_codes(sydney_root, capsys):
    assert run(["verify", "--dataset", "sydney", "--data-root", str(sydney_root), "--split", "test"]) == 0
    assert run(["verify", "--dataset", "sydney", "--data-root", str(sydney_root), "--json"]) == 1
    out = capsys.readouterr().out
    report = json.loads(out[out.index("{"):])
    by_split = {r["split"]: r for r in report["splits"]}
    assert by_split["test"]["problems"] == [] and len(by_split["train"]["problems"]) == 6
    assert by_split["trainval"]["checked"] == 0  # its images were checked as train and val
    broken = sorted((sydney_root / "images").iterdir())[0]
    broken.write_bytes(b"not an image")
    assert run(["verify", "--dataset", "sydney", "--data-root", str(sydney_root), "--split", "test"]) == 1
    assert f"test {broken.name}: does not decode" in capsys.readouterr().out


def test_diff_between_two_formats(tmp_path, capsys):
    items = make_items({"train": 3, "val": 2}, classed=False)
    write_karpathy(tmp_path / "dataset.json", items)
    target = of_split(items, "val")[0]
    changed = [Item(it.name, it.split, ("changed",) + it.captions[1:]) if it == target else it for it in items]
    write_lines(tmp_path / "lines", changed)
    common = ["diff", "--dataset", "sydney", "--data-root", str(tmp_path), "--format", "karpathy",
              "--other-format", "lines"]
    assert run([*common, "--split", "train"]) == 0
    assert "Same content" in capsys.readouterr().out
    assert run([*common, "--split", "val"]) == 1
    out = capsys.readouterr().out
    assert f"{target.name}:" in out and "b: 'changed'" in out and f"a: {target.captions[0]!r}" in out
    assert run([*common, "--split", "val", "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["differences"] == [
        {"image": target.name, "only_in_a": [target.captions[0]], "only_in_b": ["changed"]}]


def test_non_real_datasets_get_no_unasked_options(tmp_path, capsys):
    seen = {}

    class Tiny:
        def available_splits(self):
            return ["test"]

        def default_splits(self):
            return {"test": "test"}

        def load_split(self, name, *, check_images=True):
            return make_split([["a"], ["b"]])

        def expected_size(self, name):
            return None

    def builder(name, root, options):
        seen.update(options=options)
        return Tiny()

    assert run(["stats", "--dataset", "tiny"], builder) == 0 and seen["options"] == {}
    assert "test" in capsys.readouterr().out


def test_data_commands_accept_the_clis_common_options(sydney_root, capsys):
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--no-plugin", action="append", default=[])
    parser = argparse.ArgumentParser(prog="rsitr-bench")
    add_data_commands(parser.add_subparsers(dest="command"), parents=[common])
    args = parser.parse_args(["data", "stats", "--no-plugin", "x", "--dataset", "sydney", "--data-root",
                              str(sydney_root), "--split", "test"])
    assert args.no_plugin == ["x"] and args.command == "data" and args.data_command == "stats"
    assert run_data_command(args, build) == 0 and "karpathy" in capsys.readouterr().out
