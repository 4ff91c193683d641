"""rsitr_bench.harness.hub and the backbone weight sources, against the loopback hub of tests/fixtures/hf_server.py."""

from __future__ import annotations

import hashlib
import json
import pickle
import socket
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from rsitr_bench.clip.backbones import _CONFIG_DIR, build_backbone, resolve_pretrained
from rsitr_bench.errors import CheckpointError, NetworkError, UserError
from rsitr_bench.harness import hub

REPO = "acme/tiny"
PAYLOAD = bytes(range(256)) * 4096  # 1 MiB


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def gets(server) -> list:
    return [r for r in server.requests if r.method == "GET"]


@pytest.mark.parametrize("spec, kind, fields", [
    ("hf://acme/tiny/sub/w.safetensors@v1", "hf-file",
     {"repo_id": "acme/tiny", "filename": "sub/w.safetensors", "revision": "v1", "repo_type": "model"}),
    ("hf://datasets/acme/rs/images.zip", "hf-file",
     {"repo_id": "acme/rs", "filename": "images.zip", "revision": None, "repo_type": "dataset"}),
    ("https://huggingface.co/acme/tiny/resolve/main/w.bin", "hf-file",
     {"repo_id": "acme/tiny", "filename": "w.bin", "revision": "main"}),
    ("hf-hub:acme/tiny-clip", "hf-model", {"repo_id": "acme/tiny-clip", "revision": None}),
    ("https://example.org/w.pt", "url", {"url": "https://example.org/w.pt"}),
    ("acme/tiny", "local", {"path": Path("acme/tiny")}),
])
def test_parse_weight_source(spec, kind, fields):
    parsed = hub.parse_weight_source(spec)
    assert parsed.kind == kind
    for name, value in fields.items():
        assert getattr(parsed, name) == value, name


def test_malformed_hub_uri_is_a_user_error():
    with pytest.raises(UserError, match="hf://OWNER/REPO/PATH"):
        hub.parse_weight_source("hf://only-a-repo")


def test_first_download_then_cache_hit_without_any_request(hf_hub):
    hf_hub.add_file(REPO, "sub/w.bin", PAYLOAD)
    first = hub.fetch_hf_file(REPO, "sub/w.bin", sha256=sha(PAYLOAD))
    assert first.downloaded and first.sha256 == sha(PAYLOAD) and first.path.read_bytes() == PAYLOAD
    assert first.source == f"hf://{REPO}/sub/w.bin@{hf_hub.commit(REPO)}"
    assert len(gets(hf_hub)) == 1
    hf_hub.requests.clear()
    again = hub.fetch(f"hf://{REPO}/sub/w.bin")
    assert hf_hub.requests == []
    assert (again.path, again.sha256, again.source, again.downloaded) == (first.path, first.sha256, first.source,
                                                                           False)


def test_dataset_file_at_a_revision(hf_hub):
    hf_hub.add_file("acme/rs", "images.zip", b"zip bytes", repo_type="dataset", revision="v1")
    got = hub.fetch("hf://datasets/acme/rs/images.zip@v1")
    assert got.path.read_bytes() == b"zip bytes"
    assert got.source == f"hf://datasets/acme/rs/images.zip@{hf_hub.commit('acme/rs', 'v1', 'dataset')}"


@pytest.mark.parametrize("flag", ["HF_HUB_OFFLINE", "RSITR_BENCH_OFFLINE"])
def test_offline_uses_the_cache_and_fails_fast_with_the_command(hf_hub, monkeypatch, flag):
    hf_hub.add_file(REPO, "w.bin", PAYLOAD)
    hf_hub.add_file(REPO, "other.bin", b"x")
    hub.fetch_hf_file(REPO, "w.bin")
    monkeypatch.setenv(flag, "1")
    hf_hub.requests.clear()
    assert not hub.fetch_hf_file(REPO, "w.bin").downloaded
    with pytest.raises(CheckpointError) as err:
        hub.fetch_hf_file(REPO, "other.bin", what="the other weights")
    assert hf_hub.requests == []
    msg = str(err.value)
    assert "The other weights" in msg and f"hf download {REPO} other.bin --revision main" in msg
    assert "method.checkpoint" in msg and "models--acme--tiny" in msg


@pytest.mark.slow
def test_interrupted_download_resumes_with_a_range_request(hf_hub, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "DOWNLOAD_CHUNK_SIZE", 1 << 16)  # so the bytes before the cut reach the disk
    hf_hub.add_file(REPO, "w.bin", PAYLOAD)
    hf_hub.cut_after("w.bin", 300_000)
    got = hub.fetch_hf_file(REPO, "w.bin", sha256=sha(PAYLOAD))
    first, second = gets(hf_hub)
    assert "Range" not in first.headers and second.headers["Range"].startswith("bytes=")
    assert 0 < int(second.headers["Range"].removeprefix("bytes=").rstrip("-")) <= 300_000
    assert got.sha256 == sha(PAYLOAD) and got.path.read_bytes() == PAYLOAD


def test_corrupted_download_is_refused_and_fetched_again(hf_hub):
    hf_hub.add_file(REPO, "w.bin", PAYLOAD)
    hf_hub.corrupt("w.bin")
    got = hub.fetch_hf_file(REPO, "w.bin", sha256=sha(PAYLOAD))
    assert got.sha256 == sha(PAYLOAD) and got.path.read_bytes() == PAYLOAD and len(gets(hf_hub)) == 2


def test_a_bad_cached_copy_is_replaced(hf_hub):
    hf_hub.add_file(REPO, "w.bin", PAYLOAD)
    hf_hub.corrupt("w.bin")
    bad = hub.fetch_hf_file(REPO, "w.bin")  # no expected digest: accepted as served
    assert bad.sha256 != sha(PAYLOAD)
    good = hub.fetch_hf_file(REPO, "w.bin", sha256=sha(PAYLOAD))
    assert good.downloaded and good.path.read_bytes() == PAYLOAD


def test_persistent_corruption_is_an_error_and_leaves_nothing_in_the_cache(hf_hub):
    from huggingface_hub import constants

    hf_hub.add_file(REPO, "w.bin", PAYLOAD)
    hf_hub.corrupt("w.bin", times=2)
    with pytest.raises(CheckpointError) as err:
        hub.fetch_hf_file(REPO, "w.bin", sha256=sha(PAYLOAD))
    msg = str(err.value)
    assert sha(PAYLOAD) in msg and sha(bytes(b ^ 0xFF for b in PAYLOAD)) in msg
    blobs = Path(constants.HF_HUB_CACHE) / "models--acme--tiny" / "blobs"
    assert not [p for p in blobs.iterdir() if not p.name.endswith(".lock")]


@pytest.mark.parametrize("repo, filename, revision, words", [
    (REPO, "missing.bin", "main", ["has no file 'missing.bin'"]),
    (REPO, "w.bin", "v9", ["no revision 'v9'"]),
    ("acme/nope", "w.bin", "main", ["no model repo acme/nope"]),
])
def test_missing_file_names_repo_file_and_revision(hf_hub, repo, filename, revision, words):
    hf_hub.add_file(REPO, "w.bin", b"x")
    with pytest.raises(CheckpointError) as err:
        hub.fetch_hf_file(repo, filename, revision=revision)
    msg = str(err.value)
    for word in [repo, repr(filename), repr(revision), *words]:
        assert word in msg


def test_unreachable_endpoint_fails_fast_with_advice(hf_hub, monkeypatch):
    from huggingface_hub import constants

    with socket.socket() as sock:  # a loopback port nobody listens on once closed
        sock.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{sock.getsockname()[1]}"
    monkeypatch.setattr(constants, "ENDPOINT", closed)
    monkeypatch.setenv("RSITR_BENCH_NET_TIMEOUT", "2")
    with pytest.raises(NetworkError) as err:
        hub.fetch_hf_file(REPO, "w.bin", what="the tiny weights")
    msg = str(err.value)
    assert f"Could not reach {closed}" in msg and "the tiny weights" in msg
    assert "HF_HUB_OFFLINE" in msg and f"hf download {REPO} w.bin" in msg


@pytest.mark.slow
def test_url_download_resumes_and_is_cached(hf_hub, isolated_dirs):
    url = hf_hub.add_url("mirror/w.bin", PAYLOAD)
    hf_hub.cut_after("mirror/w.bin", 200_000)
    got = hub.fetch(url, sha256=sha(PAYLOAD))
    first, second = gets(hf_hub)
    assert "Range" not in first.headers and second.headers["Range"] == "bytes=200000-"
    assert got.downloaded and got.source == url and got.path.read_bytes() == PAYLOAD
    assert got.path.is_relative_to(isolated_dirs / "cache" / "downloads")
    assert [p.name for p in got.path.parent.iterdir() if not p.name.endswith(".lock")] == ["w.bin"]
    hf_hub.requests.clear()
    assert not hub.fetch(url).downloaded and hf_hub.requests == []


def test_url_download_continues_an_earlier_partial_file(hf_hub):
    url = hf_hub.add_url("w.bin", PAYLOAD)
    partial = hub._url_destination(url).with_name("w.bin.incomplete")
    partial.parent.mkdir(parents=True)
    partial.write_bytes(PAYLOAD[:12345])
    got = hub.fetch(url)
    assert [r.headers.get("Range") for r in gets(hf_hub)] == ["bytes=12345-"]
    assert got.sha256 == sha(PAYLOAD) and not partial.exists()


def test_url_offline_miss_says_where_to_put_the_file(hf_hub, monkeypatch):
    url = hf_hub.add_url("w.bin", PAYLOAD)
    monkeypatch.setenv("RSITR_BENCH_OFFLINE", "1")
    with pytest.raises(CheckpointError) as err:
        hub.fetch(url)
    assert url in str(err.value) and str(hub._url_destination(url)) in str(err.value) and hf_hub.requests == []


def test_local_path_is_hashed_and_checked(tmp_path):
    path = tmp_path / "w.bin"
    path.write_bytes(b"local")
    got = hub.fetch(str(path), sha256=sha(b"local"))
    assert (got.path, got.source, got.downloaded) == (path, str(path.resolve()), False)
    with pytest.raises(CheckpointError, match="was left in place"):
        hub.fetch(str(path), sha256="0" * 64)
    with pytest.raises(CheckpointError, match="does not exist"):
        hub.fetch(str(tmp_path / "nope.bin"))


def test_digest_is_remembered_until_the_file_changes(tmp_path):
    import os

    path = tmp_path / "w.bin"
    path.write_bytes(b"one")
    assert hub.file_digest(path) == sha(b"one")
    stat = path.stat()
    path.write_bytes(b"two")  # same size; restoring the mtime makes the change invisible to the memo
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert hub.file_digest(path) == sha(b"one")  # remembered, not re-hashed
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1000))
    assert hub.file_digest(path) == sha(b"two")


# --- backbones --------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory) -> tuple[Path, dict[str, torch.Tensor]]:
    model = build_backbone("rsitr-tiny", pretrained=None, init_seed=3).model
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    path = tmp_path_factory.mktemp("tiny") / "open_clip_model.safetensors"
    save_file(state, str(path))
    return path, state


def _assert_loaded(backbone, state):
    for key, value in state.items():
        assert torch.equal(backbone.model.state_dict()[key], value), key


@pytest.mark.slow
def test_open_clip_hub_repo_and_hub_file_load_with_provenance(hf_hub, tiny_weights):
    path, state = tiny_weights
    config = {"model_cfg": json.loads((_CONFIG_DIR / "rsitr-tiny.json").read_text()), "preprocess_cfg": {}}
    hf_hub.add_file("acme/tiny-clip", "open_clip_config.json", json.dumps(config).encode())
    digest = hf_hub.add_file("acme/tiny-clip", "open_clip_model.safetensors", path)
    source = f"hf://acme/tiny-clip/open_clip_model.safetensors@{hf_hub.commit('acme/tiny-clip')}"

    from_repo = build_backbone("hf-hub:acme/tiny-clip")
    _assert_loaded(from_repo, state)
    assert (from_repo.weights_source, from_repo.weights_sha256) == (source, digest)
    assert f"sha256={digest}" in from_repo.identity and from_repo.image_size == 64

    from_file = build_backbone("rsitr-tiny", checkpoint="hf://acme/tiny-clip/open_clip_model.safetensors")
    _assert_loaded(from_file, state)
    assert (from_file.weights_source, from_file.weights_sha256) == (source, digest)


def test_pretrained_tag_is_fetched_from_its_hub_repo_or_url(hf_hub, tiny_weights, monkeypatch):
    import open_clip

    path, state = tiny_weights
    hf_hub.add_file("acme/tag-repo", "open_clip_pytorch_model.bin", path)  # only the .bin: safetensors 404s first
    url = hf_hub.add_url("tags/tiny.safetensors", path)
    tags = {"hub": {"hf_hub": "acme/tag-repo/", "quick_gelu": True}, "web": {"url": url}}
    monkeypatch.setattr(open_clip, "get_pretrained_cfg", lambda model, tag: tags.get(tag, {}))
    weights, quick_gelu = resolve_pretrained("rsitr-tiny", "hub")
    assert quick_gelu and weights.source.startswith("hf://acme/tag-repo/open_clip_pytorch_model.bin@")
    weights, quick_gelu = resolve_pretrained("rsitr-tiny", "web")
    assert not quick_gelu and weights.source == url and weights.sha256 == hub.file_digest(path)
    _assert_loaded(build_backbone("rsitr-tiny", "web"), state)


def test_embedded_weights_need_no_network(hf_hub):
    backbone = build_backbone("rsitr-tiny", "synthetic-rs")
    assert hf_hub.requests == [] and backbone.weights_source.endswith("rsitr-tiny-synthetic-rs.safetensors")


def test_a_served_pickle_with_code_is_refused(hf_hub):
    class Evil:
        def __reduce__(self):
            return (print, ("this must never run",))

    hf_hub.add_file(REPO, "evil.pt", pickle.dumps({"x": Evil()}))
    with pytest.raises(CheckpointError, match="safely"):
        build_backbone("rsitr-tiny", checkpoint=f"hf://{REPO}/evil.pt")
