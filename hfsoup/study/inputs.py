"""What a study runs on: the models (from a zoo folder, a zoo manifest or a list of references) with their zoo
metadata, and the pairs.

Sources (:func:`resolve_models`):

* a **zoo folder** built by ``hfsoup zoo build`` (``trunk/eNNN``, ``branches/bNNN-vK``) — kind, epoch and variant
  come from each model's safetensors metadata;
* a **zoo manifest**: a folder pulled by ``hfsoup zoo pull`` (``zoo.json`` beside the model folders), a ``zoo.json``
  file, or a manifest repo on the Hub (``org/hfsoup-zoo[@rev]``) — every model is loaded as ``repo_id@commit``, pinned
  to the manifest's commit sha, and its weights are checked against the manifest's SHA-256;
* **two or more model references** (Hub ids, ``id@rev``, folders) — metadata from each model's safetensors header
  when present (models without a branch epoch are allowed; their shared epochs is then unknown).

A zoo's trunk checkpoints are left out unless ``kinds`` asks for them (the paper's study pairs the branches:
104 models, 5,356 pairs); a trunk checkpoint's epoch counts as its branch epoch.

Pairs (:func:`plan_pairs`): every unordered pair, ordered inside the pair by weight hash so the same two models
always give the same row ids whatever the order they were listed in; or the pairs of a ``--pairs`` file, in the
order written (α is the weight of the second model).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from hfsoup.core.ranges import IntRanges, parse_ranges
from hfsoup.errors import HfSoupError

__all__ = ["StudyModel", "Pair", "ModelSelection", "resolve_models", "read_pairs_file", "plan_pairs", "KINDS",
           "model_display_name"]

#: ``--kinds``: which models of a zoo take part.
KINDS = ("branch", "trunk", "all")
MANIFEST_NAME = "zoo.json"


class StudyInputError(HfSoupError):
    """The models or pairs of a study are unusable (one line that says what to do)."""


@dataclass
class StudyModel:
    """One model of the study, with what the table records about it.

    Attributes:
        name: short display name, unique within the study (``b150-v2``, ``trunk-e100``, a folder or repo name).
        reference: what was loaded (a folder, or ``repo_id@commit``).
        ingredient: the loaded :class:`~hfsoup.core.ingredients.Ingredient` (tensors are read lazily).
        repo / commit: the Hub repo id and commit sha, None for local models outside a manifest.
        sha: SHA-256 of the weights file (the content hash behind row ids and the cache).
        epoch: the branch epoch (a trunk checkpoint's epoch), None when unknown.
        variant: the branch variant, None for trunk checkpoints and models without one.
        kind: ``"trunk"``, ``"branch"`` or None.
    """

    name: str
    reference: str
    ingredient: object
    repo: str | None
    commit: str | None
    sha: str
    epoch: int | None
    variant: int | None
    kind: str | None

    def to_dict(self) -> dict:
        """The model's row of ``models.parquet`` (without scores)."""
        return {"name": self.name, "repo": self.repo, "commit": self.commit, "sha": self.sha, "epoch": self.epoch,
                "variant": self.variant, "kind": self.kind}


@dataclass(frozen=True)
class Pair:
    """Two models (indices into the model list); the soup is ``(1 − α)·a + α·b``."""

    a: int
    b: int


@dataclass
class ModelSelection:
    """The resolved models of a study and where they came from (``zoo``, ``manifest`` or ``models``)."""

    models: list[StudyModel]
    source: str
    source_kind: str

    def to_dict(self) -> dict:
        return {"source": self.source, "source_kind": self.source_kind,
                "models": [m.to_dict() for m in self.models]}


# -------------------------------------------------------------------------------------------------- metadata
def _as_int(value) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    return None


def zoo_fields(metadata: dict) -> tuple[int | None, int | None, str | None]:
    """``(epoch, variant, kind)`` from decoded zoo metadata: the branch epoch (a trunk checkpoint's epoch), the
    variant (None for the trunk), the kind (``trunk``/``branch``, inferred when absent)."""
    kind = metadata.get("kind") if metadata.get("kind") in ("trunk", "branch") else None
    branch_epoch = _as_int(metadata.get("branch_epoch"))
    epoch = _as_int(metadata.get("epoch"))
    variant = _as_int(metadata.get("variant"))
    if kind is None:
        kind = "branch" if branch_epoch is not None else None
    if kind == "trunk":
        return (epoch if epoch is not None else branch_epoch), None, kind
    return (branch_epoch if branch_epoch is not None else (epoch if kind == "branch" else None)), variant, kind


def model_display_name(kind: str | None, epoch: int | None, variant: int | None) -> str | None:
    """``b150-v2`` for a branch, ``trunk-e100`` for a trunk checkpoint, None when the metadata is missing."""
    if kind == "branch" and epoch is not None and variant is not None:
        return f"b{epoch:03d}-v{variant}"
    if kind == "trunk" and epoch is not None:
        return f"trunk-e{epoch:03d}"
    return None


def _decoded(ingredient) -> dict:
    from hfsoup.hub.format import decode_metadata

    return decode_metadata(ingredient.metadata or {})


# -------------------------------------------------------------------------------------------------- sources
@dataclass
class _Entry:
    reference: str | Path
    name: str | None = None
    repo: str | None = None
    commit: str | None = None
    epoch: int | None = None
    variant: int | None = None
    kind: str | None = None
    expected_sha: str | None = None
    from_metadata: bool = True  # take epoch/variant/kind from the safetensors metadata
    published: dict | None = None  # manifest entries by (kind, epoch, variant), for a built zoo that was pushed


def _is_model_folder(path: Path) -> bool:
    return (path / "config.json").is_file() and any(
        (path / n).is_file() for n in ("model.safetensors", "pytorch_model.bin"))


def _zoo_folder_entries(root: Path) -> list[_Entry]:
    entries = []
    for sub in ("trunk", "branches"):
        base = root / sub
        if base.is_dir():
            entries += [_Entry(p) for p in sorted(base.iterdir())
                        if p.is_dir() and not p.name.startswith(".") and _is_model_folder(p)]
    return entries


def _manifest_entries(manifest: dict, folder: Path | None) -> list[_Entry]:
    """Entries of a zoo manifest: local sub-folders of a pulled zoo when ``folder`` has them, else ``repo@commit``."""
    entries = []
    for m in manifest.get("models") or []:
        repo, commit = m.get("repo_id"), m.get("commit")
        kind = m.get("kind")
        epoch = _as_int(m.get("branch_epoch", m.get("epoch")))
        variant = _as_int(m.get("variant"))
        sha = (m.get("files") or {}).get("model.safetensors")
        local = folder / repo.split("/", 1)[-1] if folder is not None and repo else None
        if folder is not None:
            if local is None or not _is_model_folder(local):
                continue  # a pulled zoo holds the selected models only
            ref: str | Path = local
        else:
            if not commit:
                raise StudyInputError(f"{repo} has no commit sha in the manifest: studies pin every model; push the "
                                      f"zoo (hfsoup zoo push) or use its folder")
            ref = f"{repo}@{commit}"
        entries.append(_Entry(ref, repo=repo, commit=commit, epoch=epoch, variant=variant,
                              kind=kind if kind in ("trunk", "branch") else None, expected_sha=sha,
                              from_metadata=False))
    return entries


def _load_manifest(source: str, token) -> dict:
    from hfsoup.zoo.manifest import load_zoo_manifest

    return load_zoo_manifest(source, token=token)


def _source_entries(sources: Sequence[str | Path], token) -> tuple[list[_Entry], str, str]:
    """Entries, the source text and its kind (``zoo``, ``manifest``, ``models``)."""
    sources = [os.fspath(s) for s in sources]
    if not sources:
        raise StudyInputError("no models given: pass a zoo folder, a zoo manifest (org/hfsoup-zoo) or two or more "
                              "model references")
    if len(sources) > 1:
        return [_Entry(s) for s in sources], " ".join(sources), "models"
    text = sources[0]
    path = Path(text).expanduser()
    if path.is_dir():
        if _is_model_folder(path):
            raise StudyInputError(f"'{text}' is a single model: a study needs at least two models (pass two or more "
                                  f"model references, a zoo folder or a zoo manifest)")
        manifest = None
        if (path / MANIFEST_NAME).is_file():
            manifest = _load_manifest(str(path / MANIFEST_NAME), token)
            entries = _manifest_entries(manifest, path)
            if entries:
                return entries, text, "manifest"
        entries = _zoo_folder_entries(path)
        if not entries:
            raise StudyInputError(f"'{text}' holds no models (no trunk/ or branches/ model folders, no zoo.json with "
                                  f"pulled models): pass a zoo folder, a zoo manifest or model references")
        if manifest is not None:  # a built zoo after `hfsoup zoo push`: its manifest names the published repos
            published = {(m.get("kind"), _as_int(m.get("branch_epoch", m.get("epoch"))), _as_int(m.get("variant"))): m
                         for m in manifest.get("models") or []}
            for e in entries:
                e.published = published
        return entries, text, "zoo"
    if path.is_file():
        if path.suffix == ".json":
            return _manifest_entries(_load_manifest(str(path), token), None), text, "manifest"
        raise StudyInputError(f"'{text}' is a file, not a zoo folder, zoo.json or model: pass a zoo folder, a zoo "
                              f"manifest or two or more model references")
    if text.startswith((".", "/", "~")):
        raise StudyInputError(f"'{text}' does not exist: pass a zoo folder, a zoo manifest or model references")
    return _manifest_entries(_load_manifest(text, token), None), text, "manifest"


def resolve_models(sources: Sequence[str | Path], *, kinds: str | None = None, epochs: str | None = None,
                   variants: str | None = None, allow_pickle: bool = False, token=None) -> ModelSelection:
    """Resolve a study's sources into checked, compatible :class:`StudyModel` s (see the module docstring).

    Args:
        sources: one zoo folder / manifest, or two or more model references.
        kinds: ``branch``, ``trunk`` or ``all``; default ``branch`` for a zoo or manifest, ``all`` for references.
        epochs / variants: keep models whose epoch / variant is in the set (``"150-300"``, ``"1,3"``); a model
            without one is dropped by that filter.

    Raises:
        StudyInputError: fewer than two models (after filtering), a checksum mismatch, duplicate weights.
        IncompatibleModelsError: models that cannot be averaged (names the keys).
    """
    from hfsoup.core.ingredients import check_compatible, load_ingredients

    if kinds is not None and kinds not in KINDS:
        raise StudyInputError(f"--kinds must be one of {', '.join(KINDS)}, got '{kinds}'")
    epoch_set = parse_int_set(epochs, "--epochs")
    variant_set = parse_int_set(variants, "--variants")
    entries, source, source_kind = _source_entries(sources, token)
    kinds = kinds or ("all" if source_kind == "models" else "branch")
    # A manifest's models are filtered before loading (downloaded only if selected); others once their metadata
    # is read (the safetensors header only).
    entries = [e for e in entries if e.from_metadata or _keep(e, kinds, epoch_set, variant_set)]
    if not entries:
        raise StudyInputError(f"no model of '{source}' matches the selection (--kinds {kinds}, --epochs {epochs}, "
                              f"--variants {variants})")
    ingredients = load_ingredients([e.reference for e in entries], allow_pickle=allow_pickle, token=token,
                                   check=False)
    for entry, ing in zip(entries, ingredients):
        if entry.from_metadata:
            entry.epoch, entry.variant, entry.kind = zoo_fields(_decoded(ing))
            pub = (entry.published or {}).get((entry.kind, entry.epoch, entry.variant))
            if pub is not None and pub.get("commit") and (pub.get("files") or {}).get("model.safetensors") == \
                    ing.sha256:  # the published weights (not a model retrained since the push)
                entry.repo, entry.commit = pub.get("repo_id"), pub.get("commit")
        if entry.repo is None and ing.repo_id:
            entry.repo, entry.commit = ing.repo_id, ing.commit
    if any(e.from_metadata for e in entries):
        keep = [_keep(e, kinds, epoch_set, variant_set) for e in entries]
        entries = [e for e, k in zip(entries, keep) if k]
        ingredients = [i for i, k in zip(ingredients, keep) if k]
    if len(entries) < 2:
        what = "after the filters " if (epochs or variants or source_kind != "models") else ""
        raise StudyInputError(f"a study needs at least two models, {what}{len(entries)} left from '{source}'"
                              + (f" (--kinds {kinds}, --epochs {epochs}, --variants {variants})"
                                 if source_kind != "models" or epochs or variants else "")
                              + ": pass more models or widen the selection")
    check_compatible(ingredients)
    models: list[StudyModel] = []
    seen: dict[str, str] = {}
    for entry, ing in zip(entries, ingredients):
        sha = ing.sha256
        if entry.expected_sha and sha != entry.expected_sha:
            raise StudyInputError(f"{ing.reference}: the SHA-256 of model.safetensors ({sha[:12]}…) does not match "
                                  f"the manifest ({entry.expected_sha[:12]}…): the download is corrupt or the "
                                  f"manifest is stale")
        if sha in seen:
            raise StudyInputError(f"'{ing.reference}' and '{seen[sha]}' have the same weights: list each model once")
        seen[sha] = ing.reference
        models.append(StudyModel(name="", reference=ing.reference, ingredient=ing, repo=entry.repo,
                                 commit=entry.commit, sha=sha, epoch=entry.epoch, variant=entry.variant,
                                 kind=entry.kind))
    _assign_names(models)
    return ModelSelection(models, source, source_kind)


def _keep(entry: _Entry, kinds: str, epochs: IntRanges | None, variants: IntRanges | None) -> bool:
    if kinds != "all" and entry.kind is not None and entry.kind != kinds:
        return False
    if epochs is not None and entry.epoch not in epochs:
        return False
    if variants is not None and entry.variant not in variants:
        return False
    return True


def _short(reference: str) -> str:
    """The repo name of a Hub reference (``org/name@rev`` -> ``name``), the folder name of a local path."""
    s = reference[len("hf-hub:"):] if reference.startswith("hf-hub:") else reference
    s = s.split("@", 1)[0].rstrip("/\\")
    return s.replace("\\", "/").rsplit("/", 1)[-1] or reference


def _assign_names(models: list[StudyModel]) -> None:
    """Short unique names: the zoo name from the metadata (``b150-v2``), else the repo or folder name; a name
    shared by several models falls back to each one's full reference."""
    names = []
    for m in models:
        ing = m.ingredient
        local = getattr(getattr(ing, "resolved", None), "folder", None)
        base = _short(m.repo) if m.repo else (Path(local).resolve().name if local is not None else _short(m.reference))
        names.append(model_display_name(m.kind, m.epoch, m.variant) or base)
    counts: dict[str, int] = {}
    for n in names:
        counts[n] = counts.get(n, 0) + 1
    for m, n in zip(models, names):
        m.name = n if counts[n] == 1 else m.reference
    if len({m.name for m in models}) != len(models):  # two references spelled alike: number them
        for i, m in enumerate(models):
            m.name = f"{m.name}#{i}"


def parse_int_set(spec: str | None, what: str) -> IntRanges | None:
    """``"150-300"`` or ``"50,60,100-120"`` → an :class:`~hfsoup.core.ranges.IntRanges` (ranges inclusive, never
    expanded); None or empty → no filter. A bad spec raises :class:`~hfsoup.errors.InvalidRangeError`."""
    return parse_ranges(spec, what)


# ------------------------------------------------------------------------------------------------------ pairs
def _match(token: str, models: list[StudyModel]) -> int | None:
    """Index of the model named ``token``: its name, its reference, its repo id (with or without @commit), its
    folder (resolved path) or its weights sha (or a prefix of 12+ hex digits)."""
    for i, m in enumerate(models):
        if token in (m.name, m.reference) or (m.repo and token in (m.repo, f"{m.repo}@{m.commit}")):
            return i
    path = Path(token).expanduser()
    if path.exists():
        target = path.resolve()
        for i, m in enumerate(models):
            folder = getattr(getattr(m.ingredient, "resolved", None), "folder", None)
            if folder is not None and Path(folder).resolve() == target:
                return i
    if len(token) >= 12 and all(c in "0123456789abcdef" for c in token):
        hits = [i for i, m in enumerate(models) if m.sha.startswith(token)]
        if len(hits) == 1:
            return hits[0]
    return None


def read_pairs_file(path: str | Path, models: list[StudyModel]) -> list[Pair]:
    """Pairs of a ``--pairs`` file: one ``modelA modelB`` per line (names, references, folders or weight shas as
    in :func:`_match`); blank lines and ``#`` comments are skipped; a pair listed twice counts once.

    Raises:
        StudyInputError: the file is missing or empty, a line does not hold two models, a model is not among the
            study's models (the message names the file, the line and a few known names), or a model is paired with
            itself.
    """
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise StudyInputError(f"cannot read --pairs file '{path}': {e.__class__.__name__}") from None
    pairs: list[Pair] = []
    seen: set[Pair] = set()
    for number, line in enumerate(lines, 1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        tokens = text.replace(",", " ").split()
        if len(tokens) != 2:
            raise StudyInputError(f"{path}:{number}: expected two models 'modelA modelB', got {text!r}")
        idx = []
        for token in tokens:
            i = _match(token, models)
            if i is None:
                known = ", ".join(m.name for m in models[:6]) + (", …" if len(models) > 6 else "")
                raise StudyInputError(f"{path}:{number}: unknown model '{token}' (not among the study's "
                                      f"{len(models)} models after filters: {known})")
            idx.append(i)
        if idx[0] == idx[1]:
            raise StudyInputError(f"{path}:{number}: '{tokens[0]}' is paired with itself")
        pair = Pair(idx[0], idx[1])
        if pair not in seen:
            seen.add(pair)
            pairs.append(pair)
    if not pairs:
        raise StudyInputError(f"--pairs file '{path}' lists no pairs: one 'modelA modelB' per line")
    return pairs


def plan_pairs(models: list[StudyModel], pairs: list[Pair] | None = None) -> list[Pair]:
    """All unordered pairs (each ordered by weight sha, so the ids do not depend on the listing order) in the
    models' order, or the given ``pairs`` as they are."""
    if pairs is not None:
        return list(pairs)
    out = []
    for i in range(len(models)):
        for j in range(i + 1, len(models)):
            out.append(Pair(i, j) if models[i].sha <= models[j].sha else Pair(j, i))
    return out
