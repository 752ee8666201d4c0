"""Publishing a dataset folder (CIFAR-100-C converted by :mod:`hfsoup.data.cifar100c_release`, say) to a Hub
dataset repo, through the one upload path (:func:`hfsoup.hub.upload.upload_folder`).

The folder's ``README.md`` is its dataset card: its YAML ``configs`` make the folder loadable with
``datasets.load_dataset`` locally and on the Hub alike, so it is written with the data (by the conversion) and
pushed as it is.
"""

from __future__ import annotations

from pathlib import Path

from hfsoup.errors import DatasetError
from hfsoup.hub.upload import UploadResult, upload_folder

DATASET_CARD_NAME = "README.md"


def push_dataset_folder(folder: str | Path, repo_id: str, *, private: bool | None = None,
                        revision: str | None = None, token: str | bool | None = None, large: bool = False,
                        commit_message: str | None = None) -> UploadResult:
    """Upload a dataset folder (parquet shards and its ``README.md`` dataset card) to the dataset repo ``repo_id``.

    Creates the repo and the branch ``revision`` if missing. Safe to re-run: unchanged files are skipped (the
    conversion is deterministic, so reconverting gives the same bytes); ``large=True`` splits the upload into
    resumable commits (see :func:`~hfsoup.hub.upload.upload_folder`).
    """
    folder = Path(folder)
    if not (folder / DATASET_CARD_NAME).is_file():
        raise DatasetError(f"'{folder}' has no {DATASET_CARD_NAME} (its dataset card with the configs): is it a "
                           f"dataset folder written by `hfsoup data`?", dataset=str(folder))
    return upload_folder(folder, repo_id, repo_type="dataset", private=private, revision=revision, token=token,
                         large=large, commit_message=commit_message or f"Upload {folder.name} with hfsoup")


__all__ = ["push_dataset_folder"]
