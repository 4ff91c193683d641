"""The real annotation files and images of ``../shared/data`` (skipped when that folder is absent).

These pin the published facts: split sizes, raw text over tokens, the truncated Sydney val file, the
AMFMN "test" file being the official val, caption statistics, cross-format agreement, and the
UCM-Captions ↔ UCMerced numbering.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from rsitr_bench.data.images import load_rgb
from rsitr_bench.data.stats import diff_splits, split_stats, verify_images
from rsitr_bench.datasets.real import SPECS
from rsitr_bench.errors import DataError

FACTORIES = {spec.name: spec.factory for spec in SPECS}


def dataset(name: str, root: Path, **options):
    return FACTORIES[name](root, options)


def load(name: str, root: Path, split: str, **options):
    return dataset(name, root, **options).load_split(split, check_images=False)


def size(split) -> tuple[int, int]:
    return split.n_images, split.n_captions


# -- UCM-Captions -----------------------------------------------------------------------------------------


def test_ucm_karpathy_sizes_and_raw_text(shared_data):
    ds = dataset("ucm", shared_data / "ucm")
    splits = {name: ds.load_split(name, check_images=False) for name in ds.available_splits()}
    assert {n: size(s) for n, s in splits.items()} == {"train": (1680, 8400), "val": (210, 1050),
                                                       "test": (210, 1050), "trainval": (1890, 9450)}
    train = splits["train"]
    assert train.image_names[:3] == ["1.tif", "2.tif", "3.tif"]
    assert train.captions[0] == "There is a piece of farmland ."  # the token reads "formland"
    every = [c for s in ("train", "val", "test") for c in splits[s].captions]
    assert sum(c.endswith(". .") for c in every) == 200
    assert train.image_labels[0] == "agricultural" and splits["test"].image_labels[-1] == "tenniscourt"


def test_ucm_test_caption_statistics(shared_data):
    stats = split_stats(load("ucm", shared_data / "ucm", "test"))
    assert stats["distinct_captions"] == 377
    assert stats["captions_shared_across_images"] == 210 and stats["images_sharing_a_caption"] == 192


@pytest.mark.slow
def test_ucm_images_decode_and_ucmerced_numbering_matches_pixels(shared_data):
    captions_images = dataset("ucm", shared_data / "ucm", allow_missing_images=True).load_split("train")
    assert captions_images.image_names == ["1.tif", "2.tif", "3.tif"]
    assert len(captions_images.annotations["skipped"]) == 1677
    assert verify_images(captions_images)["problems"] == []
    merced = dataset("ucm", shared_data / "ucm", image_root="images_ucmerced", allow_missing_images=True)
    merced_train = merced.load_split("train")
    assert merced_train.image_names[:2] == ["2.tif", "3.tif"]
    assert [p.name for p in merced_train.image_paths[:2]] == ["agricultural01.tif", "agricultural02.tif"]
    for k, name in enumerate(["2.tif", "3.tif"]):
        original = np.asarray(load_rgb(shared_data / "ucm" / "images" / name))
        assert original.shape == (256, 256, 3)
        assert np.array_equal(original, np.asarray(load_rgb(merced_train.image_paths[k])))
    shifted = np.asarray(load_rgb(shared_data / "ucm" / "images_ucmerced" / "agricultural02.tif"))
    assert not np.array_equal(np.asarray(load_rgb(shared_data / "ucm" / "images" / "2.tif")), shifted)


# -- Sydney-Captions --------------------------------------------------------------------------------------


def test_sydney_split_files_and_the_truncated_val(shared_data):
    root = shared_data / "sydney" / "karpathy_json_split"
    ds = dataset("sydney", root)
    assert size(ds.load_split("train", check_images=False)) == (497, 2485)
    assert size(ds.load_split("test", check_images=False)) == (58, 290)
    for name in ("val", "trainval"):
        with pytest.raises(DataError) as err:
            ds.load_split(name)
        message = str(err.value)
        assert "data_val.json" in message and "character offset 73971 of 73971" in message
        assert "truncated" in message and "Download the file again" in message and "--format" in message


def test_sydney_modified_json(shared_data):
    ds = dataset("sydney", shared_data / "sydney" / "karpathy_json_modified")
    assert {n: size(ds.load_split(n, check_images=False)) for n in ("train", "val", "test")} == {
        "train": (497, 2485), "val": (58, 290), "test": (58, 290)}


def test_sydney_precomp_test_file_is_the_official_val(shared_data):
    ds = dataset("sydney", shared_data / "sydney", format="precomp")
    assert "test" not in ds.available_splits()
    val = ds.load_split("val", check_images=False)
    assert size(val) == (58, 290) and "test_caps.txt" in val.source
    assert size(ds.load_split("verify_train", check_images=False)) == (397, 1985)
    assert size(ds.load_split("verify_val", check_images=False)) == (100, 500)
    with pytest.raises(DataError, match="test_caps.txt \\+ test_filename.txt holds split 'val', not 'test'"):
        ds.load_split("test")
    modified = dataset("sydney", shared_data / "sydney" / "karpathy_json_modified")
    assert val.fingerprint() == modified.load_split("val", check_images=False).fingerprint()
    original_train = load("sydney", shared_data / "sydney" / "karpathy_json_split", "train")
    assert ds.load_split("train", check_images=False).fingerprint() == original_train.fingerprint()


def test_sydney_formats_agree_after_the_declared_normalisation(shared_data):
    root = shared_data / "sydney"
    for split in ("train", "test"):
        original = load("sydney", root / "karpathy_json_split", split)
        lines, table = load("sydney", root, split, format="lines"), load("sydney", root, split, format="csv")
        assert lines.fingerprint() == table.fingerprint()  # both lowercase tokens, identical files
        assert original.fingerprint() != lines.fingerprint()
        assert original.fingerprint("pre_caption") == lines.fingerprint("pre_caption")
    assert size(load("sydney", root, "val", format="lines")) == (58, 290)


def test_sydney_diff_shows_the_typo_fixes_of_the_modified_copy(shared_data):
    report = diff_splits(load("sydney", shared_data / "sydney" / "karpathy_json_split", "train"),
                         load("sydney", shared_data / "sydney" / "karpathy_json_modified", "train"))
    assert not report["same_fingerprint"] and report["only_in_a"] == report["only_in_b"] == []
    assert report["images_with_caption_differences"] == 5
    first = report["differences"][0]
    assert any("crossroads" in c for c in first["only_in_a"]) and any("crossroad " in c for c in first["only_in_b"])


def test_sydney_test_statistics_and_images(shared_data):
    stats = split_stats(load("sydney", shared_data / "sydney" / "karpathy_json_split", "test"))
    assert stats["distinct_captions"] == 136 and stats["captions_shared_across_images"] == 60
    train = dataset("sydney", shared_data / "sydney", format="precomp", allow_missing_images=True).load_split("train")
    assert train.image_names == [f"{n}.tif" for n in range(1, 10)]
    assert len(train.annotations["skipped"]) == 488 and train.n_captions == 45
    assert load_rgb(train.image_paths[0]).size == (500, 500)
    assert verify_images(train)["problems"] == []


# -- RSITMD -----------------------------------------------------------------------------------------------


def test_rsitmd_finetune_splits(shared_data):
    ds = dataset("rsitmd", shared_data / "rsitmd")
    assert ds.default_splits() == {"train": "pir_train", "val": "pir_val", "test": "test"}
    splits = {n: ds.load_split(n, check_images=False) for n in ds.available_splits()}
    assert {n: size(s) for n, s in splits.items()} == {"test": (452, 2260), "trainval": (4291, 21455),
                                                       "pir_train": (3435, 17175), "pir_val": (856, 4280)}
    names = {n: set(s.image_names) for n, s in splits.items()}
    assert not names["pir_train"] & names["pir_val"] and not names["trainval"] & names["test"]
    assert len(names["trainval"] | names["test"]) == 4743
    assert len(set(splits["pir_train"].image_labels)) == 33
    by_name = dict(zip(splits["trainval"].image_names, range(splits["trainval"].n_images)))
    formerly_blank = ["mountain_2378.tif", "railwaystation_3254.tif", "storagetanks_4367.tif", "viaduct_4635.tif"]
    for name in formerly_blank:
        captions = [splits["trainval"].captions[j] for j in splits["trainval"].captions_of(by_name[name])]
        assert len(captions) == 5 and len(set(captions)) == 1 and captions[0].strip()


def test_rsitmd_test_statistics(shared_data):
    stats = split_stats(load("rsitmd", shared_data / "rsitmd", "test"))
    assert stats["distinct_captions"] == 2119 and stats["images_with_duplicate_captions"] == 100
    assert stats["captions_shared_across_images"] == 3 and stats["ambiguous_t2i_queries"] == 6
    assert stats["blank_captions"] == 0


def test_rsitmd_image_found_after_prefix_stripping(shared_data):
    train = dataset("rsitmd", shared_data / "rsitmd", allow_missing_images=True).load_split("pir_train")
    assert train.image_names == ["sparseresidential_3814.tif"] and train.n_captions == 5
    assert train.image_paths[0] == shared_data / "rsitmd" / "images" / "sparseresidential_3814.tif"
    assert load_rgb(train.image_paths[0]).size == (256, 256)


def test_cli_stats_over_the_mixed_sydney_folder(shared_data, capsys):
    import argparse

    from rsitr_bench.cli.data import add_data_commands, run_data_command

    parser = argparse.ArgumentParser()
    add_data_commands(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["data", "stats", "--dataset", "sydney", "--data-root", str(shared_data / "sydney"),
                              "--json"])
    assert run_data_command(args, lambda name, root, options: FACTORIES[name](root, options)) == 1
    splits = {s["split"]: s for s in json.loads(capsys.readouterr().out)["splits"]}
    assert "data_val.json" in splits["val"]["error"] and "precomp" in splits["val"]["error"]
    assert splits["test"]["images"] == 58 and splits["verify_val"]["images"] == 100
