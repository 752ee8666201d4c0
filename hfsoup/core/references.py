"""Model references: what a user types (``org/name``, ``org/name@rev``, ``hf-hub:org/name``, ``./folder``,
``local-dir:./folder``) resolved to a local folder and, for Hub models, the commit sha that was fetched."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from hfsoup.errors import ModelReferenceError, UnsafeCheckpointError, client_error_types, from_client_error

SAFETENSORS_NAME = "model.safetensors"
PICKLE_NAME = "pytorch_model.bin"
CONFIG_NAME = "config.json"
_SHA_RE = re.compile(r"^[0-9a-f]{40}$")
_REPO_RE = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$|^[A-Za-z0-9][\w.\-]*$")


@dataclass(frozen=True)
class ModelRef:
    """A parsed model reference. Exactly one of ``repo_id`` and ``local_path`` is set."""

    text: str
    repo_id: str | None = None
    revision: str | None = None
    local_path: Path | None = None

    @property
    def is_local(self) -> bool:
        return self.local_path is not None

    def __str__(self) -> str:
        return self.text


@dataclass(frozen=True)
class ResolvedModel:
    """A reference resolved to files on disk."""

    ref: ModelRef
    folder: Path
    weights_file: Path
    config_file: Path
    commit: str | None  # the Hub commit sha actually fetched (None for local folders)

    @property
    def is_pickle(self) -> bool:
        return self.weights_file.name != SAFETENSORS_NAME


def _looks_like_path(text: str) -> bool:
    return text.startswith((".", "/", "~")) or os.sep in text.rstrip(os.sep) and text.count("/") > 1


def parse_reference(text: str) -> ModelRef:
    """Parse a model reference.

    ``local-dir:PATH`` and existing folders are local; ``hf-hub:ID[@REV]`` and ``ID[@REV]`` are Hub repos. A
    relative path that exists wins over a Hub id of the same spelling (as in ``transformers``).
    """
    raw = text.strip()
    if not raw:
        raise ModelReferenceError("empty model reference: pass a Hub id (org/name[@revision]) or a local folder",
                                  reference=text)
    if raw.startswith("local-dir:"):
        return ModelRef(text, local_path=Path(raw[len("local-dir:"):]).expanduser())
    hub = raw[len("hf-hub:"):] if raw.startswith("hf-hub:") else None
    if hub is None:
        path = Path(raw).expanduser()
        if path.exists() or _looks_like_path(raw):
            return ModelRef(text, local_path=path)
        hub = raw
    repo_id, _, revision = hub.partition("@")
    if not _REPO_RE.match(repo_id) or "--" in repo_id or ".." in repo_id:
        raise ModelReferenceError(
            f"'{text}' is neither an existing folder nor a Hub model id: use org/name[@revision] or a local path",
            reference=text)
    return ModelRef(text, repo_id=repo_id, revision=revision or None)


def _fields(ref: ModelRef, path: Path) -> dict:
    """The fields of a :class:`ModelReferenceError` about ``path`` of ``ref``."""
    return {"reference": ref.text, "repo_id": ref.repo_id, "revision": ref.revision, "path": path}


def resolve(ref: ModelRef | str, *, allow_pickle: bool = False, token: str | bool | None = None,
            cache_dir: str | Path | None = None) -> ResolvedModel:
    """Find (download if needed) the config and weights of a model reference.

    Hub models go through :func:`huggingface_hub.snapshot_download`, restricted to the files hfsoup needs, so the
    HF cache, ``HF_HUB_OFFLINE=1`` and ``HF_ENDPOINT`` behave as everywhere else in the ecosystem. Safetensors are
    required unless ``allow_pickle`` is set (the pickle is then loaded with ``weights_only=True``).
    """
    if isinstance(ref, str):
        ref = parse_reference(ref)
    if ref.is_local:
        folder = ref.local_path
        if not folder.exists():
            raise ModelReferenceError(f"model folder '{folder}' does not exist", **_fields(ref, folder))
        if not folder.is_dir():
            raise ModelReferenceError(f"'{folder}' is a file: pass the folder that holds config.json and "
                                      f"{SAFETENSORS_NAME}", **_fields(ref, folder))
        commit = None
    else:
        folder, commit = _download(ref, allow_pickle=allow_pickle, token=token, cache_dir=cache_dir)
    config = folder / CONFIG_NAME
    if not config.is_file():
        raise ModelReferenceError(f"{ref}: no {CONFIG_NAME} (not a timm model folder); save models with "
                                  f"hfsoup or timm's save_for_hf", **_fields(ref, config))
    weights = folder / SAFETENSORS_NAME
    if not weights.is_file():
        pickle_file = folder / PICKLE_NAME
        if pickle_file.is_file() and not allow_pickle:
            raise UnsafeCheckpointError(
                f"{ref} has only a pickle checkpoint ({PICKLE_NAME}); pass --allow-pickle (allow_pickle=True) if "
                f"you trust it, or convert it to safetensors", **_fields(ref, pickle_file))
        if not pickle_file.is_file():
            raise ModelReferenceError(f"{ref}: no {SAFETENSORS_NAME} found", **_fields(ref, weights))
        weights = pickle_file
    return ResolvedModel(ref=ref, folder=folder, weights_file=weights, config_file=config, commit=commit)


def _download(ref: ModelRef, *, allow_pickle: bool, token, cache_dir) -> tuple[Path, str | None]:
    from huggingface_hub import snapshot_download

    from hfsoup.core.hubclient import configure

    configure()  # every Hub request times out (HFSOUP_HUB_TIMEOUT): a stuck proxy fails, it does not hang
    patterns = [CONFIG_NAME, SAFETENSORS_NAME] + ([PICKLE_NAME] if allow_pickle else [])
    where = f"{ref.repo_id}" + (f"@{ref.revision}" if ref.revision else "")
    try:
        path = snapshot_download(ref.repo_id, revision=ref.revision, allow_patterns=patterns, token=token,
                                 cache_dir=cache_dir)
    except client_error_types() as e:
        raise from_client_error(e, where, kind="model", repo_id=ref.repo_id, revision=ref.revision,
                                reference=ref.text) from None
    folder = Path(path)
    # The cache layout stores each snapshot under snapshots/<commit sha>.
    commit = folder.name if _SHA_RE.match(folder.name) else None
    return folder, commit
