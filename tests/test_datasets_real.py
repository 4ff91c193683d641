"""The real-dataset plugins on fixtures the tests write: split sizes, split names, cross-format
fingerprints, format choice, image resolution, and the errors for missing or bad data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rsitr_bench.datasets import rsitr_register_datasets
from rsitr_bench.datasets.catalog import CATALOG
from rsitr_bench.datasets.real import SPECS, RealDataset, RealDatasetOptions
from rsitr_bench.errors import ConfigError, DataError
from tests.fixtures.dataset_writers import (
    Item,
    karpathy_json,
    make_items,
    of_split,
    write_coco,
    write_finetune,
    write_images,
    write_json,
    write_karpathy,
    write_karpathy_split_files,
    write_lines,
    write_lsci,
    write_nwpu,
    write_pairs_csv,
    write_precomp,
    write_vtrsbs_csv,
)

FACTORIES = {spec.name: spec.factory for spec in SPECS}


def dataset(name: str, root: Path | None, **options) -> RealDataset:
    return FACTORIES[name](root, RealDatasetOptions(**options))


def load(name: str, root: Path, split: str, **options):
    return dataset(name, root, **options).load_split(split, check_images=False)


def sizes(name: str, root: Path, **options) -> dict[str, tuple[int, int]]:
    ds = dataset(name, root, **options)
    return {s: (sp.n_images, sp.n_captions) for s in ds.available_splits()
            for sp in [ds.load_split(s, check_images=False)]}


def test_plugin_registers_every_dataset_next_to_synthetic():
    names = [spec.name for spec in rsitr_register_datasets()]
    assert sorted(names) == ["nwpu", "rsicd", "rsitmd", "sydney", "synthetic-rs", "synthetic-rs-fine", "ucm"]
    assert all(spec.options is RealDatasetOptions for spec in SPECS)


# -- official split sizes, pinned with annotation files of exactly those sizes ---------------------------


@pytest.mark.slow
def test_rsicd_sizes(tmp_path):
    items = make_items({"train": 8734, "val": 1094, "test": 1093}, ext=".jpg", quirks=False)
    write_karpathy(tmp_path / "karpathy" / "dataset_rsicd.json", items)
    got = sizes("rsicd", tmp_path / "karpathy")
    assert got == {"train": (8734, 43670), "val": (1094, 5470), "test": (1093, 5465), "trainval": (9828, 49140)}
    assert all(got[s] == CATALOG["rsicd"].sizes[s] for s in got)
    write_precomp(tmp_path / "precomp", of_split(items, "test"), "test", repeated=True)
    write_precomp(tmp_path / "precomp", of_split(items, "train", "val"), "train", repeated=False)
    assert sizes("rsicd", tmp_path / "precomp") == {"test": (1093, 5465), "trainval": (9828, 49140)}


@pytest.mark.slow
def test_rsitmd_sizes(tmp_path):
    items = make_items({"train": 3432, "val": 859, "test": 452}, quirks=False)
    write_karpathy(tmp_path / "k" / "dataset_RSITMD.json", items)
    assert sizes("rsitmd", tmp_path / "k") == {"train": (3432, 17160), "val": (859, 4295), "test": (452, 2260),
                                               "trainval": (4291, 21455)}
    pir = [Item(it.name, "train" if k < 3435 else "val", it.captions, it.label)
           for k, it in enumerate(of_split(items, "train", "val"))] + of_split(items, "test")
    write_finetune(tmp_path / "f", "rsitmd", pir)
    got = sizes("rsitmd", tmp_path / "f")
    assert got == {"test": (452, 2260), "trainval": (4291, 21455), "pir_train": (3435, 17175), "pir_val": (856, 4280)}
    assert all(got[s] == CATALOG["rsitmd"].sizes[s] for s in got)


@pytest.mark.slow
def test_ucm_sizes_and_precomp_test_is_the_official_val(tmp_path):
    items = make_items({"train": 1680, "val": 210, "test": 210}, classed=False, quirks=False)
    write_karpathy(tmp_path / "k" / "dataset.json", items)
    assert sizes("ucm", tmp_path / "k") == {"train": (1680, 8400), "val": (210, 1050), "test": (210, 1050),
                                            "trainval": (1890, 9450)}
    write_precomp(tmp_path / "p", of_split(items, "train"), "train", repeated=False)
    write_precomp(tmp_path / "p", of_split(items, "val"), "test", repeated=True)
    got = sizes("ucm", tmp_path / "p")
    assert got == {"train": (1680, 8400), "val": (210, 1050), "trainval": (1890, 9450)}
    assert load("ucm", tmp_path / "p", "val").fingerprint() == load("ucm", tmp_path / "k", "val").fingerprint()


def test_sydney_sizes_from_split_files(tmp_path):
    items = make_items({"train": 497, "val": 58, "test": 58}, classed=False, quirks=False)
    write_karpathy_split_files(tmp_path, items)
    assert sizes("sydney", tmp_path) == {"train": (497, 2485), "val": (58, 290), "test": (58, 290),
                                         "trainval": (555, 2775)}


def test_nwpu_test_size(tmp_path):
    classes = [f"class_{chr(97 + k // 26)}{chr(97 + k % 26)}" for k in range(45)]
    items = [Item(f"{c}_{n:03d}.jpg", "test" if n < 70 else "train", tuple(f"{c} {n} {k}" for k in range(5)), c)
             for c in classes for n in range(72)]
    write_nwpu(tmp_path / "dataset_nwpu.json", items)
    test = load("nwpu", tmp_path, "test")
    assert (test.n_images, test.n_captions) == (3150, 15750) == CATALOG["nwpu"].sizes["test"]
    assert test.image_labels[:2] == [classes[0]] * 2


# -- cross-format fingerprints ----------------------------------------------------------------------------

CONTENT = make_items({"train": 12, "val": 5, "test": 6})


def test_rsitmd_same_content_same_fingerprint_in_every_format(tmp_path):
    write_karpathy(tmp_path / "karpathy" / "dataset_RSITMD.json", CONTENT)
    write_finetune(tmp_path / "finetune", "rsitmd", CONTENT)
    write_precomp(tmp_path / "precomp", of_split(CONTENT, "test"), "test", repeated=True)
    write_precomp(tmp_path / "precomp", of_split(CONTENT, "train", "val"), "train", repeated=False)
    write_vtrsbs_csv(tmp_path / "csv" / "RSITMD.csv", CONTENT)
    write_pairs_csv(tmp_path / "pairs" / "rsitmd_test.csv", of_split(CONTENT, "test"))
    for normalization in ("none", "lower", "pre_caption"):
        test = {f: load("rsitmd", tmp_path / f, "test").fingerprint(normalization)
                for f in ("karpathy", "finetune", "precomp", "csv", "pairs")}
        assert len({json.dumps(fp, sort_keys=True) for fp in test.values()}) == 1, test
        trainval = {f: load("rsitmd", tmp_path / f, "trainval").fingerprint(normalization)["sha256"]
                    for f in ("karpathy", "finetune", "precomp", "csv")}
        assert len(set(trainval.values())) == 1, trainval
    assert test["karpathy"]["images"] == 6 and test["karpathy"]["captions"] == 30


def test_sydney_and_ucm_formats_agree(tmp_path):
    items = make_items({"train": 12, "val": 5, "test": 6}, classed=False)
    write_karpathy_split_files(tmp_path / "split_files", items)
    write_lines(tmp_path / "lines", items)
    write_vtrsbs_csv(tmp_path / "csv" / "SIDNEY.csv", items, labelled=False)
    write_precomp(tmp_path / "precomp", of_split(items, "val"), "test", repeated=True)
    fingerprints = {f: load("sydney", tmp_path / f, "val").fingerprint()["sha256"]
                    for f in ("split_files", "lines", "csv", "precomp")}
    assert len(set(fingerprints.values())) == 1, fingerprints
    write_karpathy(tmp_path / "ucm_k" / "dataset.json", items)
    write_coco(tmp_path / "ucm_coco" / "data_test_UCM.json", of_split(items, "test"))
    write_lsci(tmp_path / "ucm_lsci", "ucm", items)
    fingerprints = {f: load("ucm", tmp_path / f, "test").fingerprint()["sha256"]
                    for f in ("ucm_k", "ucm_coco", "ucm_lsci")}
    assert len(set(fingerprints.values())) == 1, fingerprints


def test_nwpu_json_and_pairs_csv_agree(tmp_path):
    items = make_items({"train": 5, "test": 6}, ext=".jpg")
    write_nwpu(tmp_path / "json" / "dataset_nwpu.json", items)
    write_pairs_csv(tmp_path / "csv" / "nwpu_test.csv", of_split(items, "test"))
    assert (load("nwpu", tmp_path / "json", "test").fingerprint()
            == load("nwpu", tmp_path / "csv", "test").fingerprint())


def test_different_content_different_fingerprint(tmp_path):
    write_karpathy(tmp_path / "a" / "dataset_RSITMD.json", CONTENT)
    changed = [Item(it.name, it.split, (it.captions[0] + "!",) + it.captions[1:], it.label) if k == 1 else it
               for k, it in enumerate(CONTENT)]
    write_karpathy(tmp_path / "b" / "dataset_RSITMD.json", changed)
    a, b = (load("rsitmd", tmp_path / d, changed[1].split).fingerprint() for d in "ab")
    assert a != b and a["images"] == b["images"]


# -- split names, roles and format choice -----------------------------------------------------------------


def test_default_roles_are_disjoint_and_never_test(tmp_path):
    write_karpathy(tmp_path / "k" / "dataset_RSITMD.json", CONTENT)
    write_finetune(tmp_path / "f", "rsitmd", CONTENT)
    write_precomp(tmp_path / "p", of_split(CONTENT, "train"), "train", repeated=False, verify=True)
    write_precomp(tmp_path / "p", of_split(CONTENT, "val"), "val", repeated=False, verify=True)
    write_precomp(tmp_path / "p", of_split(CONTENT, "test"), "test", repeated=True)
    expected = {"k": ("train", "val"), "f": ("pir_train", "pir_val"), "p": ("verify_train", "verify_val")}
    for folder, (train, val) in expected.items():
        ds = dataset("rsitmd", tmp_path / folder)
        roles = ds.default_splits()
        assert (roles["train"], roles["val"], roles["test"]) == (train, val, "test")
        names = {role: set(ds.load_split(s, check_images=False).image_names) for role, s in roles.items()}
        assert not names["train"] & names["val"] and not (names["train"] | names["val"]) & names["test"]


def test_auto_prefers_the_original_format_per_split(tmp_path):
    write_karpathy(tmp_path / "dataset_RSITMD.json", CONTENT)
    write_finetune(tmp_path / "finetune", "rsitmd", CONTENT)
    ds = dataset("rsitmd", tmp_path)
    assert ds.available_splits() == ["train", "val", "test", "trainval", "pir_train", "pir_val"]
    assert ds.load_split("test", check_images=False).annotations["format"] == "karpathy"
    assert ds.load_split("pir_val", check_images=False).annotations["format"] == "finetune"
    forced = dataset("rsitmd", tmp_path, format="finetune")
    assert forced.load_split("test", check_images=False).annotations["format"] == "finetune"
    assert "finetune" in forced.describe()["splits"]["test"]


def test_bad_format_option(tmp_path):
    write_karpathy(tmp_path / "dataset_RSITMD.json", CONTENT)
    with pytest.raises(DataError, match="'coco' is not a format RSITMD is read from.*karpathy"):
        dataset("rsitmd", tmp_path, format="coco")
    with pytest.raises(DataError, match="No precomp annotation file of RSITMD.*Formats found there: karpathy"):
        dataset("rsitmd", tmp_path, format="precomp")
    with pytest.raises(ConfigError, match="Unknown dataset option.*colour"):
        FACTORIES["rsitmd"](tmp_path, {"colour": "red"})
    assert FACTORIES["rsitmd"](tmp_path, {"format": "karpathy"}).available_splits()[0] == "train"


def test_only_test_files_are_enough_and_a_missing_split_names_its_file(tmp_path):
    write_finetune(tmp_path, "rsitmd", of_split(CONTENT, "test"))
    ds = dataset("rsitmd", tmp_path)
    assert ds.available_splits() == ["test"]
    assert ds.load_split("test", check_images=False).n_images == 6
    with pytest.raises(DataError) as err:
        ds.load_split("train")
    assert "dataset_RSITMD.json (karpathy)" in str(err.value) and "RSITMD.csv (csv)" in str(err.value)
    assert "Found: test from" in str(err.value) and "rsitmd_test.json" in str(err.value)
    with pytest.raises(DataError, match="rsitmd_val.json holds split 'pir_val', not 'val'"):
        ds.load_split("val")
    with pytest.raises(DataError, match="RSITMD has no split 'dev'. Its splits: train"):
        ds.load_split("dev")


def test_ucm_precomp_has_no_official_test(tmp_path):
    items = make_items({"train": 6, "val": 3}, classed=False)
    write_precomp(tmp_path, of_split(items, "train"), "train", repeated=False)
    write_precomp(tmp_path, of_split(items, "val"), "test", repeated=True)
    with pytest.raises(DataError, match=r"test_caps.txt \+ test_filename.txt holds split 'val', not 'test'"):
        dataset("ucm", tmp_path).load_split("test")


def test_no_data_root_or_no_data_gives_download_help(tmp_path):
    with pytest.raises(DataError) as err:
        dataset("rsitmd", None)
    message = str(err.value)
    assert "needs --data-root" in message and "github.com/xiaoyuan1996/AMFMN/tree/master/RSITMD" in message
    assert "<data-root>/dataset_RSITMD.json" in message and "<data-root>/images/" in message
    assert "never downloads" in message
    with pytest.raises(DataError, match="is not a folder.*201528014227051/RSICD_optimal"):
        dataset("rsicd", tmp_path / "absent")
    with pytest.raises(DataError, match="No annotation file of NWPU-Captions under.*dataset_nwpu.json"):
        dataset("nwpu", tmp_path)


def test_other_datasets_folders_are_not_searched_and_ties_are_reported(tmp_path):
    write_precomp(tmp_path / "rsicd_precomp", make_items({"test": 2}, ext=".jpg"), "test", repeated=True)
    write_precomp(tmp_path / "rsitmd_precomp", of_split(CONTENT, "test"), "test", repeated=True)
    assert load("rsitmd", tmp_path, "test").n_images == 6
    write_precomp(tmp_path / "copy" / "rsitmd_precomp", of_split(CONTENT, "test"), "test", repeated=True)
    with pytest.raises(DataError, match="Several annotation files provide split 'test' of RSITMD equally"):
        load("rsitmd", tmp_path, "test")


def test_broken_file_points_to_the_other_formats(tmp_path):
    items = make_items({"train": 4, "val": 2}, classed=False)
    write_karpathy_split_files(tmp_path / "split", items)
    text = (tmp_path / "split" / "data_val.json").read_text()
    (tmp_path / "split" / "data_val.json").write_text(text[: len(text) // 2])
    write_lines(tmp_path / "lines", items)
    with pytest.raises(DataError) as err:
        load("sydney", tmp_path, "val")
    message = str(err.value)
    assert "data_val.json" in message and "invalid JSON" in message
    assert "can also be read from" in message and "filenames_val.txt" in message and "(lines)" in message
    assert load("sydney", tmp_path, "val", format="lines").n_images == 2


# -- bad records ------------------------------------------------------------------------------------------


def test_whole_file_without_a_split_has_zero_images(tmp_path):
    write_karpathy(tmp_path / "dataset_RSITMD.json", of_split(CONTENT, "train", "test"))
    with pytest.raises(DataError, match=r"dataset_RSITMD.json: split 'val' has zero images.*another format"):
        load("rsitmd", tmp_path, "val")


def test_unknown_split_label_is_an_error_not_a_drop(tmp_path):
    data = karpathy_json(CONTENT)
    data["images"][4]["split"] = "restval"
    write_json(tmp_path / "dataset_RSITMD.json", data)
    with pytest.raises(DataError, match=r"images\[4\] .*split 'restval'; expected one of test, train, val"):
        load("rsitmd", tmp_path, "test")


def test_per_split_file_holding_another_split(tmp_path):
    items = make_items({"test": 3}, classed=False)
    write_json(tmp_path / "data_val.json", karpathy_json(items))
    with pytest.raises(DataError, match=r"data_val.json \(images\[0\].*says split 'test'.*holds split val"):
        load("sydney", tmp_path, "val")


def test_wrong_extension_names_file_and_record(tmp_path):
    items = list(CONTENT)
    items[2] = Item("beach_2.jpg", items[2].split, items[2].captions, "beach")
    write_karpathy(tmp_path / "dataset_RSITMD.json", items)
    with pytest.raises(DataError, match=r"dataset_RSITMD.json \(images\[2\] 'beach_2.jpg'\).*extension '.jpg'"
                                        r".*RSITMD images are .tif/.tiff"):
        load("rsitmd", tmp_path, items[2].split)


def test_duplicate_image_in_a_split(tmp_path):
    items = list(CONTENT)
    items[5] = Item(items[3].name, items[3].split, items[5].captions, items[3].label)
    write_karpathy(tmp_path / "dataset_RSITMD.json", items)
    with pytest.raises(DataError, match=r"images\[5\].*listed twice \(first in .*images\[3\]"):
        load("rsitmd", tmp_path, items[3].split)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(index=st.integers(0, len(CONTENT) - 1), key=st.sampled_from(["filename", "split", "sentences", "raw"]),
       value=st.none() | st.integers() | st.text(max_size=6) | st.lists(st.text(max_size=3), max_size=2))
def test_mangled_dataset_raises_only_data_error(tmp_path, index, key, value):
    data = karpathy_json(CONTENT)
    target = data["images"][index]["sentences"][0] if key == "raw" else data["images"][index]
    target[key] = value
    write_json(tmp_path / "dataset_RSITMD.json", data)
    ds = dataset("rsitmd", tmp_path)
    for name in ds.available_splits():
        try:
            split = ds.load_split(name, check_images=False)
        except DataError:
            continue
        assert split.n_images > 0


# -- images -----------------------------------------------------------------------------------------------


def test_prefixes_are_stripped_and_paths_resolved(tmp_path):
    write_finetune(tmp_path, "rsitmd", CONTENT)
    write_images(tmp_path / "images", [it.name for it in CONTENT])
    ds = dataset("rsitmd", tmp_path)
    train = ds.load_split("pir_train")
    assert train.image_names[0] == of_split(CONTENT, "train")[0].name  # no "train/" in the id
    assert all(p == tmp_path / "images" / n for p, n in zip(train.image_paths, train.image_names))
    assert train.image_labels == [it.label for it in of_split(CONTENT, "train")]


def test_split_folders_and_image_root_option(tmp_path):
    write_finetune(tmp_path / "ann", "rsitmd", CONTENT)
    write_images(tmp_path / "pics", [f"{it.split}/{it.name}" for it in CONTENT])
    for image_root in (str(tmp_path / "pics"), "../pics"):
        test = dataset("rsitmd", tmp_path / "ann", image_root=image_root).load_split("test")
        assert [p.parent.name for p in test.image_paths] == ["test"] * test.n_images
        assert all(p.is_file() for p in test.image_paths)
    with pytest.raises(DataError, match="image root .*nowhere.*is not a folder"):
        dataset("rsitmd", tmp_path / "ann", image_root="nowhere").load_split("test")


def test_absolute_paths_fall_back_to_the_file_name(tmp_path):
    write_json(tmp_path / "sydney_test_data.json", [])  # not a Sydney pattern: ignored
    write_json(tmp_path / "rsitmd_test.json", [{"image": "/home/someone/data/beach_1.tif", "caption": ["a"]}])
    write_images(tmp_path / "images", ["beach_1.tif"])
    assert dataset("rsitmd", tmp_path).load_split("test").image_paths == [tmp_path / "images" / "beach_1.tif"]


def test_ucm_numbering_finds_ucmerced_names(tmp_path):
    items = [Item(f"{n}.tif", "train", ("a", "b"), None) for n in (1, 2, 101, 2100)]
    write_karpathy(tmp_path / "dataset.json", items)
    write_images(tmp_path / "UCMerced_LandUse" / "Images", ["agricultural/agricultural00.tif",
                                                            "agricultural/agricultural01.tif",
                                                            "airplane/airplane00.tif", "tenniscourt/tenniscourt99.tif"])
    train = dataset("ucm", tmp_path).load_split("train")
    assert [p.name for p in train.image_paths] == ["agricultural00.tif", "agricultural01.tif", "airplane00.tif",
                                                   "tenniscourt99.tif"]
    assert train.image_names == ["1.tif", "2.tif", "101.tif", "2100.tif"]
    assert train.image_labels == ["agricultural", "agricultural", "airplane", "tenniscourt"]


def test_nwpu_class_folders(tmp_path):
    write_nwpu(tmp_path / "dataset_nwpu.json", make_items({"test": 4}, ext=".jpg"))
    write_images(tmp_path / "NWPU_images", [f"{it.label}/{it.name}" for it in make_items({"test": 4}, ext=".jpg")])
    test = dataset("nwpu", tmp_path).load_split("test")
    assert all(p.is_file() and p.parent.name == label for p, label in zip(test.image_paths, test.image_labels))


def test_missing_images_fail_or_are_skipped_and_listed(tmp_path):
    write_karpathy(tmp_path / "dataset_RSITMD.json", CONTENT)
    test_items = of_split(CONTENT, "test")
    write_images(tmp_path / "images", [it.name for it in test_items[:4]])
    with pytest.raises(DataError) as err:
        dataset("rsitmd", tmp_path).load_split("test")
    message = str(err.value)
    assert "dataset_RSITMD.json (images[" in message and repr(test_items[4].name) in message
    assert "2 of the split's 6 images are missing" in message and "--allow-missing-images" in message
    test = dataset("rsitmd", tmp_path, allow_missing_images=True).load_split("test")
    assert test.image_names == [it.name for it in test_items[:4]] and test.n_captions == 20
    assert [s["image"] for s in test.annotations["skipped"]] == [it.name for it in test_items[4:]]
    assert test.image_labels == [it.label for it in test_items[:4]]
    owners = np.bincount(test.caption_image)
    assert owners.tolist() == [5, 5, 5, 5]
    write_images(tmp_path / "elsewhere", ["x.tif"])
    with pytest.raises(DataError, match="zero images left"):
        dataset("rsitmd", tmp_path, allow_missing_images=True, image_root="elsewhere").load_split("test")
