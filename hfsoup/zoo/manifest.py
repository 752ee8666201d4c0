"""Zoo manifests: the ``zoo.json`` that ``hfsoup zoo push`` publishes in ``{org}/hfsoup-zoo`` (every model's repo
id, commit sha, metadata, scores and file hashes), reading one, listing and selecting its models.

A manifest is read from a Hub repo id (``org/hfsoup-zoo[@rev]``), a ``zoo.json`` file, or a zoo folder (its
``zoo.json`` once pushed; else the exported folders, without commits: enough to list them). Torch-free.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable

from hfsoup.core.ranges import IntRanges, parse_ranges
from hfsoup.zoo.layout import CARD_NAME, CONFIG_NAME, DEFAULT_PREFIX, SCORE_KEYS, WEIGHTS_NAME, ZooError, ZooModel, \
    scan_zoo

MANIFEST_REPO_NAME = "hfsoup-zoo"
MANIFEST_NAME = "zoo.json"
MANIFEST_FORMAT = "hfsoup-zoo/1"
#: The hyperparameter scales a listing shows (paper Table 2).
SCALE_KEYS = ("lr_scale", "momentum_scale", "weight_decay_scale")
#: The files of a zoo model that hfsoup reads, hence the only ones ``hfsoup zoo pull`` downloads (a manifest may
#: list others, a pickle say: they are never fetched).
PULLED_FILES = (CONFIG_NAME, WEIGHTS_NAME, CARD_NAME, "soup.json")
_SHA_RE = re.compile(r"^[0-9a-f]{40}$")
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
#: A plain file name: no folder part, no "." / "..", no control characters (a manifest names files in a repo root).
_FILE_NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]{0,127}")


class ZooManifestError(ZooError):
    """A zoo manifest cannot be found or is malformed."""


# -- reading -------------------------------------------------------------------------------------------------------
def check_repo_id(repo_id, where: str) -> str:
    """``repo_id`` if it is a valid Hub model id ``org/name`` (``huggingface_hub.utils.validate_repo_id``: no
    ``..``, ``--`` or ``//``, at most 96 characters), else :class:`ZooManifestError` naming ``where``. Checked
    before any file system call: a repo id becomes a folder name on pull."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    if not isinstance(repo_id, str) or repo_id.count("/") != 1:
        raise ZooManifestError(f"{where}: {repo_id!r} is not a Hub repo id 'org/name'")
    try:
        validate_repo_id(repo_id)
    except HFValidationError as e:
        raise ZooManifestError(f"{where}: {repo_id!r} is not a valid Hub repo id ({str(e).splitlines()[0][:120]})",
                               repo_id=repo_id) from None
    return repo_id


def _int_field(m: dict, key: str, where: str) -> None:
    value = m.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ZooManifestError(f"{where}: {m['repo_id']} has {key} {value!r}, not a non-negative integer",
                               repo_id=m["repo_id"])


def validate_manifest(manifest, where: str) -> dict:
    """Check a manifest's structure and the type of every field it is read for; raise :class:`ZooManifestError`
    naming ``where`` otherwise.

    Repo ids must be valid Hub ids and file names plain names (no folder part): a manifest comes from the Hub and
    both become paths on pull. Files other than :data:`PULLED_FILES` may be listed; they are never downloaded.
    """
    if not isinstance(manifest, dict) or not isinstance(manifest.get("models"), list):
        raise ZooManifestError(f"{where} is not a zoo manifest (no 'models' list)")
    for key in ("org", "prefix", "collection"):
        if manifest.get(key) is not None and not isinstance(manifest[key], str):
            raise ZooManifestError(f"{where}: '{key}' is {type(manifest[key]).__name__}, not a string")
    seen: set[str] = set()
    for i, m in enumerate(manifest["models"]):
        if not isinstance(m, dict) or not isinstance(m.get("repo_id"), str) or "/" not in m["repo_id"]:
            raise ZooManifestError(f"{where}: model #{i} has no repo_id 'org/name'")
        check_repo_id(m["repo_id"], f"{where}: model #{i}")
        if m["repo_id"].lower() in seen:  # two models would share one folder
            raise ZooManifestError(f"{where}: {m['repo_id']} is listed twice", repo_id=m["repo_id"])
        seen.add(m["repo_id"].lower())
        if not isinstance(m.get("commit"), str) or not _SHA_RE.match(m["commit"]):
            raise ZooManifestError(f"{where}: {m['repo_id']} has no 40-hex commit sha (was the zoo pushed?)",
                                   repo_id=m["repo_id"])
        files = m.get("files")
        if not isinstance(files, dict) or not files or not all(
                isinstance(v, str) and _SHA256_RE.match(v) for v in files.values()):
            raise ZooManifestError(f"{where}: {m['repo_id']} has no 'files' with sha256 hashes", repo_id=m["repo_id"])
        bad = [n for n in files if not _FILE_NAME_RE.fullmatch(n) or n.strip(".") == ""]
        if bad:
            raise ZooManifestError(f"{where}: {m['repo_id']} lists the file {bad[0]!r}: only plain file names "
                                   f"(no folders) are allowed", repo_id=m["repo_id"])
        if m.get("kind") not in ("trunk", "branch"):
            raise ZooManifestError(f"{where}: {m['repo_id']} has kind {m.get('kind')!r} (trunk or branch)",
                                   repo_id=m["repo_id"])
        for key in ("epoch",) if m["kind"] == "trunk" else ("branch_epoch", "variant"):
            _int_field(m, key, where)
        for key in ("metadata", "scores"):
            if m.get(key) is not None and not isinstance(m[key], dict):
                raise ZooManifestError(f"{where}: {m['repo_id']} has '{key}' of type {type(m[key]).__name__}, not "
                                       f"an object", repo_id=m["repo_id"])
        for key, value in (m.get("scores") or {}).items():
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
                raise ZooManifestError(f"{where}: {m['repo_id']} has score {key} {value!r}, not a number",
                                       repo_id=m["repo_id"])
    return manifest


def local_manifest(models: list[ZooModel]) -> dict:
    """The manifest of an unpublished zoo folder: its models without commits (``"local": True``)."""
    return {"format": MANIFEST_FORMAT, "org": None, "prefix": None, "collection": None, "local": True,
            "models": [m.entry("local", None) for m in models]}


def load_zoo_manifest(source: str | Path, *, token: str | bool | None = None) -> dict:
    """Read a zoo manifest from a Hub repo id (``org/hfsoup-zoo[@rev]``), a ``zoo.json`` file or a zoo folder.

    A built but unpublished zoo folder (no ``zoo.json``) gives a manifest without commits (listing only).
    """
    path = Path(str(source)).expanduser()
    if path.is_dir():
        if not (path / MANIFEST_NAME).is_file():
            return local_manifest(scan_zoo(path))
        path = path / MANIFEST_NAME
    if path.is_file():
        try:
            manifest = json.loads(path.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as e:
            raise ZooManifestError(f"'{path}' is not valid JSON ({e})", path=path) from None
        return validate_manifest(manifest, f"'{path}'")
    text = str(source)
    if text.startswith((".", "/", "~")) or text.endswith(".json"):
        raise ZooManifestError(f"'{text}' does not exist: pass a Hub repo id (org/hfsoup-zoo), a zoo.json or a "
                               f"zoo folder", path=text)
    return _download_manifest(text, token)


def _download_manifest(text: str, token) -> dict:
    from huggingface_hub import snapshot_download

    from hfsoup.core.hubclient import configure
    from hfsoup.errors import client_error_types, from_client_error

    repo_id, _, revision = text.partition("@")
    if repo_id.count("/") != 1:
        raise ZooManifestError(f"'{text}' is not a manifest repo id (org/hfsoup-zoo), zoo.json file or zoo folder")
    check_repo_id(repo_id, f"zoo manifest '{text}'")
    configure()  # a Hub that does not answer fails within HFSOUP_HUB_TIMEOUT
    try:
        # snapshot_download, not hf_hub_download: when the Hub cannot be reached it falls back to the cache at
        # once, where hf_hub_download retries the metadata request for minutes.
        folder = Path(snapshot_download(repo_id, revision=revision or None, allow_patterns=[MANIFEST_NAME],
                                        token=token))
    except client_error_types() as e:
        raise from_client_error(e, f"zoo manifest '{text}'", kind="model", repo_id=repo_id,
                                revision=revision or None, filename=MANIFEST_NAME) from None
    path = folder / MANIFEST_NAME
    if not path.is_file():
        from huggingface_hub import constants
        from huggingface_hub.errors import LocalEntryNotFoundError

        if constants.HF_HUB_OFFLINE:  # a cached snapshot of the repo without the manifest: it may exist online
            raise from_client_error(LocalEntryNotFoundError(f"{MANIFEST_NAME} is not cached"),
                                    f"zoo manifest '{text}'", kind="model", repo_id=repo_id,
                                    revision=revision or None, filename=MANIFEST_NAME)
        # the repo exists (the client listed it) but is not a manifest repo: say which one is
        raise ZooManifestError(f"'{repo_id}' has no {MANIFEST_NAME}: pass the manifest repo "
                               f"({repo_id.split('/')[0]}/{MANIFEST_REPO_NAME}) written by `hfsoup zoo push`",
                               repo_id=repo_id)
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError):
        raise ZooManifestError(f"{repo_id}/{MANIFEST_NAME} is not valid JSON", repo_id=repo_id) from None
    return validate_manifest(manifest, f"{repo_id}/{MANIFEST_NAME}")


# -- listing -------------------------------------------------------------------------------------------------------
@dataclass
class ZooEntry:
    """One model of a zoo listing (a flat row)."""

    repo_id: str
    commit: str | None
    kind: str
    epoch: int | None  # the branch epoch, or a trunk checkpoint's epoch
    variant: int | None
    lr_scale: float | None = None
    momentum_scale: float | None = None
    weight_decay_scale: float | None = None
    val_accuracy: float | None = None
    val_loss: float | None = None
    test_accuracy: float | None = None
    test_loss: float | None = None

    @classmethod
    def from_manifest(cls, m: dict) -> "ZooEntry":
        meta = m.get("metadata") or {}
        scores = m.get("scores") or {}
        return cls(repo_id=m["repo_id"], commit=m.get("commit"), kind=m["kind"],
                   epoch=m.get("branch_epoch", m.get("epoch")), variant=m.get("variant"),
                   **{k: meta.get(k) for k in SCALE_KEYS}, **{k: scores.get(k, meta.get(k)) for k in SCORE_KEYS})

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class ZooListing:
    """The (selected) models of a zoo manifest."""

    source: str
    models: list[ZooEntry] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"source": self.source, "models": [m.to_dict() for m in self.models]}


def list_zoo(source: str | Path, *, token: str | bool | None = None, epochs: str | None = None,
             variants: str | None = None) -> ZooListing:
    """The models of a zoo manifest (see :func:`load_zoo_manifest`), optionally filtered (:func:`select_models`),
    one :class:`ZooEntry` each: repo, commit, kind, epoch, variant, hyperparameter scales and scores."""
    manifest = load_zoo_manifest(source, token=token)
    rows = [ZooEntry.from_manifest(m) for m in select_models(manifest["models"], epochs=epochs, variants=variants)]
    return ZooListing(source=str(source), models=rows)


# -- selection -----------------------------------------------------------------------------------------------------
def parse_int_spec(spec: str | None, what: str) -> IntRanges | None:
    """``"150-300"``, ``"50,60,100-120"`` → an :class:`~hfsoup.core.ranges.IntRanges` (ranges inclusive, never
    expanded); ``None``/empty → no filter. A bad spec raises :class:`~hfsoup.errors.InvalidRangeError`."""
    return parse_ranges(spec, what)


def select_models(models: Iterable[dict], *, epochs: str | None = None, variants: str | None = None,
                  kind: str | None = None) -> list[dict]:
    """Filter manifest entries: ``epochs`` matches the branch epoch (or a trunk checkpoint's epoch), ``variants``
    keeps branches of those variants only (trunk checkpoints have none), ``kind`` is ``trunk``/``branch``."""
    eps, vs = parse_int_spec(epochs, "--epochs"), parse_int_spec(variants, "--variants")
    out = []
    for m in models:
        if kind and m["kind"] != kind:
            continue
        if eps is not None and m.get("branch_epoch", m.get("epoch")) not in eps:
            continue
        if vs is not None and m.get("variant") not in vs:
            continue
        out.append(m)
    return out


def repo_bar(total: int, desc: str, enabled: bool):
    """A progress bar over the repos of a push or pull."""
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="repo", disable=not enabled)


__all__ = ["ZooModel", "ZooEntry", "ZooListing", "ZooManifestError", "validate_manifest", "load_zoo_manifest",
           "local_manifest", "list_zoo", "select_models", "parse_int_spec", "check_repo_id", "PULLED_FILES", "MANIFEST_REPO_NAME", "MANIFEST_NAME",
           "MANIFEST_FORMAT", "DEFAULT_PREFIX", "SCORE_KEYS", "SCALE_KEYS"]
