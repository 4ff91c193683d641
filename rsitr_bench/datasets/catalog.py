"""Per-dataset facts: names, sources, expected layout, annotation files, split names and sizes.

Everything a loader must *know* rather than compute lives here, as data: which file of which format holds
which split (an AMFMN "test" file of UCM or Sydney is the official **val** split), the official split sizes
a test can pin, and where the data comes from. Counts are those of ``docs/datasets.md``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import PurePosixPath

OFFICIAL = {"train": "train", "val": "val", "test": "test"}
PIR = {"train": "pir_train", "val": "pir_val", "test": "test"}

# What each split name means, in the order splits are listed.
SPLIT_MEANINGS: dict[str, str] = {
    "train": "official train split",
    "val": "official validation split",
    "test": "official test split",
    "trainval": "official train + val (what RSITR papers train on)",
    "pir_train": "PIR/HarMA training re-split of train + val (not the official train)",
    "pir_val": "PIR/HarMA validation re-split of train + val (not the official val)",
    "verify_train": "AMFMN/MCRN *_verify training re-split of the precomp train file",
    "verify_val": "AMFMN/MCRN *_verify validation re-split of the precomp train file",
    "coco_train": "jwdevx COCO re-split, train part (non-official: mixes official splits)",
    "coco_val": "jwdevx COCO re-split, val part (non-official: mixes official splits)",
    "coco_test": "jwdevx COCO re-split, test part (non-official: NOT the official test)",
}

# Train/val pairs that are disjoint and never touch test, most standard first (see default_splits).
SELECTION_PAIRS = (("train", "val"), ("pir_train", "pir_val"), ("verify_train", "verify_val"))

# Folder prefixes that annotation files put before image names (HarMA, test-LSCI, Jbarata98 copies).
COMMON_PREFIXES = ("train/", "val/", "test/", "images/", "imgs/")


@dataclass(frozen=True)
class SourcePattern:
    """Annotation files of one format that a dataset ships in.

    Attributes:
        format: the reader family (a key of :data:`rsitr_bench.datasets.readers.FORMATS`).
        regex: the file name, matched whole and case-insensitively; group ``s`` captures the split label
            of a per-split file.
        splits: split label -> split name. For a per-split file the label comes from the file name; for a
            whole-dataset file (``whole``) from each record's ``split`` field.
        example: the file name shown in help, with ``{s}`` standing for the label.
        whole: the file holds every split and its records carry their split label.
        companion: a second file the reader needs, in the same folder (``{s}`` for the label).
    """

    format: str
    regex: str
    splits: Mapping[str, str]
    example: str
    whole: bool = False
    companion: str | None = None

    def file_names(self, label: str) -> list[str]:
        """The file (and its companion) of one split label, as help shows them."""
        return [self.example.format(s=label)] + ([self.companion.format(s=label)] if self.companion else [])

    def files_for(self, split: str) -> list[str]:
        """The file names (with companions) that provide ``split``, for a missing-split message."""
        return sorted({" + ".join(self.file_names(label)) for label, name in self.splits.items() if name == split})


def _precomp(train: str, test: str) -> tuple[SourcePattern, SourcePattern]:
    return (
        SourcePattern("precomp", r"(?P<s>train|test)_caps\.txt", {"train": train, "test": test},
                      "{s}_caps.txt", companion="{s}_filename.txt"),
        SourcePattern("precomp", r"(?P<s>train|val)_caps_verify\.txt",
                      {"train": "verify_train", "val": "verify_val"}, "{s}_caps_verify.txt",
                      companion="{s}_filename_verify.txt"),
    )


def _karpathy_split_files() -> SourcePattern:
    return SourcePattern("karpathy", r"data_(?P<s>train|val|test)\.json", OFFICIAL, "data_{s}.json")


def _finetune(ds: str, names: Mapping[str, str]) -> tuple[SourcePattern, ...]:
    return (
        SourcePattern("finetune", rf"{ds}_(?P<s>train|val|test)\.json", names, f"{ds}_{{s}}.json"),
        SourcePattern("finetune", rf"{ds}_(?P<s>train|test)1\.json", names, f"{ds}_{{s}}1.json"),
        SourcePattern("finetune", rf"{ds}_(?P<s>train|val|test)_data\.json", names, f"{ds}_{{s}}_data.json"),
    )


def _pairs_csv(*stems: str) -> tuple[SourcePattern, ...]:
    return tuple(SourcePattern("csv", rf"{re.escape(stem)}_(?P<s>test)\.csv", {"test": "test"}, f"{stem}_{{s}}.csv")
                 for stem in stems)


_CLASS_PREFIX = re.compile(r"([a-z]+(?:_[a-z]+)*)_\d+")


def class_from_prefix(name: str) -> str | None:
    """``sparseresidential_3814.tif`` -> ``sparseresidential``; None for names without a class prefix."""
    match = _CLASS_PREFIX.fullmatch(PurePosixPath(name).stem)
    return match.group(1) if match else None


# UCMerced_LandUse classes in sorted order: UCM-Captions image n is class (n - 1) // 100.
UCM_CLASSES = ("agricultural", "airplane", "baseballdiamond", "beach", "buildings", "chaparral",
               "denseresidential", "forest", "freeway", "golfcourse", "harbor", "intersection",
               "mediumresidential", "mobilehomepark", "overpass", "parkinglot", "river", "runway",
               "sparseresidential", "storagetanks", "tenniscourt")


def ucmerced_name(name: str) -> tuple[str, str] | None:
    """UCM-Captions ``n.tif`` -> (class, UCMerced file name): 1.tif is agricultural00.tif, 101.tif airplane00.tif.

    The mapping was checked pixel by pixel on real files; one public copy is off by one, which would
    silently give every image its neighbour's captions.
    """
    path = PurePosixPath(name)
    if not path.stem.isdigit() or not 1 <= int(path.stem) <= 100 * len(UCM_CLASSES):
        return None
    n = int(path.stem) - 1
    cls = UCM_CLASSES[n // 100]
    return cls, f"{cls}{n % 100:02d}{path.suffix}"


def _ucm_class(name: str) -> str | None:
    mapped = ucmerced_name(name)
    return mapped[0] if mapped else None


def _ucm_alternatives(name: str) -> list[str]:
    mapped = ucmerced_name(name)
    return [f"{mapped[0]}/{mapped[1]}", mapped[1]] if mapped else []


@dataclass(frozen=True)
class DatasetInfo:
    """What rsitr-bench knows about one dataset without reading any file.

    Attributes:
        name: the registered name (``--dataset NAME``).
        title: the dataset's usual name.
        aliases: folder-name words that mean this dataset (folders of *other* datasets are not searched).
        source: where the official copy is published.
        mirrors: other places the images and annotations can be had.
        layout: the expected layout under ``--data-root``: (path, what it holds) pairs.
        image_extensions: the image file suffixes; any other suffix in an annotation file is an error.
        image_dirs: image folders tried, in order, under the data root when no image root is given.
        prefixes: path prefixes stripped from annotation image paths (besides :data:`COMMON_PREFIXES`).
        patterns: the annotation files, most preferred first within each format.
        sizes: expected (images, captions) per split name, from the published files.
        label_of: the scene class of an image from its file name, where the name encodes it.
        alternative_names: other relative paths under which an image may be stored (UCMerced names).
    """

    name: str
    title: str
    aliases: tuple[str, ...]
    source: str
    mirrors: tuple[str, ...]
    layout: tuple[tuple[str, str], ...]
    image_extensions: tuple[str, ...]
    image_dirs: tuple[str, ...]
    prefixes: tuple[str, ...]
    patterns: tuple[SourcePattern, ...]
    sizes: Mapping[str, tuple[int, int]]
    label_of: Callable[[str], str | None] | None = None
    alternative_names: Callable[[str], list[str]] | None = None
    formats: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "formats", tuple(dict.fromkeys(p.format for p in self.patterns)))

    def split_names(self) -> list[str]:
        """Every split name some annotation file of this dataset can provide, in the usual order."""
        names = {name for p in self.patterns for name in p.splits.values()}
        if {"train", "val"} <= names:
            names.add("trainval")
        return [name for name in SPLIT_MEANINGS if name in names]

    def download_help(self) -> str:
        """Where to get the dataset and where its files go: the message of every "data not found" error."""
        mirrors = "; ".join(self.mirrors)
        layout = "; ".join(f"<data-root>/{path} ({what})" for path, what in self.layout)
        return (f"rsitr-bench never downloads data. Get {self.title} from {self.source} (other copies: "
                f"{mirrors}) and lay it out as {layout}. Any annotation format listed in docs/datasets.md "
                f"works in place of the one shown.")


def _sizes(**splits: int) -> dict[str, tuple[int, int]]:
    """Expected sizes, five captions per image for every split listed."""
    return {name: (n, 5 * n) for name, n in splits.items()}


RSICD = DatasetInfo(
    name="rsicd",
    title="RSICD",
    aliases=("rsicd",),
    source="github.com/201528014227051/RSICD_optimal (dataset_rsicd.json; images via the Baidu/Google "
           "Drive links of its README: the GitHub zip is a Git LFS pointer)",
    mirrors=("Hugging Face dataset lcrucial1f/MPS-CLIP_Data (rsicd.zip)", "the SkyScript benchmark bundle "
             "RSICD.zip", "annotations only: xiaoyuan1996/AMFMN, seekerhuang/HarMA"),
    layout=(("dataset_rsicd.json", "the annotations"),
            ("RSICD_images/", "the 10,921 JPEGs 00001.jpg, airport_1.jpg, ... (or images/)")),
    image_extensions=(".jpg", ".jpeg"),
    image_dirs=("RSICD_images", "images", "imgs"),
    prefixes=("rsicd_images/", "RSICD_images/"),
    patterns=(
        SourcePattern("karpathy", r"dataset_rsicd\.json", OFFICIAL, "dataset_rsicd.json", whole=True),
        _karpathy_split_files(),
        *_finetune("rsicd", PIR),
        SourcePattern("coco", r"captions_(?P<s>train|val|test)2017\.json",
                      {"train": "coco_train", "val": "coco_val", "test": "coco_test"}, "captions_{s}2017.json"),
        *_precomp("trainval", "test"),
        SourcePattern("csv", r"rsicd\.csv", OFFICIAL, "RSICD.csv", whole=True),
        *_pairs_csv("rsicd", "RSICD_img_txt_pairs"),
    ),
    sizes={**_sizes(train=8734, val=1094, test=1093, trainval=9828, pir_val=1966, verify_train=7862,
                    verify_val=1966, coco_val=1092, coco_test=1093)},
    label_of=class_from_prefix,
)

RSITMD = DatasetInfo(
    name="rsitmd",
    title="RSITMD",
    aliases=("rsitmd",),
    source="github.com/xiaoyuan1996/AMFMN/tree/master/RSITMD (dataset_RSITMD.json; images via the links "
           "of its README)",
    mirrors=("Hugging Face dataset lcrucial1f/MPS-CLIP_Data (rsitmd.zip)", "the SkyScript benchmark bundle "
             "RSITMD.zip", "annotations only: seekerhuang/HarMA data/finetune, AMFMN rsitmd_precomp"),
    layout=(("dataset_RSITMD.json", "the annotations"),
            ("images/", "the 4,743 TIFFs airport_0.tif, ..., sparseresidential_3814.tif, ...")),
    image_extensions=(".tif", ".tiff"),
    image_dirs=("images", "RSITMD_images", "imgs"),
    prefixes=("rsitmd_images/", "RSITMD_images/"),
    patterns=(
        SourcePattern("karpathy", r"dataset_rsitmd\.json", OFFICIAL, "dataset_RSITMD.json", whole=True),
        _karpathy_split_files(),
        *_finetune("rsitmd", PIR),
        *_precomp("trainval", "test"),
        SourcePattern("csv", r"rsitmd\.csv", OFFICIAL, "RSITMD.csv", whole=True),
        *_pairs_csv("rsitmd", "RSITMD_img_txt_pairs"),
    ),
    sizes=_sizes(train=3432, val=859, test=452, trainval=4291, pir_train=3435, pir_val=856,
                 verify_train=3432, verify_val=859),
    label_of=class_from_prefix,
)

UCM = DatasetInfo(
    name="ucm",
    title="UCM-Captions",
    aliases=("ucm", "ucmcaptions"),
    source="the UCM-Captions dataset.json (e.g. github.com/luna97/clip_captioning_satellitar data/ucm) with "
           "the UCM-Captions images 1.tif ... 2100.tif (or the UCMerced_LandUse images, renamed by class)",
    mirrors=("xiaoyuan1996/RemoteSensingCaptions data/UCM_Captions (COCO json)", "the SkyScript benchmark "
             "bundle ucmcaptions.zip", "zeshiyi/test-LSCI data/finetune"),
    layout=(("dataset.json", "the annotations"),
            ("images/", "the 2,100 TIFFs 1.tif ... 2100.tif (or UCMerced_LandUse/Images/<class>/<class>NN.tif)")),
    image_extensions=(".tif", ".tiff"),
    image_dirs=("images", "imgs", "UCM_captions/imgs", "UCMerced_LandUse/Images", "Images"),
    prefixes=("UCM/", "ucm_images/"),
    patterns=(
        SourcePattern("karpathy", r"dataset(_ucm)?\.json", OFFICIAL, "dataset.json", whole=True),
        _karpathy_split_files(),
        SourcePattern("finetune", r"ucm_(?P<s>train|val|test)_data\.json", OFFICIAL, "ucm_{s}_data.json"),
        SourcePattern("coco", r"data_(?P<s>train|val|test)_ucm\.json", OFFICIAL, "data_{s}_UCM.json"),
        *_precomp("train", "val"),
        SourcePattern("csv", r"ucm_captions\.csv", OFFICIAL, "UCM_captions.csv", whole=True),
        *_pairs_csv("ucmcaptions_img_txt_pairs"),
    ),
    sizes=_sizes(train=1680, val=210, test=210, trainval=1890),
    label_of=_ucm_class,
    alternative_names=_ucm_alternatives,
)

SYDNEY = DatasetInfo(
    name="sydney",
    title="Sydney-Captions",
    aliases=("sydney", "sidney"),
    source="the Sydney-Captions Karpathy json (e.g. github.com/xiaoyuan1996/RemoteSensingCaptions Sydney/, "
           "whose data_val.json is truncated) with the images 1.tif ... 613.tif",
    mirrors=("Jbarata98/remote-sensing-image-captioning (images, dataset_sydney_modified.json)",
             "xiaoyuan1996/AMFMN commit 5a2f013 data/sydney_precomp", "luna97/clip_captioning_satellitar "
             "data/sidney/filenames"),
    layout=(("dataset.json", "the annotations (or data_train.json, data_val.json, data_test.json)"),
            ("images/", "the 613 TIFFs 1.tif ... 613.tif")),
    image_extensions=(".tif", ".tiff"),
    image_dirs=("images", "Sydney_images", "imgs"),
    prefixes=("Sydney_images/", "sydney_images/"),
    patterns=(
        SourcePattern("karpathy", r"dataset(_sydney)?\.json", OFFICIAL, "dataset.json", whole=True),
        _karpathy_split_files(),
        SourcePattern("karpathy", r"dataset_sydney_modified\.json", OFFICIAL, "dataset_sydney_modified.json",
                      whole=True),
        *_precomp("train", "val"),
        SourcePattern("lines", r"filenames_(?P<s>train|val|test)\.txt", OFFICIAL, "filenames_{s}.txt",
                      companion="descriptions_SIDNEY.txt"),
        SourcePattern("csv", r"sidney\.csv", OFFICIAL, "SIDNEY.csv", whole=True),
    ),
    sizes=_sizes(train=497, val=58, test=58, trainval=555, verify_train=397, verify_val=100),
)

NWPU = DatasetInfo(
    name="nwpu",
    title="NWPU-Captions",
    aliases=("nwpu",),
    source="github.com/HaiyanHuang98/NWPU-Captions (dataset_nwpu.json; the images are NWPU-RESISC45, "
           "via the links of its README: the GitHub archive is a Git LFS pointer)",
    mirrors=("annotations of the test split only: mcx-mcx/EBAKER nwpu_test.csv",),
    layout=(("dataset_nwpu.json", "the annotations"),
            ("NWPU_images/", "NWPU-RESISC45 as <class>/<class>_NNN.jpg (45 classes x 700 JPEGs)")),
    image_extensions=(".jpg", ".jpeg"),
    image_dirs=("NWPU_images", "NWPU-RESISC45", "images"),
    prefixes=("NWPU_images/",),
    patterns=(
        SourcePattern("nwpu-json", r"dataset_nwpu\.json", OFFICIAL, "dataset_nwpu.json", whole=True),
        *_pairs_csv("nwpu"),
    ),
    sizes=_sizes(test=3150),
    label_of=class_from_prefix,
)

CATALOG: dict[str, DatasetInfo] = {info.name: info for info in (RSICD, RSITMD, UCM, SYDNEY, NWPU)}
