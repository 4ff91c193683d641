"""The checkpoint catalog: the shipped file, lookup, malformed files, fetching by name, and the list rows."""

from __future__ import annotations

import copy
from pathlib import Path

import open_clip
import pytest
import yaml

from rsitr_bench.checkpoints import (
    CATALOG_PATH,
    CatalogEntry,
    CatalogError,
    CheckpointVersionError,
    UnknownCheckpointError,
    get_entry,
    is_catalog_name,
    load_catalog,
    resolve_backbone,
    resolve_checkpoint,
)
from rsitr_bench.errors import UserError

PACKAGES = Path(__file__).resolve().parents[1] / "rsitr_bench" / "data" / "packages.yaml"
REQUIRED = {
    "openai-vit-b-32": ("open_clip:ViT-B-32/openai", "ViT-B-32"),
    "laion2b-vit-b-32": ("open_clip:ViT-B-32/laion2b_s34b_b79k", "ViT-B-32"),
    "remoteclip-rn50": ("hf://chendelong/RemoteCLIP/RemoteCLIP-RN50.pt@", "RN50"),
    "remoteclip-vit-b-32": ("hf://chendelong/RemoteCLIP/RemoteCLIP-ViT-B-32.pt@", "ViT-B-32"),
    "remoteclip-vit-l-14": ("hf://chendelong/RemoteCLIP/RemoteCLIP-ViT-L-14.pt@", "ViT-L-14"),
    "georsclip-vit-b-32": ("hf://Zilun/GeoRSCLIP/ckpt/RS5M_ViT-B-32.pt@", "ViT-B-32"),
    "georsclip-vit-b-32-ret2": ("hf://Zilun/GeoRSCLIP/ckpt/RS5M_ViT-B-32_RET-2.pt@", "ViT-B-32"),
    "mps-clip-rsicd": ("hf://lcrucial1f/MPS-CLIP-Models/MPS-CLIP_ViT-B-32_RSICD_rmean35.24.pth@", "ViT-B-32"),
    "mps-clip-rsitmd": ("hf://lcrucial1f/MPS-CLIP-Models/MPS-CLIP_ViT-B-32_RSITMD_rmean48.86.pth@", "ViT-B-32"),
}


def _shipped_raw() -> dict:
    return yaml.safe_load(CATALOG_PATH.read_text(encoding="utf-8"))


def _write(tmp_path: Path, raw: dict) -> Path:
    path = tmp_path / "catalog.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    return path


def _hf_entry(source: str, file: str, sha256: str | None) -> dict:
    """A valid backbone entry pointing at ``source``, built from the shipped RemoteCLIP entry."""
    raw = _shipped_raw()
    entry = copy.deepcopy(next(e for e in raw["checkpoints"] if e["name"] == "remoteclip-vit-b-32"))
    entry.update(name="test-weights", source=source, file=file, sha256=sha256, published=[])
    return {"catalog_version": 1, "checkpoints": [entry]}


# --- the shipped catalog ------------------------------------------------------------------------------------

def test_shipped_catalog_validates_and_holds_the_required_releases():
    catalog = load_catalog()
    assert set(REQUIRED) <= set(catalog)
    for name, (source_prefix, model) in REQUIRED.items():
        entry = catalog[name]
        assert entry.source.startswith(source_prefix), name
        assert entry.architecture.model == model, name


def test_every_shipped_entry_spells_out_every_field():
    """Optional facts are written as null, never left out, so a reader sees what is unknown."""
    fields = set(CatalogEntry.model_fields)
    for raw in _shipped_raw()["checkpoints"]:
        assert set(raw) == fields, raw["name"]
        assert raw["note"].strip() and raw["licence"].strip() and raw["model_card"].startswith("https://")


def test_shipped_architectures_exist_in_open_clip_and_match_its_tags():
    models = set(open_clip.list_models())
    for entry in load_catalog().values():
        assert entry.architecture.model in models, entry.name
        ref = entry.source_ref
        if ref.kind == "open_clip":
            cfg = open_clip.get_pretrained_cfg(ref.model, ref.tag)
            assert cfg, entry.name
            assert bool(cfg.get("quick_gelu", False)) == entry.architecture.quick_gelu, entry.name


def test_entries_without_a_digest_say_so_in_their_note():
    for entry in load_catalog().values():
        if entry.sha256 is None:
            assert "sha256" in entry.note, entry.name


def test_released_mps_clip_checkpoints_carry_card_numbers_and_an_evaluation_preset():
    from rsitr_bench.methods.mps_clip.presets import SPECS

    packages = {p["name"]: p["dataset"] for p in yaml.safe_load(PACKAGES.read_text(encoding="utf-8"))["packages"]}
    methods = {spec.name for spec in SPECS}
    expected = {"mps-clip-rsicd": ("rsicd", 35.24), "mps-clip-rsitmd": ("rsitmd", 48.86)}
    for name, (dataset, mean_recall) in expected.items():
        entry = get_entry(name)
        assert entry.layout == "mps-clip-reference" and entry.variant == "parallel"
        assert [(r.dataset, r.mean_recall) for r in entry.published] == [(dataset, mean_recall)]
        preset = entry.evaluate_on
        assert preset.dataset == dataset and packages[preset.data_package] == dataset
        assert preset.method in methods and preset.method in entry.methods


# --- lookup ---------------------------------------------------------------------------------------------------

def test_unknown_name_lists_close_matches_first_then_every_known_name():
    with pytest.raises(UnknownCheckpointError) as err:
        get_entry("remoteclip-vit-b32")
    message = str(err.value)
    assert isinstance(err.value, UserError)
    assert "Did you mean remoteclip-vit-b-32" in message
    known = message.split("Known checkpoints: ")[1]
    assert known.startswith("remoteclip-vit-b-32")
    assert all(name in known for name in load_catalog())


def test_name_at_version_pins_the_entry():
    assert get_entry("remoteclip-vit-b-32@1").name == "remoteclip-vit-b-32"
    with pytest.raises(CheckpointVersionError, match="update the pin to remoteclip-vit-b-32@1"):
        get_entry("remoteclip-vit-b-32@7")


@pytest.mark.parametrize(("value", "expected"), [
    ("remoteclip-vit-b-32", True), ("mps-clip-rsitmd@1", True), ("mps-clip-rsitmd@9", True),
    ("openai", False), ("laion2b_s34b_b79k", False), ("weights/remoteclip-vit-b-32.pt", False), ("", False),
    (None, False),
])
def test_is_catalog_name_routes_names_but_not_tags_or_paths(value, expected):
    assert is_catalog_name(value) is expected


# --- malformed files ------------------------------------------------------------------------------------------

def _break(raw: dict, name: str, change) -> dict:
    raw = copy.deepcopy(raw)
    change(next(e for e in raw["checkpoints"] if e["name"] == name))
    return raw


@pytest.mark.parametrize(("name", "change", "field", "says"), [
    ("remoteclip-rn50", lambda e: e.update(verified="yes"), "verified", "boolean"),
    ("remoteclip-rn50", lambda e: e["architecture"].update(quick_gelu=1), "architecture.quick_gelu", "boolean"),
    ("georsclip-vit-b-32", lambda e: e.pop("licence"), "licence", "Field required"),
    ("remoteclip-vit-l-14", lambda e: e.update(sha256="FCC2A7"), "sha256", "pattern"),
    ("openai-vit-b-32", lambda e: e.update(size_mb="605 MB"), "size_mb", "number"),
    ("openai-vit-b-32", lambda e: e.update(colour="blue"), "colour", "Extra inputs"),
    ("mps-clip-rsitmd", lambda e: e["published"][0].update(mean_recall=50.0), "published.0",
     "not the mean of the six recalls"),
    ("mps-clip-rsicd", lambda e: e.update(evaluate_on=None), "(the entry itself)", "evaluate_on"),
    ("remoteclip-vit-b-32", lambda e: e.update(file="RemoteCLIP-RN50.pt"), "(the entry itself)",
     "differs from the path"),
    ("remoteclip-vit-b-32", lambda e: e.update(source="chendelong/RemoteCLIP"), "source", "hf://OWNER/REPO"),
    ("openai-vit-b-32", lambda e: e["architecture"].update(model="RN50"), "(the entry itself)",
     "names open_clip model 'ViT-B-32'"),
])
def test_malformed_entry_names_the_entry_and_the_field(tmp_path, name, change, field, says):
    path = _write(tmp_path, _break(_shipped_raw(), name, change))
    with pytest.raises(CatalogError) as err:
        load_catalog(path)
    message = str(err.value)
    assert str(path) in message
    assert f"entry {name!r}, field {field}" in message
    assert says in message


def test_entry_without_a_name_is_named_by_its_position(tmp_path):
    path = _write(tmp_path, _break(_shipped_raw(), "remoteclip-rn50", lambda e: e.pop("name")))
    with pytest.raises(CatalogError, match=r"entry #3, field name: Field required"):
        load_catalog(path)


@pytest.mark.parametrize(("text", "says"), [
    ("checkpoints: [\n", "not valid YAML"),
    ("- just a list\n", "must be a mapping"),
    ("catalog_version: 2\ncheckpoints: []\n", "reads version 1"),
])
def test_unreadable_catalog_file_says_what_is_wrong(tmp_path, text, says):
    path = tmp_path / "catalog.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(CatalogError, match=says):
        load_catalog(path)


def test_duplicate_names_are_refused(tmp_path):
    raw = _shipped_raw()
    raw["checkpoints"].append(copy.deepcopy(raw["checkpoints"][0]))
    with pytest.raises(CatalogError, match="lists 'openai-vit-b-32' twice"):
        load_catalog(_write(tmp_path, raw))


# --- fetching by name -----------------------------------------------------------------------------------------

def test_resolve_hf_entry_fetches_once_and_verifies_sha256(hf_hub, tmp_path):
    data = b"weights of a tiny test model" * 100
    digest = hf_hub.add_file("acme/rs-clip", "ckpt/model.pt", data)
    commit = hf_hub.commit("acme/rs-clip")
    path = _write(tmp_path, _hf_entry(f"hf://acme/rs-clip/ckpt/model.pt@{commit}", "ckpt/model.pt", digest))
    entry = load_catalog(path)["test-weights"]

    first = resolve_checkpoint(entry)
    assert first.path.read_bytes() == data
    assert first.sha256 == digest and first.downloaded
    assert first.source == f"hf://acme/rs-clip/ckpt/model.pt@{commit}"
    second = resolve_checkpoint(entry)
    assert second.path == first.path and not second.downloaded


def test_resolve_hf_entry_refuses_a_file_whose_sha256_differs(hf_hub, tmp_path):
    hf_hub.add_file("acme/rs-clip", "model.pt", b"the bytes the hub serves")
    wrong = "0" * 64
    path = _write(tmp_path, _hf_entry("hf://acme/rs-clip/model.pt@main", "model.pt", wrong))
    with pytest.raises(UserError) as err:
        resolve_checkpoint(load_catalog(path)["test-weights"])
    assert wrong in str(err.value)


def test_resolve_hf_hub_model_entry_fetches_its_weights_file(hf_hub, tmp_path):
    digest = hf_hub.add_file("acme/tiny-clip", "open_clip_model.safetensors", b"tiny open_clip weights")
    path = _write(tmp_path, _hf_entry("hf-hub:acme/tiny-clip@main", "open_clip_model.safetensors", digest))
    fetched = resolve_checkpoint(load_catalog(path)["test-weights"])
    assert fetched.sha256 == digest and fetched.path.read_bytes() == b"tiny open_clip weights"


def test_resolve_open_clip_entry_downloads_from_the_repo_open_clip_names(hf_hub):
    entry = get_entry("openai-vit-b-32")
    repo = open_clip.get_pretrained_cfg("ViT-B-32", "openai")["hf_hub"].strip("/")
    digest = hf_hub.add_file(repo, entry.file, b"openai vit-b-32 stand-in")
    fetched = resolve_checkpoint(entry)
    assert fetched.sha256 == digest and fetched.path.name == entry.file


def test_resolve_backbone_refuses_another_layout_or_architecture():
    with pytest.raises(UserError, match="--method mps-clip-pre-restore"):
        resolve_backbone("mps-clip-rsitmd", "ViT-B-32")
    with pytest.raises(UserError, match="--set method.model=ViT-L-14"):
        resolve_backbone("remoteclip-vit-l-14", "ViT-B-32")


# --- list rows ------------------------------------------------------------------------------------------------

def test_pretrained_rows_hold_catalog_embedded_and_open_clip_weights():
    from rsitr_bench.checkpoints.listing import pretrained_rows

    rows = {row.name: row for row in pretrained_rows()}
    assert set(load_catalog()) <= set(rows)
    assert rows["mps-clip-rsitmd"].verified == "no" and "parallel" in rows["mps-clip-rsitmd"].used_for
    assert rows["remoteclip-vit-l-14"].size == "1.71 GB"
    assert rows["rsitr-tiny/synthetic-rs"].source.startswith("embedded")
    assert {f"{m}/{t}" for m, t in open_clip.list_pretrained()} <= set(rows)
    assert rows["ViT-B-32/openai"].architecture == "ViT-B-32 (quick_gelu)"


def test_model_rows_and_table_list_architectures_with_their_weights():
    from rsitr_bench.checkpoints.listing import model_rows
    from rsitr_bench.cli.lists import list_target_table

    rows = {row.model: row for row in model_rows()}
    assert rows["rsitr-tiny"].open_clip_tags == "synthetic-rs"
    assert "remoteclip-vit-b-32" in rows["ViT-B-32"].catalog and "laion2b_s34b_b79k" in rows["ViT-B-32"].open_clip_tags
    table = list_target_table("pretrained")
    assert table.splitlines()[0].split() == ["name", "architecture", "source", "verified", "size", "licence", "for"]
