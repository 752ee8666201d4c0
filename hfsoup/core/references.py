"""Model references: what a user types (``org/name``, ``org/name@rev``, ``hf-hub:org/name``, ``./folder``,
``local-dir:./folder``) resolved to a local folder and, for Hub models, the commit sha that was fetched."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from hfsoup.errors import ModelReferenceError, OfflineError, UnsafeCheckpointError

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
        raise ModelReferenceError("empty model reference: pass a Hub id (org/name[@revision]) or a local folder")
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
            f"'{text}' is neither an existing folder nor a Hub model id: use org/name[@revision] or a local path"
        )
    return ModelRef(text, repo_id=repo_id, revision=revision or None)


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
            raise ModelReferenceError(f"model folder '{folder}' does not exist")
        if not folder.is_dir():
            raise ModelReferenceError(f"'{folder}' is a file: pass the folder that holds config.json and "
                                      f"{SAFETENSORS_NAME}")
        commit = None
    else:
        folder, commit = _download(ref, allow_pickle=allow_pickle, token=token, cache_dir=cache_dir)
    config = folder / CONFIG_NAME
    if not config.is_file():
        raise ModelReferenceError(f"{ref}: no {CONFIG_NAME} (not a timm model folder); save models with "
                                  f"hfsoup or timm's save_for_hf")
    weights = folder / SAFETENSORS_NAME
    if not weights.is_file():
        pickle_file = folder / PICKLE_NAME
        if pickle_file.is_file() and not allow_pickle:
            raise UnsafeCheckpointError(
                f"{ref} has only a pickle checkpoint ({PICKLE_NAME}); pass --allow-pickle (allow_pickle=True) if "
                f"you trust it, or convert it to safetensors")
        if not pickle_file.is_file():
            raise ModelReferenceError(f"{ref}: no {SAFETENSORS_NAME} found")
        weights = pickle_file
    return ResolvedModel(ref=ref, folder=folder, weights_file=weights, config_file=config, commit=commit)


def _download(ref: ModelRef, *, allow_pickle: bool, token, cache_dir) -> tuple[Path, str | None]:
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import (GatedRepoError, HfHubHTTPError, LocalEntryNotFoundError,
                                        OfflineModeIsEnabled, RepositoryNotFoundError, RevisionNotFoundError)

    patterns = [CONFIG_NAME, SAFETENSORS_NAME] + ([PICKLE_NAME] if allow_pickle else [])
    where = f"{ref.repo_id}" + (f"@{ref.revision}" if ref.revision else "")
    try:
        path = snapshot_download(ref.repo_id, revision=ref.revision, allow_patterns=patterns, token=token,
                                 cache_dir=cache_dir)
    except GatedRepoError:
        raise ModelReferenceError(f"{where} is gated: accept its terms on the Hub and log in (hf auth login)") from None
    except RepositoryNotFoundError:
        raise ModelReferenceError(
            f"model repo '{ref.repo_id}' not found on {constants.ENDPOINT}: check the id, or log in "
            f"(hf auth login / HF_TOKEN) if it is private") from None
    except RevisionNotFoundError:
        raise ModelReferenceError(f"revision '{ref.revision}' not found in '{ref.repo_id}': check the branch, tag "
                                  f"or commit sha") from None
    except (LocalEntryNotFoundError, OfflineModeIsEnabled):
        raise OfflineError(
            f"{where} is not in the local HF cache and the Hub cannot be reached (offline or HF_HUB_OFFLINE=1): "
            f"download it once online, or pass a local folder") from None
    except HfHubHTTPError as e:
        raise ModelReferenceError(f"could not fetch {where}: {str(e).splitlines()[0]}") from None
    except OSError as e:  # connection failures surface as OSError subclasses in some client versions
        raise OfflineError(f"could not reach the Hub for {where} ({type(e).__name__}): check your network, or "
                           f"use the local cache with HF_HUB_OFFLINE=1") from None
    folder = Path(path)
    # The cache layout stores each snapshot under snapshots/<commit sha>.
    commit = folder.name if _SHA_RE.match(folder.name) else None
    return folder, commit
