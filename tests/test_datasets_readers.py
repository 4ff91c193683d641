"""The annotation readers: one golden test per format family, the bad-input errors, and property tests.

The property tests feed every reader mangled copies of a valid file (truncated, bytes flipped, values of
the wrong type, keys removed, other encodings, empty) and accept exactly two outcomes: records, or a
DataError. Anything else escaping a reader is a bug.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rsitr_bench.datasets.readers import (
    ImageRecord,
    read_coco,
    read_csv,
    read_finetune,
    read_karpathy,
    read_lines,
    read_nwpu,
    read_precomp,
)
from rsitr_bench.errors import DataError
from tests.fixtures.dataset_writers import (
    karpathy_json,
    make_items,
    of_split,
    write_coco,
    write_finetune,
    write_json,
    write_karpathy,
    write_lines,
    write_lsci,
    write_nwpu,
    write_pairs_csv,
    write_precomp,
    write_vtrsbs_csv,
)

ITEMS = make_items({"train": 8, "val": 3, "test": 4})


def as_pairs(records: list[ImageRecord]) -> list[tuple[str, tuple[str, ...]]]:
    return [(r.name, r.captions) for r in records]


def expected_pairs(items) -> list[tuple[str, tuple[str, ...]]]:
    return [(it.name, it.captions) for it in items]


# -- golden tests ---------------------------------------------------------------------------------------


def test_karpathy_reads_raw_text_split_and_order(tmp_path):
    path = write_karpathy(tmp_path / "dataset.json", ITEMS)
    records = read_karpathy(path)
    assert as_pairs(records) == expected_pairs(ITEMS)
    assert [r.split for r in records] == [it.split for it in ITEMS]
    assert records[3].where.startswith("images[3]")


def test_karpathy_uses_raw_not_tokens(tmp_path):
    data = karpathy_json(ITEMS[:1])
    data["images"][0]["sentences"][0].update(raw="There is a piece of farmland .", tokens=["formland"])
    records = read_karpathy(write_json(tmp_path / "d.json", data))
    assert records[0].captions[0] == "There is a piece of farmland ."


def test_karpathy_tab_indented_one_line_and_bom(tmp_path):
    data = karpathy_json(ITEMS)
    (tmp_path / "tab.json").write_text(json.dumps(data, indent="\t"), encoding="utf-8")
    (tmp_path / "bom.json").write_bytes(b"\xef\xbb\xbf" + json.dumps(data, separators=(",", ":")).encode())
    assert as_pairs(read_karpathy(tmp_path / "tab.json")) == as_pairs(read_karpathy(tmp_path / "bom.json"))


def test_nwpu_class_keyed(tmp_path):
    records = read_nwpu(write_nwpu(tmp_path / "dataset_nwpu.json", ITEMS))
    by_name = {r.name: r for r in records}
    assert sorted(by_name) == sorted(it.name for it in ITEMS)
    for it in ITEMS:
        assert by_name[it.name].captions == it.captions
        assert by_name[it.name].label == it.label
        assert by_name[it.name].ref == f"{it.label}/{it.name}"
        assert by_name[it.name].split == it.split


def test_finetune_per_caption_per_image_and_lsci(tmp_path):
    write_finetune(tmp_path, "rsitmd", ITEMS)
    train = read_finetune(tmp_path / "rsitmd_train.json")
    assert as_pairs(train) == expected_pairs(of_split(ITEMS, "train"))
    assert train[0].ref.startswith("train/") and train[0].label == of_split(ITEMS, "train")[0].label
    test = read_finetune(tmp_path / "rsitmd_test.json")
    assert as_pairs(test) == expected_pairs(of_split(ITEMS, "test"))
    write_lsci(tmp_path, "ucm", ITEMS)
    lsci = read_finetune(tmp_path / "ucm_val_data.json")
    assert as_pairs(lsci) == expected_pairs(of_split(ITEMS, "val")) and lsci[0].ref.startswith("UCM/")


def test_finetune_ignores_extra_fields(tmp_path):
    path = write_json(tmp_path / "x.json", [{"image": "test/a.tif", "caption": ["x", "y"], "nouns": ["sea"]}])
    assert as_pairs(read_finetune(path)) == [("a.tif", ("x", "y"))]


@pytest.mark.parametrize("repeated", [False, True], ids=["name-per-image", "name-per-caption"])
def test_precomp_both_layouts(tmp_path, repeated):
    write_precomp(tmp_path, ITEMS, "train", repeated=repeated)
    records = read_precomp(tmp_path / "train_caps.txt", tmp_path / "train_filename.txt")
    assert as_pairs(records) == expected_pairs(ITEMS)


def test_precomp_keeps_blank_lines_and_crlf(tmp_path):
    (tmp_path / "c.txt").write_bytes(b"a .\r\n\r\nc .\r\nd .\r\ne .\r\n")
    (tmp_path / "n.txt").write_bytes(b"x.tif\r\n")
    records = read_precomp(tmp_path / "c.txt", tmp_path / "n.txt")
    assert as_pairs(records) == [("x.tif", ("a .", "", "c .", "d .", "e ."))]


def test_vtrsbs_csv_literal_lists_and_img_id_order(tmp_path):
    records = read_csv(write_vtrsbs_csv(tmp_path / "RSITMD.csv", ITEMS))
    assert as_pairs(records) == expected_pairs(ITEMS)  # rows were sorted by name; img_id restores the order
    assert [r.label for r in records] == [it.label for it in ITEMS]


def test_vtrsbs_csv_without_img_id_keeps_row_order(tmp_path):
    path = tmp_path / "SIDNEY.csv"
    path.write_text(",filename,split,sentence\n0,1.tif,train,\"['a b', \"\"it's\"\"]\"\n1,10.tif,test,\"['c']\"\n")
    assert as_pairs(read_csv(path)) == [("1.tif", ("a b", "it's")), ("10.tif", ("c",))]


def test_pairs_csv_groups_rows_and_reads_gb18030(tmp_path):
    items = [it for it in ITEMS if it.split == "test"]
    path = write_pairs_csv(tmp_path / "rsicd_test.csv", items, encoding="gb18030")
    path.write_bytes(path.read_bytes().replace("café".encode("gb18030"), "中文".encode("gb18030")))
    records = read_csv(path)
    assert [r.name for r in records] == [it.name for it in items]
    assert all(len(r.captions) == 5 for r in records)


def test_coco_groups_annotations_by_image(tmp_path):
    assert as_pairs(read_coco(write_coco(tmp_path / "data_test_UCM.json", ITEMS))) == expected_pairs(ITEMS)


def test_lines_descriptions_without_final_newline(tmp_path):
    items = make_items({"train": 4, "val": 2}, classed=False)
    write_lines(tmp_path, items)
    assert not (tmp_path / "descriptions_SIDNEY.txt").read_text().endswith("\n")
    records = read_lines(tmp_path / "filenames_val.txt", tmp_path / "descriptions_SIDNEY.txt")
    assert as_pairs(records) == expected_pairs(of_split(items, "val"))


# -- bad input: each error names the file and the record and says what to do ------------------------------


def test_truncated_json_names_file_offset_and_remedy(tmp_path):
    text = json.dumps(karpathy_json(ITEMS))
    cut = text[: text.rindex('"dataset"') + len('"dataset"')]
    (tmp_path / "data_val.json").write_text(cut)
    with pytest.raises(DataError) as err:
        read_karpathy(tmp_path / "data_val.json")
    message = str(err.value)
    assert "data_val.json" in message and f"character offset {len(cut)}" in message
    assert "truncated" in message and "Download the file again" in message and "--format" in message


def test_record_without_captions(tmp_path):
    data = karpathy_json(ITEMS)
    data["images"][2]["sentences"] = []
    with pytest.raises(DataError, match=r"d\.json \(images\[2\] .*no captions.*Add the image's sentences"):
        read_karpathy(write_json(tmp_path / "d.json", data))
    with pytest.raises(DataError, match=r"record 0 'test/a.tif'.*no captions"):
        read_finetune(write_json(tmp_path / "f.json", [{"image": "test/a.tif", "caption": []}]))


def test_sentence_without_raw_text(tmp_path):
    data = karpathy_json(ITEMS)
    del data["images"][1]["sentences"][3]["raw"]
    with pytest.raises(DataError, match=r"images\[1\] .*sentence 3.*no 'raw' field"):
        read_karpathy(write_json(tmp_path / "d.json", data))


def test_precomp_mismatched_line_counts(tmp_path):
    write_precomp(tmp_path, ITEMS, "test", repeated=True)
    names = tmp_path / "test_filename.txt"
    names.write_text("".join(names.read_text().splitlines(keepends=True)[:-3]))
    with pytest.raises(DataError) as err:
        read_precomp(tmp_path / "test_caps.txt", names)
    message = str(err.value)
    assert "test_filename.txt" in message and f"{5 * len(ITEMS) - 3} file-name lines" in message
    assert f"{5 * len(ITEMS)} caption lines of test_caps.txt" in message and "download both again" in message


def test_zero_images_in_a_file(tmp_path):
    with pytest.raises(DataError, match=r"rsitmd_val\.json: the file holds zero images"):
        read_finetune(write_json(tmp_path / "rsitmd_val.json", []))
    (tmp_path / "c.txt").write_text("")
    (tmp_path / "n.txt").write_text("")
    with pytest.raises(DataError, match="zero images"):
        read_precomp(tmp_path / "c.txt", tmp_path / "n.txt")


def test_invalid_utf8_names_byte_offset(tmp_path):
    (tmp_path / "c.txt").write_bytes(b"fine\n\xff\xfebad\n")
    (tmp_path / "n.txt").write_text("a.tif\na.tif\n")
    with pytest.raises(DataError, match=r"c\.txt \(byte offset 5\).*0xff.*Re-save the file as UTF-8"):
        read_precomp(tmp_path / "c.txt", tmp_path / "n.txt")


def test_csv_python_literal_required(tmp_path):
    path = tmp_path / "UCM_captions.csv"
    path.write_text(",filename,img_id,split,sent_id,sentence\n0,1.tif,0,train,[0],\"['a', 'b'\"\n")
    with pytest.raises(DataError, match=r"line 2 '1.tif'.*not a Python list literal"):
        read_csv(path)


def test_coco_caption_for_unknown_image(tmp_path):
    data = {"images": [{"id": 1, "file_name": "1.tif"}], "annotations": [{"image_id": 2, "caption": "x"}]}
    with pytest.raises(DataError, match=r"annotations\[0\].*image id 2, which no image record has"):
        read_coco(write_json(tmp_path / "c.json", data))


def test_lines_name_without_description(tmp_path):
    (tmp_path / "d.txt").write_text("1 a\n1 b")
    (tmp_path / "n.txt").write_text("1.tif\n2.tif\n")
    with pytest.raises(DataError, match=r"n\.txt \(line 2 '2.tif'\).*no line starts with '2'"):
        read_lines(tmp_path / "n.txt", tmp_path / "d.txt")


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match=r"nope\.json: the file does not exist"):
        read_karpathy(tmp_path / "nope.json")


# -- property tests: mangled files either parse or raise DataError ----------------------------------------

SMALL = make_items({"train": 2, "val": 1, "test": 1})
SCALARS = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5)
JSON_VALUES = st.recursive(
    SCALARS, lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=5), kids, max_size=3),
    max_leaves=6)


def _json_base(writer) -> object:
    def build(tmp: Path) -> object:
        writer(tmp)
        return json.loads(next(tmp.glob("*.json")).read_text())
    return build


def _paths(value, prefix=()):
    yield prefix
    if isinstance(value, dict):
        for key, child in value.items():
            yield from _paths(child, (*prefix, key))
    elif isinstance(value, list):
        for k, child in enumerate(value):
            yield from _paths(child, (*prefix, k))


@st.composite
def mangled_json(draw, base: object) -> bytes:
    """A valid json document with one value replaced or one key removed, then maybe byte-damaged."""
    doc = json.loads(json.dumps(base))
    paths = list(_paths(doc))
    target = draw(st.sampled_from(paths))
    if target:
        parent = doc
        for step in target[:-1]:
            parent = parent[step]
        if isinstance(parent, dict) and draw(st.booleans()):
            del parent[target[-1]]
        else:
            parent[target[-1]] = draw(JSON_VALUES)
    else:
        doc = draw(JSON_VALUES)
    return draw(damaged(json.dumps(doc).encode("utf-8")))


@st.composite
def damaged(draw, data: bytes) -> bytes:
    """Intact, truncated, a byte replaced, re-encoded (UTF-16, Latin-1) or emptied."""
    kind = draw(st.sampled_from(["intact", "truncate", "flip", "utf16", "latin1", "empty"]))
    if kind == "truncate":
        return data[: draw(st.integers(0, max(0, len(data) - 1)))]
    if kind == "flip" and data:
        at = draw(st.integers(0, len(data) - 1))
        return data[:at] + bytes([draw(st.integers(0, 255))]) + data[at + 1:]
    if kind == "utf16":
        return data.decode("utf-8", "replace").encode("utf-16")
    if kind == "latin1":
        return data.decode("utf-8", "replace").replace("e", "é").encode("latin-1", "replace")
    if kind == "empty":
        return b""
    return data


def _outcome(read, *paths: Path) -> None:
    try:
        records = read(*paths)
    except DataError as exc:
        assert str(exc)
        return
    assert records and all(isinstance(r, ImageRecord) and isinstance(r.ref, str) and r.captions for r in records)
    assert all(isinstance(c, str) for r in records for c in r.captions)


FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

JSON_READERS = {
    "karpathy": (read_karpathy, lambda tmp: write_karpathy(tmp / "d.json", SMALL)),
    "nwpu": (read_nwpu, lambda tmp: write_nwpu(tmp / "d.json", SMALL)),
    "finetune-train": (read_finetune, lambda tmp: write_finetune(tmp, "x", SMALL, {"train": "train"})),
    "finetune-test": (read_finetune, lambda tmp: write_finetune(tmp, "x", SMALL, {"test": "test"})),
    "lsci": (read_finetune, lambda tmp: write_lsci(tmp, "ucm", of_split(SMALL, "train"))),
    "coco": (read_coco, lambda tmp: write_coco(tmp / "d.json", SMALL)),
}


@pytest.mark.parametrize("reader", sorted(JSON_READERS))
def test_json_readers_raise_only_data_error(tmp_path_factory, reader):
    read, write = JSON_READERS[reader]
    base = _json_base(write)(tmp_path_factory.mktemp("base"))
    target = tmp_path_factory.mktemp("fuzz") / "mangled.json"

    @FUZZ
    @given(data=mangled_json(base))
    def check(data: bytes) -> None:
        target.write_bytes(data)
        _outcome(read, target)

    check()


@FUZZ
@given(caps=st.binary(max_size=60) | damaged(b"a .\nb .\n\nc .\nd .\n"),
       names=st.binary(max_size=30) | damaged(b"x.tif\n") | damaged(b"x.tif\n" * 5))
def test_precomp_raises_only_data_error(tmp_path, caps, names):
    (tmp_path / "c.txt").write_bytes(caps)
    (tmp_path / "n.txt").write_bytes(names)
    _outcome(read_precomp, tmp_path / "c.txt", tmp_path / "n.txt")


@FUZZ
@given(descriptions=st.binary(max_size=60) | damaged(b"1 a\n1 b\n2 c"),
       names=st.binary(max_size=20) | damaged(b"1.tif\n2.tif\n"))
def test_lines_raise_only_data_error(tmp_path, descriptions, names):
    (tmp_path / "d.txt").write_bytes(descriptions)
    (tmp_path / "n.txt").write_bytes(names)
    _outcome(read_lines, tmp_path / "n.txt", tmp_path / "d.txt")


VTRSBS = b",filename,img_id,split,label,sent_id,sentence\n0,a_1.tif,0,train,a,\"[0, 1]\",\"['x y', \"\"it's\"\"]\"\n"


@FUZZ
@given(data=damaged(VTRSBS) | damaged(b"filename,title\na.jpg,x\na.jpg,y\nb.jpg,z\n") | st.binary(max_size=80)
       | st.lists(st.lists(st.text(max_size=8), max_size=5), max_size=4).map(
           lambda rows: "\n".join(",".join(r) for r in [["", "filename", "split", "sentence"], *rows]).encode()))
def test_csv_raises_only_data_error(tmp_path, data):
    (tmp_path / "x.csv").write_bytes(data)
    _outcome(read_csv, tmp_path / "x.csv")
