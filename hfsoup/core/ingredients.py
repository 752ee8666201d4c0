"""Ingredients: resolved model references with their config, safetensors metadata and lazily opened tensors.

Nothing here loads a full state dict: the safetensors header gives keys, shapes and dtypes, so compatibility is
checked before any averaging, and tensors are read one at a time by the averaging engine.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import torch

from hfsoup.errors import CorruptFileError, HfSoupError, IncompatibleModelsError
from hfsoup.core.models import build_model, check_config
from hfsoup.core.references import ModelRef, ResolvedModel, parse_reference, resolve
from hfsoup.core.safetensors_io import SafetensorsReader, TensorInfo, read_safetensors_header, sha256_file

@dataclass
class Ingredient:
    """One model of a soup: its reference, config, safetensors metadata and tensor layout.

    Tensors are read lazily with :meth:`open` (a ``safe_open`` handle) or all at once with :meth:`state_dict`.
    """

    resolved: ResolvedModel
    config: dict
    metadata: dict[str, str]
    tensors: dict[str, TensorInfo]
    _sha256: str | None = field(default=None, repr=False)
    _pickle_state: dict | None = field(default=None, repr=False)

    # -- identity -------------------------------------------------------------------------------------------
    @property
    def reference(self) -> str:
        return self.resolved.ref.text

    @property
    def name(self) -> str:
        """Short display name: the repo id (with revision) or the folder name."""
        ref = self.resolved.ref
        if ref.is_local:
            return ref.local_path.resolve().name or ref.text
        return ref.repo_id + (f"@{ref.revision[:12]}" if ref.revision else "")

    @property
    def repo_id(self) -> str | None:
        return self.resolved.ref.repo_id

    @property
    def revision(self) -> str | None:
        return self.resolved.ref.revision

    @property
    def commit(self) -> str | None:
        return self.resolved.commit

    @property
    def architecture(self) -> str:
        return self.config.get("architecture", "?")

    @property
    def num_classes(self) -> int | None:
        return self.config.get("num_classes", self.config.get("pretrained_cfg", {}).get("num_classes"))

    @property
    def sha256(self) -> str:
        """SHA-256 of the weights file: the ingredient's content hash (cache keys, manifests)."""
        if self._sha256 is None:
            self._sha256 = sha256_file(self.resolved.weights_file)
        return self._sha256

    def describe(self) -> dict:
        """The ingredient as recorded in manifests: reference, repo, revision and resolved commit, hash."""
        return {
            "reference": self.reference,
            "name": self.name,
            "repo_id": self.repo_id,
            "revision": self.revision,
            "commit": self.commit,
            "path": None if self.repo_id else str(self.resolved.folder.resolve()),
            "sha256": self.sha256,
            "architecture": self.architecture,
        }

    # -- tensors --------------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def open(self) -> Iterator:
        """Context manager giving an object with ``get_tensor(key)``, reading one tensor at a time."""
        if self._pickle_state is not None or self.resolved.is_pickle:
            state = self._load_pickle()
            yield _DictReader(state)
            return
        try:
            fd = os.open(self.resolved.weights_file, os.O_RDONLY)
        except OSError as e:
            raise CorruptFileError(f"cannot open '{self.resolved.weights_file}': {e}",
                                   path=self.resolved.weights_file) from None
        try:
            yield SafetensorsReader(fd, self.resolved.weights_file, self.tensors)
        finally:
            os.close(fd)

    def state_dict(self) -> dict[str, torch.Tensor]:
        with self.open() as reader:
            return {k: reader.get_tensor(k) for k in self.tensors}

    def create_model(self, device: str | torch.device = "cpu") -> torch.nn.Module:
        """Instantiate the timm model of this ingredient with its weights, in eval mode."""
        return build_model(self.config, self.state_dict(), device=device)

    def _load_pickle(self) -> dict:
        if self._pickle_state is None:
            try:
                state = torch.load(self.resolved.weights_file, map_location="cpu", weights_only=True)
            except Exception as e:  # noqa: BLE001 - any unpickling failure is a corrupt file to the user
                raise CorruptFileError(f"cannot load '{self.resolved.weights_file}' ({type(e).__name__}); "
                                       f"it is not a plain tensor checkpoint",
                                       path=self.resolved.weights_file) from None
            if isinstance(state, dict) and "state_dict" in state:
                state = state["state_dict"]
            self._pickle_state = state
        return self._pickle_state




class _DictReader:
    def __init__(self, state):
        self._s = state

    def get_tensor(self, key: str) -> torch.Tensor:
        return self._s[key]


def load_ingredient(ref: str | os.PathLike | ModelRef, *, allow_pickle: bool = False, token=None,
                    cache_dir=None) -> Ingredient:
    """Resolve one model reference and read its config and tensor layout (not its tensors)."""
    if isinstance(ref, os.PathLike):  # a folder given as a Path is local, whatever its spelling
        ref = ModelRef(os.fspath(ref), local_path=Path(ref).expanduser())
    resolved = resolve(ref if isinstance(ref, ModelRef) else parse_reference(ref), allow_pickle=allow_pickle,
                       token=token, cache_dir=cache_dir)
    try:
        config = json.loads(resolved.config_file.read_text())
        if not isinstance(config, dict) or "architecture" not in config:
            raise ValueError("no 'architecture' field")
    except (ValueError, OSError) as e:
        raise CorruptFileError(f"{resolved.config_file} is not a timm config.json ({e})",
                               path=resolved.config_file) from None
    check_config(config, source=resolved.config_file)  # refuse unsafe entries before anything is built
    if resolved.is_pickle:
        ing = Ingredient(resolved, config, {}, {})
        state = ing._load_pickle()
        ing.tensors = {k: TensorInfo(tuple(v.shape), v.dtype) for k, v in state.items()}
        return ing
    tensors, metadata = read_safetensors_header(resolved.weights_file)
    return Ingredient(resolved, config, metadata, tensors)


def load_ingredients(refs: Sequence[str | os.PathLike | ModelRef | Ingredient], *, allow_pickle: bool = False,
                     token=None, cache_dir=None, check: bool = True, min_count: int = 1) -> list[Ingredient]:
    """Resolve model references into :class:`Ingredient` s and (by default) check they can be averaged.

    References are Hub ids (``org/name[@rev]``), folders (``str`` or :class:`os.PathLike`), :class:`ModelRef` s or
    :class:`Ingredient` s (used as they are). Every entry point of hfsoup goes through here.
    """
    refs = list(refs)
    if len(refs) < min_count:
        raise HfSoupError(f"a soup needs at least {min_count} models, got {len(refs)}: pass more model references")
    out = [r if isinstance(r, Ingredient) else
           load_ingredient(r, allow_pickle=allow_pickle, token=token, cache_dir=cache_dir) for r in refs]
    if check:
        check_compatible(out)
    return out


#: The name recipes use: any mix of references, paths and ingredients in, checked ingredients out.
as_ingredients = load_ingredients


def check_compatible(ingredients: Sequence[Ingredient], max_names: int = 5) -> None:
    """Raise :class:`IncompatibleModelsError` naming the differing keys unless all ingredients share the
    architecture, number of classes, keys, shapes and dtypes."""
    if not ingredients:
        return
    ref = ingredients[0]

    def names(keys):
        keys = sorted(keys)
        more = f", … ({len(keys)} in all)" if len(keys) > max_names else ""
        return ", ".join(keys[:max_names]) + more

    layout = {k: (t.shape, t.dtype) for k, t in ref.tensors.items()}
    for other in ingredients[1:]:
        where = f"'{other.reference}' vs '{ref.reference}'"
        if other.architecture != ref.architecture:
            raise IncompatibleModelsError(f"different architectures: {other.architecture} vs {ref.architecture} "
                                          f"({where}); soups need one architecture", keys=())
        if {k: (t.shape, t.dtype) for k, t in other.tensors.items()} == layout:
            continue  # the common case, in one comparison; what differs is worked out only when something does
        missing = ref.tensors.keys() - other.tensors.keys()
        extra = other.tensors.keys() - ref.tensors.keys()
        if missing or extra:
            parts = []
            if missing:
                parts.append(f"missing {names(missing)}")
            if extra:
                parts.append(f"unexpected {names(extra)}")
            raise IncompatibleModelsError(f"different keys ({where}): " + "; ".join(parts), keys=missing | extra)
        for what, of in (("shapes", lambda t: list(t.shape)), ("dtypes", lambda t: t.dtype)):
            differ = [k for k in ref.tensors if of(other.tensors[k]) != of(ref.tensors[k])]
            if differ:
                k = differ[0]
                raise IncompatibleModelsError(
                    f"different {what} ({where}) for {names(differ)}: e.g. {k} {of(other.tensors[k])} vs "
                    f"{of(ref.tensors[k])}", keys=differ)
