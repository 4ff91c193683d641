"""The one place rsitr-bench fetches files from the Hugging Face hub or a URL.

Why one module: every weights file a run uses must end up with the same three guarantees, wherever it came from:

* a *reproducible source* (``hf://OWNER/REPO/PATH@COMMIT``, the URL, or the absolute local path) and the sha256
  of the bytes on disk, both stamped into run provenance;
* *no surprise traffic*: a file already on disk is used without any request (so a cache hit is instant and works
  on a plane), ``HF_HUB_OFFLINE`` / ``RSITR_BENCH_OFFLINE`` forbid the network entirely, and an unreachable
  endpoint fails in seconds (a short TCP preflight) instead of after huggingface_hub's retries;
* *actionable failures*: every problem is a :class:`~rsitr_bench.errors.UserError` (exit code 2) naming the repo,
  file and revision, the download command and where to put the file.

Hub files go through :func:`huggingface_hub.hf_hub_download` into its normal cache (``HF_HOME`` /
``HF_HUB_CACHE``), with its progress bar and its in-call resume (a dropped connection is retried with an HTTP
``Range`` from the bytes already received). Other URLs download into ``cache_dir()/downloads`` with the same
resume, kept across processes in a ``.incomplete`` file, and an atomic rename at the end.

Hub revisions: a file already in the cache for the requested revision (a branch name resolves through the
cache's ``refs/``) is used as is; pin a commit (``@COMMIT``) to change what a branch name means on this machine.

Whole models that plugins load with transformers (keyword LLMs, GroundingDINO detectors) are resolved here too,
but only locally (:func:`resolve_local_model`): a run never downloads one.
"""

from __future__ import annotations

import hashlib
import os
import re
import socket
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from rsitr_bench.errors import CheckpointError, NetworkError, UserError
from rsitr_bench.harness.paths import cache_dir
from rsitr_bench.harness.store import digest, weights_digest

#: Seconds the preflight and each URL request may wait for the network; override with RSITR_BENCH_NET_TIMEOUT.
DEFAULT_NET_TIMEOUT = 5.0
#: Attempts of one URL download when the connection drops (each resumes where the previous one stopped).
URL_ATTEMPTS = 5
_CHUNK = 1 << 20
_READ = 1 << 16  # small reads: a dropped connection loses at most this much of what already arrived
_TRUE = {"1", "on", "yes", "true"}
_REPO_TYPES = ("model", "dataset")
_NAME = r"[A-Za-z0-9][A-Za-z0-9._-]*"
_HF_URI = re.compile(rf"^hf://(?:(?P<kind>datasets|models)/)?(?P<repo>{_NAME}/{_NAME})/(?P<path>[^@]+?)"
                     rf"(?:@(?P<rev>[^@/]+))?$")
_HF_MODEL = re.compile(rf"^hf-hub:(?P<repo>{_NAME}/{_NAME})(?:@(?P<rev>[^@/]+))?$")
_HUB_URL_PATH = re.compile(rf"^/(?:(?P<kind>datasets)/)?(?P<repo>{_NAME}/{_NAME})/(?:resolve|blob)/"
                           rf"(?P<rev>[^/]+)/(?P<path>.+)$")


class RemoteFileMissing(CheckpointError):
    """The hub repo and revision exist but hold no such file (callers may try another file name)."""


@dataclass(frozen=True)
class FetchedFile:
    """A file on this machine and where it came from.

    Attributes:
        path: the local file (the Hugging Face cache snapshot path, the download, or the local path).
        sha256: sha256 of the bytes on disk, recorded in run provenance.
        source: canonical, reproducible source: ``hf://OWNER/REPO/PATH@COMMIT`` (datasets:
            ``hf://datasets/OWNER/REPO/PATH@COMMIT``), the URL, or the absolute local path.
        downloaded: whether this call transferred bytes.
    """

    path: Path
    sha256: str
    source: str
    downloaded: bool


@dataclass(frozen=True)
class WeightSource:
    """Where a weights spec points, as classified by :func:`parse_weight_source`.

    Attributes:
        kind: ``local`` (a path), ``hf-file`` (one file of a hub repo), ``url`` (any other http(s) URL) or
            ``hf-model`` (an open_clip ``hf-hub:OWNER/REPO`` model repo: config plus weights).
        spec: the spec as given.
        path: the expanded local path (``local`` only).
        repo_id, repo_type, filename, revision: the hub coordinates (``hf-file``; ``hf-model`` has no filename).
        url: the URL (``url`` only).
    """

    kind: Literal["local", "hf-file", "url", "hf-model"]
    spec: str
    path: Path | None = None
    repo_id: str | None = None
    repo_type: str = "model"
    filename: str | None = None
    revision: str | None = None
    url: str | None = None


def offline() -> bool:
    """Whether the network is off limits: ``HF_HUB_OFFLINE`` or ``RSITR_BENCH_OFFLINE`` (``--offline``) is truthy.

    The environment is read at call time; huggingface_hub's own flag (read once, at import) counts too, since
    huggingface_hub refuses every request while it is set.
    """
    from huggingface_hub import constants

    return constants.HF_HUB_OFFLINE or any(os.environ.get(name, "").strip().lower() in _TRUE
                                           for name in ("HF_HUB_OFFLINE", "RSITR_BENCH_OFFLINE"))


def parse_weight_source(spec: str) -> WeightSource:
    """Classify a weights spec.

    ``hf://[datasets/]OWNER/REPO/PATH[@REV]`` and hub ``https://HOST/OWNER/REPO/resolve/REV/PATH`` URLs are hub
    files; ``hf-hub:OWNER/REPO[@REV]`` is an open_clip model repo; other ``http(s)://`` are URLs; anything else
    is a local path (``~`` expanded). A bare ``OWNER/REPO`` is a path, never a guess at a hub id.
    """
    text = spec.strip()
    if text.startswith("hf://"):
        match = _HF_URI.match(text)
        if not match:
            raise UserError(f"Cannot read the hub URI {spec!r}: expected hf://OWNER/REPO/PATH[@REVISION] or "
                            f"hf://datasets/OWNER/REPO/PATH[@REVISION].")
        return WeightSource("hf-file", spec, repo_id=match["repo"],
                            repo_type="dataset" if match["kind"] == "datasets" else "model",
                            filename=match["path"], revision=match["rev"])
    if text.startswith("hf-hub:"):
        match = _HF_MODEL.match(text)
        if not match:
            raise UserError(f"Cannot read the open_clip hub model {spec!r}: expected hf-hub:OWNER/REPO[@REVISION].")
        return WeightSource("hf-model", spec, repo_id=match["repo"], revision=match["rev"])
    if re.match(r"^https?://", text, re.IGNORECASE):
        hub = _hub_url(text)
        return hub if hub is not None else WeightSource("url", spec, url=text)
    return WeightSource("local", spec, path=Path(text).expanduser())


def fetch_hf_file(repo_id: str, filename: str, *, revision: str | None = None, repo_type: str = "model",
                  sha256: str | None = None, what: str = "") -> FetchedFile:
    """One file of a hub repo: from the Hugging Face cache if there (no request at all), else downloaded into it.

    Arguments:
        revision: a branch, tag or commit; None means ``main``.
        sha256: the expected digest; a cached or downloaded copy that differs is deleted and fetched once more.
        what: a human label for messages ("RemoteCLIP ViT-B-32 weights").
    """
    if repo_type not in _REPO_TYPES:
        raise UserError(f"Unknown hub repo type {repo_type!r} for {repo_id}; use one of {', '.join(_REPO_TYPES)}.")
    ref = _HubFile(repo_id, filename, revision or "main", repo_type, what or f"{filename} of {repo_id}")
    expected = _normalise_digest(sha256, ref.label)
    path, downloaded = ref.cached(), False
    if path is None:
        path, downloaded = ref.download(force=False), True
    digest = file_digest(path)
    if expected is not None and digest != expected:
        _evict_snapshot_file(path)
        if offline():
            raise CheckpointError(f"{_cap(ref.label)}: the cached copy had sha256 {digest}, not the expected "
                                  f"{expected}, so it was deleted. {ref.instructions()}")
        path, downloaded = ref.download(force=True), True
        digest = file_digest(path)
        if digest != expected:
            _evict_snapshot_file(path)
            raise CheckpointError(_mismatch(ref.label, ref.url(), expected, digest))
    return FetchedFile(path, digest, ref.source(_snapshot_commit(path, filename)), downloaded)


def fetch(uri: str, *, sha256: str | None = None, what: str = "") -> FetchedFile:
    """A file named by a hub URI, a URL or a local path (see :func:`parse_weight_source`)."""
    source = parse_weight_source(uri)
    if source.kind == "hf-file":
        assert source.repo_id is not None and source.filename is not None
        return fetch_hf_file(source.repo_id, source.filename, revision=source.revision, repo_type=source.repo_type,
                             sha256=sha256, what=what)
    if source.kind == "url":
        assert source.url is not None
        return _fetch_url(source.url, _normalise_digest(sha256, what or source.url), what or source.url)
    if source.kind == "hf-model":
        raise UserError(f"{uri!r} names a whole open_clip model repo, not a file. Give it as the model name "
                        f"(method.model={uri}), or name one file as hf://OWNER/REPO/FILE.")
    assert source.path is not None
    path = source.path
    if not path.is_file():
        raise CheckpointError(f"{_cap(what or 'the weights file')} {path} does not exist (or is not a file). Check the "
                              f"path, or give a hub file (hf://OWNER/REPO/FILE) or a URL instead.")
    digest = file_digest(path)
    expected = _normalise_digest(sha256, str(path))
    if expected is not None and digest != expected:
        raise CheckpointError(_mismatch(what or str(path), str(path), expected, digest) + " The file is yours, "
                              "so it was left in place; replace it with the right one.")
    return FetchedFile(path, digest, str(path.resolve()), False)


def file_digest(path: Path) -> str:
    """sha256 of ``path``, remembered by (real path, size, mtime) so a 600 MB file is hashed once, not per run."""
    return weights_digest(path, cache_dir())


def net_timeout() -> float:
    """Seconds to wait for a server before giving up (``RSITR_BENCH_NET_TIMEOUT``, default 5)."""
    try:
        return float(os.environ.get("RSITR_BENCH_NET_TIMEOUT", DEFAULT_NET_TIMEOUT))
    except ValueError:
        raise UserError(f"RSITR_BENCH_NET_TIMEOUT={os.environ['RSITR_BENCH_NET_TIMEOUT']!r} is not a number of "
                        f"seconds.") from None


# --- hub files -------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _HubFile:
    """One requested hub file, with the wording every message about it shares."""

    repo_id: str
    filename: str
    revision: str
    repo_type: str
    label: str

    def source(self, commit: str) -> str:
        prefix = "datasets/" if self.repo_type == "dataset" else ""
        return f"hf://{prefix}{self.repo_id}/{self.filename}@{commit}"

    def url(self) -> str:
        from huggingface_hub import constants

        prefix = "datasets/" if self.repo_type == "dataset" else ""
        return f"{constants.ENDPOINT}/{prefix}{self.repo_id}/resolve/{self.revision}/{self.filename}"

    def where(self) -> str:
        return f"{self.repo_id} ({self.repo_type} repo), file {self.filename!r}, revision {self.revision!r}"

    def instructions(self) -> str:
        from huggingface_hub import constants

        kind = " --repo-type dataset" if self.repo_type == "dataset" else ""
        folder = Path(constants.HF_HUB_CACHE) / f"{self.repo_type}s--{self.repo_id.replace('/', '--')}"
        return (f"On a machine with network access run `{_cli()} download {self.repo_id} {self.filename} "
                f"--revision {self.revision}{kind}` (or download {self.url()}) and copy that repo's cache folder "
                f"to {folder} (or point HF_HUB_CACHE at a copy of the cache); or save the file anywhere and pass "
                f"--set method.checkpoint=PATH.")

    def cached(self) -> Path | None:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(self.repo_id, self.filename, revision=self.revision, repo_type=self.repo_type)
        return Path(found) if isinstance(found, str) else None

    def download(self, force: bool) -> Path:
        """Download through huggingface_hub (after a fast reachability check), translating its errors."""
        from huggingface_hub import constants, hf_hub_download
        from huggingface_hub import errors as hf

        if offline():
            raise CheckpointError(f"{_cap(self.label)} ({self.where()}) is not in the Hugging Face cache and downloads "
                                  f"are off (HF_HUB_OFFLINE / --offline). {self.instructions()}")
        endpoint = constants.ENDPOINT
        _preflight(endpoint, f"{self.label} ({self.where()})", self.instructions())
        try:
            return Path(hf_hub_download(self.repo_id, self.filename, revision=self.revision,
                                        repo_type=self.repo_type, force_download=force,
                                        etag_timeout=net_timeout()))
        except hf.RevisionNotFoundError:
            problem = f"the {self.repo_type} repo {self.repo_id} has no revision {self.revision!r}"
            advice = "Check the revision (a branch, tag or commit of that repo)."
        except hf.GatedRepoError:
            problem = f"the {self.repo_type} repo {self.repo_id} is gated"
            advice = (f"Accept its terms at {endpoint}/{self.repo_id} and log in (`{_cli()} auth login`, or set "
                      f"HF_TOKEN).")
        except hf.RepositoryNotFoundError:
            problem = f"there is no {self.repo_type} repo {self.repo_id} (or it is private)"
            advice = "Check the repo id, or log in (HF_TOKEN) if it is private."
        except hf.RemoteEntryNotFoundError:
            raise RemoteFileMissing(
                f"Cannot fetch {self.label} ({self.where()}) from {endpoint}: the repo has no file "
                f"{self.filename!r} at revision {self.revision!r}. Check the file name against "
                f"{endpoint}/{self.repo_id}/tree/{self.revision}.") from None
        except (hf.LocalEntryNotFoundError, hf.HfHubHTTPError, OSError) as exc:
            raise NetworkError(f"Downloading {self.label} ({self.where()}) from {endpoint} failed: "
                               f"{_reason(exc)}. Run again to retry; or set HF_HUB_OFFLINE=1 and fetch it "
                               f"elsewhere: {self.instructions()}") from None
        raise CheckpointError(f"Cannot fetch {self.label} ({self.where()}) from {endpoint}: {problem}. {advice}")


def _cli() -> str:
    """The download command the installed huggingface_hub ships (``hf`` since 1.0, ``huggingface-cli`` before)."""
    from importlib.metadata import PackageNotFoundError, distribution

    try:
        scripts = {e.name for e in distribution("huggingface_hub").entry_points if e.group == "console_scripts"}
    except PackageNotFoundError:
        scripts = set()
    return "hf" if "hf" in scripts else "huggingface-cli"


def _snapshot_commit(path: Path, filename: str) -> str:
    """The commit of a cache snapshot path ``.../snapshots/COMMIT/FILENAME``."""
    folder = path
    for _ in filename.split("/"):
        folder = folder.parent
    if folder.parent.name != "snapshots":
        raise CheckpointError(f"{path} is not a Hugging Face cache snapshot file; cannot tell its commit.")
    return folder.name


def _evict_snapshot_file(path: Path) -> None:
    """Delete a bad cached file: its blob (the bytes) and the snapshot link to it."""
    blob = path.resolve()
    blob.unlink(missing_ok=True)
    path.unlink(missing_ok=True)


def _hub_url(url: str) -> WeightSource | None:
    """An ``https://HUB/OWNER/REPO/resolve/REV/PATH`` URL as a hub file, so it lands in the Hugging Face cache."""
    from huggingface_hub import constants

    parts = urllib.parse.urlsplit(url)
    hubs = {"huggingface.co", urllib.parse.urlsplit(constants.ENDPOINT).netloc}
    match = _HUB_URL_PATH.match(urllib.parse.unquote(parts.path))
    if parts.netloc not in hubs or parts.query or not match:
        return None
    return WeightSource("hf-file", url, repo_id=match["repo"],
                        repo_type="dataset" if match["kind"] else "model", filename=match["path"],
                        revision=match["rev"])


# --- plain URLs ------------------------------------------------------------------------------------------------

def _fetch_url(url: str, expected: str | None, label: str) -> FetchedFile:
    """A non-hub URL, kept under ``cache_dir()/downloads`` (resumable, verified before its final rename)."""
    from filelock import FileLock

    dest = _url_destination(url)
    advice = (f"Download {url} on a machine with network access and put it at {dest}; or save it anywhere and "
              f"pass --set method.checkpoint=PATH.")
    if dest.is_file():
        digest = file_digest(dest)
        if expected is None or digest == expected:
            return FetchedFile(dest, digest, url, False)
        dest.unlink()
    if offline():
        raise CheckpointError(f"{_cap(label)} is not on this machine ({dest}) and downloads are off (HF_HUB_OFFLINE / "
                              f"--offline). {advice}")
    _preflight(url, label, advice)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(dest) + ".lock"):
        digest = file_digest(dest) if dest.is_file() else ""  # another process may have finished it meanwhile
        if digest and (expected is None or digest == expected):
            return FetchedFile(dest, digest, url, False)
        dest.unlink(missing_ok=True)
        for _ in range(2):
            partial = _download_partial(url, dest, label, advice)
            digest = file_digest(partial)
            if expected is None or digest == expected:
                os.replace(partial, dest)
                return FetchedFile(dest, file_digest(dest), url, True)
            partial.unlink()
    assert expected is not None
    raise CheckpointError(_mismatch(label, url, expected, digest))


def _url_destination(url: str) -> Path:
    """``downloads/<url digest>/<file name>``: one folder per URL, so equal file names never collide."""
    name = Path(urllib.parse.unquote(urllib.parse.urlsplit(url).path)).name or "download"
    return cache_dir() / "downloads" / hashlib.sha256(url.encode()).hexdigest()[:16] / name


def _download_partial(url: str, dest: Path, label: str, advice: str) -> Path:
    """Complete ``DEST.incomplete`` from ``url``, resuming with HTTP ``Range`` from whatever it already holds."""
    import http.client
    import time

    from tqdm.auto import tqdm

    partial = dest.with_name(dest.name + ".incomplete")
    attempts = URL_ATTEMPTS
    while True:
        have = partial.stat().st_size if partial.is_file() else 0
        headers = {"User-Agent": "rsitr-bench", "Accept-Encoding": "identity"}
        if have:
            headers["Range"] = f"bytes={have}-"
        try:
            with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=net_timeout()) as resp:
                if resp.status != 206:
                    have = 0  # the server ignored the Range: start over
                length = resp.headers.get("Content-Length")
                total = have + int(length) if length is not None else None
                with open(partial, "ab" if have else "wb") as fh, \
                        tqdm(total=total, initial=have, unit="B", unit_scale=True, desc=dest.name, disable=None) as bar:
                    while block := resp.read(_READ):
                        fh.write(block)
                        bar.update(len(block))
            if total is None or partial.stat().st_size == total:
                return partial
            raise http.client.IncompleteRead(b"", total - partial.stat().st_size)
        except urllib.error.HTTPError as exc:
            if exc.code == 416 and have:  # the partial file is not a prefix the server recognises
                partial.unlink()
                continue
            if exc.code in (401, 403, 404, 410):
                raise CheckpointError(f"Cannot fetch {label}: {url} answered HTTP {exc.code} ({exc.reason}). "
                                      f"Check the URL.") from None
            error: Exception = exc
        except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
            error = exc
        now = partial.stat().st_size if partial.is_file() else 0
        attempts = URL_ATTEMPTS if now > have else attempts - 1  # progress resets the budget
        if attempts <= 0:
            raise NetworkError(f"Downloading {label} from {url} failed: {_reason(error)}; {now} bytes are kept in "
                               f"{partial} and the next run resumes from there. Or set HF_HUB_OFFLINE=1 and "
                               f"fetch it elsewhere: {advice}")
        time.sleep(0.5)


# --- shared helpers ----------------------------------------------------------------------------------------------

def _preflight(url: str, label: str, advice: str) -> None:
    """Fail in seconds when the server (or the proxy in front of it) does not accept a TCP connection."""
    parts = urllib.parse.urlsplit(url)
    host, port = parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80)
    proxy = urllib.request.getproxies().get(parts.scheme)
    if proxy and not urllib.request.proxy_bypass(host):
        proxied = urllib.parse.urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        host, port = proxied.hostname or host, proxied.port or 8080
    try:
        socket.create_connection((host, port), timeout=net_timeout()).close()
    except OSError as exc:
        raise NetworkError(
            f"Could not reach {parts.scheme}://{parts.netloc} ({_reason(exc)}) to download {label}. Check the "
            f"network, HF_ENDPOINT and proxy settings; or set HF_HUB_OFFLINE=1 (or pass --offline) to use only "
            f"files already on this machine. {advice}") from None


def _normalise_digest(sha256: str | None, label: str) -> str | None:
    if sha256 is None:
        return None
    value = sha256.strip().lower().removeprefix("sha256:")
    if not re.fullmatch(r"[0-9a-f]{64}", value):
        raise UserError(f"The expected sha256 of {label} ({sha256!r}) is not 64 hexadecimal digits.")
    return value


def _mismatch(label: str, origin: str, expected: str, actual: str) -> str:
    return (f"{_cap(label)} from {origin} has sha256 {actual}, but {expected} was expected, even after deleting it and "
            f"downloading it again; the bad copy was deleted. The source changed or the expected digest is wrong.")


def _cap(label: str) -> str:
    """``label`` at the start of a sentence."""
    return label[:1].upper() + label[1:]


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


# --------------------------------------------------------------------------------- whole models, local only

_VERSIONED = (".safetensors", ".bin", ".json", ".model", ".txt")


def hub_folder(model_id: str) -> Path:
    """Where the Hugging Face cache keeps ``model_id``."""
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE) / f"models--{model_id.replace('/', '--')}"


def resolve_local_model(model: str, cache_dir: Path, what: str, option: str,
                        alternative: str) -> tuple[Path, str]:
    """The local directory of ``model`` and a version string for cache keys.

    A model is either a local directory (``save_pretrained`` output) or a hub id already in the Hugging Face
    cache; anything else is an error that names the folder that was searched and how to fill it.

    Arguments:
        what: the model's role for the error message (e.g. "keyword LLM").
        option: the option that points at a local directory (e.g. "keywords.model").
        alternative: what the user can do instead, for the error message.
    """
    path = Path(model).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise CheckpointError(f"The {what} directory {path} has no config.json: it is not a saved "
                                  f"transformers model. Save one with model.save_pretrained(DIR) (and its "
                                  f"tokenizer or processor) and pass --set {option}=DIR.")
        files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix in _VERSIONED)
        return path, digest([(p.name, weights_digest(p, cache_dir)) for p in files])
    from huggingface_hub import snapshot_download

    try:
        local = Path(snapshot_download(model, local_files_only=True))
    except Exception:
        raise CheckpointError(
            f"The {what} {model!r} is not on this machine (looked in {hub_folder(model)}), and rsitr-bench "
            f"never downloads during a run. Fetch it where there is network access (`huggingface-cli "
            f"download {model}`) and copy that folder into the Hugging Face cache, or save the model to a "
            f"directory and pass --set {option}=DIR; {alternative}.") from None
    return local, f"{model}@{local.name}"


def is_available(model: str) -> bool:
    """Whether :func:`resolve_local_model` would find ``model`` (without hashing anything)."""
    if Path(model).expanduser().is_dir():
        return (Path(model).expanduser() / "config.json").is_file()
    from huggingface_hub import snapshot_download

    try:
        snapshot_download(model, local_files_only=True)
    except Exception:
        return False
    return True
