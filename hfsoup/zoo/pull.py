"""Pulling a published zoo: the selected models of a manifest, each pinned to its commit sha, downloaded in
parallel and verified against the manifest's SHA-256 hashes. Resumable.

A manifest comes from the Hub, so it is untrusted: every repo id and file name is validated before any file
system call (:func:`~hfsoup.zoo.manifest.validate_manifest`), every folder written is checked to lie inside the
output folder, and only the files hfsoup reads (:data:`~hfsoup.zoo.manifest.PULLED_FILES`) are downloaded: a
pickle listed by a manifest is never fetched."""

from __future__ import annotations

import shutil
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path

from hfsoup.core.files import atomic_write_json, replace_folder
from hfsoup.errors import HfSoupError, InvalidParameterError
from hfsoup.zoo.layout import ZooError
from hfsoup.zoo.manifest import (MANIFEST_NAME, PULLED_FILES, ZooManifestError, load_zoo_manifest, repo_bar,
                                 select_models)

PARTIAL_NAME = ".partial"


class ChecksumError(ZooError):
    """A downloaded file's SHA-256 differs from the manifest's."""


@dataclass
class PulledModel:
    """One model of a pull: ``status`` is ``downloaded`` (by this run) or ``verified`` (already there)."""

    repo_id: str
    commit: str
    folder: str
    status: str

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class PullResult:
    """What :func:`pull_zoo` did: the output folder, its copy of the manifest, and the models in manifest order."""

    out: str
    manifest: str
    models: list[PulledModel] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"out": self.out, "manifest": self.manifest, "models": [m.to_dict() for m in self.models]}


def mismatched_files(folder: Path, files: dict[str, str]) -> list[str]:
    """Names of the files in ``folder`` that are missing or whose SHA-256 differs from ``files``."""
    from hfsoup.core.safetensors_io import sha256_file

    return [n for n, h in files.items() if not (folder / n).is_file() or sha256_file(folder / n) != h]


def pulled_files(m: dict) -> dict[str, str]:
    """The files of manifest entry ``m`` that a pull downloads (name -> sha256): those hfsoup reads, no other."""
    files = {n: h for n, h in m["files"].items() if n in PULLED_FILES}
    if not files:
        raise ZooManifestError(f"{m['repo_id']}: the manifest lists none of the files hfsoup reads "
                               f"({', '.join(PULLED_FILES)}): nothing to pull", repo_id=m["repo_id"])
    return files


def _inside(out: Path, name: str) -> Path:
    """``out/name``, checked to be a direct child of ``out`` once resolved (no ``..``, no link leading out)."""
    path = (out / name).resolve()
    if path.parent != out or name in (MANIFEST_NAME, PARTIAL_NAME):
        raise ZooManifestError(f"repo name '{name}' would be written outside '{out}' or over its {MANIFEST_NAME}: "
                               f"the manifest is not a zoo manifest hfsoup can pull", path=str(path))
    return path


def _pull_one(m: dict, out: Path, token) -> PulledModel:
    from huggingface_hub import snapshot_download

    name = m["repo_id"].split("/", 1)[1]
    files = pulled_files(m)
    dest = _inside(out, name)
    if dest.is_dir() and not mismatched_files(dest, files):
        return PulledModel(m["repo_id"], m["commit"], str(dest), "verified")
    partial = _inside(out / PARTIAL_NAME, name)  # out/.partial/name, unless .partial is a link leading out
    partial.mkdir(parents=True, exist_ok=True)
    snapshot_download(m["repo_id"], revision=m["commit"], local_dir=str(partial), allow_patterns=sorted(files),
                      token=token)
    bad = mismatched_files(partial, files)
    if bad:
        shutil.rmtree(partial, ignore_errors=True)
        raise ChecksumError(f"{m['repo_id']}@{m['commit'][:12]}: sha256 of {', '.join(bad)} does not match the "
                            f"manifest: the download is corrupt or the manifest is stale; nothing was kept",
                            repo_id=m["repo_id"], files=bad)
    shutil.rmtree(partial / ".cache", ignore_errors=True)  # the client's download bookkeeping
    replace_folder(partial, dest)
    return PulledModel(m["repo_id"], m["commit"], str(dest), "downloaded")


def pull_zoo(source: str | Path, out: str | Path, *, epochs: str | None = None, variants: str | None = None,
             kind: str | None = None, workers: int = 4, token: str | bool | None = None,
             progress: bool = True) -> PullResult:
    """Download the selected models of a zoo manifest into ``out/<repo-name>/``, each pinned to the manifest's
    commit sha, ``workers`` at a time, and verify every file's SHA-256 against the manifest.

    Folders that already verify are skipped, and downloads go through ``out/.partial/`` and are moved into place
    only once verified, so an interrupted pull resumes where it stopped. Writes ``out/zoo.json`` (the manifest).
    Raises :class:`ChecksumError` on a mismatch, :class:`~hfsoup.zoo.manifest.ZooManifestError` for a bad
    manifest; a failed download is the one-line error of :func:`hfsoup.errors.from_client_error`.
    """
    from hfsoup.core.hubclient import configure
    from hfsoup.errors import client_error_types, from_client_error

    manifest = load_zoo_manifest(source, token=token)  # validates every repo id and file name first
    if manifest.get("local"):
        raise ZooManifestError(f"'{source}' is an unpublished zoo folder (no {MANIFEST_NAME} with commit shas): "
                               f"push it with `hfsoup zoo push` first, or use its folders directly", path=str(source))
    if workers < 1:
        raise InvalidParameterError(f"--workers must be at least 1 (got {workers})", parameter="workers")
    selected = select_models(manifest["models"], epochs=epochs, variants=variants, kind=kind)
    if not selected:
        raise ZooError(f"no model of the manifest matches the selection (epochs={epochs}, variants={variants}): "
                       f"see `hfsoup zoo list {source}`")
    for m in selected:  # before any file system call
        pulled_files(m)
        _inside(Path(out).resolve(), m["repo_id"].split("/", 1)[1])
    given = Path(out)
    given.mkdir(parents=True, exist_ok=True)
    out = given.resolve()  # every folder written is checked to lie directly inside it
    configure()  # a Hub that does not answer fails within HFSOUP_HUB_TIMEOUT
    pulled, errors = [], []
    bar = repo_bar(len(selected), "pull", progress)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = {pool.submit(_pull_one, m, out, token): m for m in selected}
        for fut in as_completed(futures):
            m = futures[fut]
            try:
                pulled.append(fut.result())
            except HfSoupError as e:
                errors.append(e)
            except client_error_types() as e:
                errors.append(from_client_error(e, f"download {m['repo_id']}@{m['commit'][:12]}", kind="model",
                                                repo_id=m["repo_id"], revision=m["commit"]))
            bar.update(1)
    bar.close()
    atomic_write_json(out / MANIFEST_NAME, manifest)
    partial = out / PARTIAL_NAME
    if partial.is_dir() and not any(partial.iterdir()):
        partial.rmdir()
    if errors:
        first = errors[0]
        more = f" (and {len(errors) - 1} more failures; rerun to resume)" if len(errors) > 1 else " (rerun to resume)"
        first.args = (f"{first}{more}",)
        raise first
    order = {m["repo_id"]: i for i, m in enumerate(selected)}
    pulled.sort(key=lambda r: order[r.repo_id])
    return PullResult(out=str(given), manifest=str(given / MANIFEST_NAME), models=pulled)


__all__ = ["pull_zoo", "mismatched_files", "pulled_files", "PulledModel", "PullResult", "ChecksumError"]
