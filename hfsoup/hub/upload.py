"""The one upload path: a local folder to a Hub repo in one commit (model folders, datasets, zoo models).

:func:`upload_folder` creates the repo and the target branch when they are missing, retries transient failures
(:mod:`hfsoup.hub.retry`) and maps every client error to a one-line :class:`~hfsoup.errors.PushError`
(:func:`~hfsoup.errors.from_client_error`). Re-running an upload is safe: the Hub client skips files whose remote
blob is identical, so an unchanged folder makes no new commit. Torch-free.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

from hfsoup.errors import HfSoupError, InvalidParameterError
from hfsoup.hub.format import CARD_NAME, CONFIG_NAME, HUB_FILES, WEIGHTS_NAME
from hfsoup.hub.retry import BACKOFF_BASE_S, MAX_RETRIES, with_retries

_SHA_RE = re.compile(r"^[0-9a-f]{40}$")
#: The model card's usage snippet before the repo id is known (model_cards/*.md render it when none was given).
CARD_PLACEHOLDER = "hf-hub:ORG/NAME"
#: Folders the Hub client never uploads (its own upload_folder ignores them too).
_IGNORED_DIRS = (".git", ".cache")


@dataclass
class UploadResult:
    """What an upload did: the repo, the commit it made (or the head it left unchanged), links and the files sent."""

    repo_id: str
    repo_type: str
    commit: str | None
    url: str | None
    pr_url: str | None = None
    files: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def _folder_files(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")
                  if p.is_file() and not any(part in _IGNORED_DIRS for part in p.relative_to(folder).parts))


def card_for_repo(text: str, repo_id: str) -> str:
    """A model card's text with the placeholder of its usage snippet (``hf-hub:ORG/NAME``) replaced by the repo it
    is pushed to, so that the snippet on the Hub runs as it is."""
    return text.replace(CARD_PLACEHOLDER, f"hf-hub:{repo_id}")


def card_placeholder(folder: str | Path) -> bool:
    """Whether ``folder/README.md`` still holds the placeholder repo id."""
    card = Path(folder) / CARD_NAME
    try:
        return card.is_file() and CARD_PLACEHOLDER in card.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return False


@contextmanager
def card_staged(folder: str | Path, files: Sequence[str], repo_id: str) -> Iterator[Path]:
    """The folder to upload ``files`` of ``folder`` from, with its card naming ``repo_id``: ``folder`` itself when
    its ``README.md`` has no placeholder, else a temporary staging folder (hard links to the other files, copies
    where links are impossible) whose ``README.md`` is :func:`card_for_repo`. The user's folder is never
    modified."""
    folder = Path(folder)
    if CARD_NAME not in files or not card_placeholder(folder):
        yield folder
        return
    with tempfile.TemporaryDirectory(prefix="hfsoup-push-") as tmp:
        stage = Path(tmp)
        for name in files:
            src, dst = folder / name, stage / name
            if not src.is_file():
                continue
            dst.parent.mkdir(parents=True, exist_ok=True)
            if name == CARD_NAME:
                dst.write_text(card_for_repo(src.read_text(encoding="utf-8"), repo_id), encoding="utf-8")
                continue
            try:
                os.link(src, dst)  # no copy of the weights where the file system allows
            except OSError:
                shutil.copy2(src, dst)
        yield stage


def upload_folder(folder: str | Path, repo_id: str, *, repo_type: str = "model", files: Sequence[str] | None = None,
                  private: bool | None = None, revision: str | None = None, create_pr: bool = False,
                  token: str | bool | None = None, commit_message: str | None = None, large: bool = False,
                  max_retries: int = MAX_RETRIES, backoff: float = BACKOFF_BASE_S) -> UploadResult:
    """Upload ``folder`` (or only ``files``, paths relative to it) to ``repo_id`` as one commit.

    Creates the repo (``private`` applies to a new repo only) and the branch ``revision`` if missing (from the
    default branch), so pushing to a new branch just works. With ``create_pr`` the commit is opened as a pull
    request against the default branch (the Hub client accepts no ``revision`` then). ``large=True`` uses the
    client's ``upload_large_folder`` (many commits, resumable from its local state; no pull request) where it
    exists; newer clients have none because ``upload_folder`` itself splits and resumes large uploads, and it is
    used instead. Rate limits, server errors and connection failures are retried
    (``max_retries``, first wait ``backoff`` seconds); other failures raise a one-line
    :class:`~hfsoup.errors.PushError`. The token comes from the usual sources (``token``, ``HF_TOKEN``,
    ``hf auth login``) and is never printed.
    """
    from huggingface_hub import HfApi

    folder = Path(folder)
    if not folder.is_dir():
        raise HfSoupError(f"'{folder}' is not a folder: nothing to upload")
    if revision is not None and _SHA_RE.match(revision):
        raise InvalidParameterError(f"--revision {revision} is a commit sha: commits go to a branch; pass a branch "
                                    f"name", parameter="revision")
    if create_pr and (large or revision):
        raise InvalidParameterError(f"a pull request is opened against the default branch, in one commit: drop "
                                    f"--create-pr or {'--large' if large else '--revision'}", parameter="create_pr")
    if files is None:
        sent = _folder_files(folder)
    else:
        sent = sorted({Path(f).as_posix() for f in files if (folder / f).is_file()})
    if not sent:
        raise HfSoupError(f"'{folder}' holds no file to upload")

    api = HfApi(token=token)
    target = f"{repo_type} repo '{repo_id}'" if repo_type != "model" else f"'{repo_id}'"
    retry = dict(max_retries=max_retries, base=backoff, kind="push", repo_id=repo_id, revision=revision)
    with_retries(lambda: api.create_repo(repo_id, repo_type=repo_type, private=private, exist_ok=True),
                 f"create {target}", **retry)
    if revision and revision != "main":
        # The Hub does not create a missing branch on commit (it answers "Revision Not Found"): create it first,
        # from the default branch. An existing branch is left as it is.
        with_retries(lambda: api.create_branch(repo_id, branch=revision, repo_type=repo_type, exist_ok=True),
                     f"create branch '{revision}' of {target}", **retry)
    message = commit_message or f"Upload {folder.name} with hfsoup"
    patterns = None if files is None else sent
    if large and hasattr(api, "upload_large_folder"):
        with_retries(lambda: api.upload_large_folder(repo_id=repo_id, folder_path=str(folder), repo_type=repo_type,
                                                     revision=revision, private=private, allow_patterns=patterns),
                     f"push to {target}", **retry)
        head = with_retries(lambda: api.repo_info(repo_id, repo_type=repo_type, revision=revision), f"read {target}",
                            **retry)
        prefix = "" if repo_type == "model" else f"{repo_type}s/"
        return UploadResult(repo_id, repo_type, head.sha, f"{api.endpoint}/{prefix}{repo_id}/tree/{revision or 'main'}",
                            None, sent)
    info = with_retries(lambda: api.upload_folder(
        folder_path=str(folder), repo_id=repo_id, repo_type=repo_type, revision=revision, allow_patterns=patterns,
        create_pr=create_pr, commit_message=message), f"push to {target}", **retry)
    return UploadResult(repo_id, repo_type, info.oid, info.commit_url, info.pr_url, sent)


def push(folder: str | Path, repo_id: str, *, private: bool | None = None, create_pr: bool = False,
         revision: str | None = None, token: str | bool | None = None,
         commit_message: str | None = None) -> UploadResult:
    """Upload a model folder in hfsoup's Hub format (``model.safetensors``, ``config.json``, ``README.md``,
    ``soup.json`` where present) to the model repo ``repo_id`` as one commit, with :func:`upload_folder`
    (creating the repo, and the branch ``revision``, if needed). A card whose usage snippet still says
    ``hf-hub:ORG/NAME`` is uploaded naming ``repo_id`` (:func:`card_staged`; the local file is left as it is)."""
    folder = Path(folder)
    if not (folder / WEIGHTS_NAME).is_file() or not (folder / CONFIG_NAME).is_file():
        raise HfSoupError(f"'{folder}' is not a model folder ({WEIGHTS_NAME} and {CONFIG_NAME} needed): write one "
                          f"with hfsoup mix/soup --out first")
    files = [f for f in HUB_FILES if (folder / f).is_file()]
    with card_staged(folder, files, repo_id) as stage:  # the card's usage snippet names repo_id
        return upload_folder(stage, repo_id, repo_type="model", files=files, private=private, revision=revision,
                             create_pr=create_pr, token=token,
                             commit_message=commit_message or f"Upload {folder.name} with hfsoup")


__all__ = ["UploadResult", "upload_folder", "push", "card_for_repo", "card_placeholder", "card_staged",
           "CARD_PLACEHOLDER"]
