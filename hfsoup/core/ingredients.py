"""Ingredients: resolved model references with their config, safetensors metadata and lazily opened tensors.

Nothing here loads a full state dict: the safetensors header gives keys, shapes and dtypes, so compatibility is
checked before any averaging, and tensors are read one at a time by the averaging engine.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import torch

from hfsoup.errors import CorruptFileError, HfSoupError, IncompatibleModelsError
from hfsoup.core.models import build_model
from hfsoup.core.references import ModelRef, ResolvedModel, parse_reference, resolve

_ST_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool,
}


@dataclass(frozen=True)
class TensorInfo:
    shape: tuple[int, ...]
    dtype: torch.dtype
    offset: int = 0  # absolute byte offset of the tensor's data in its safetensors file
    nbytes: int = 0


def read_safetensors_header(path: Path) -> tuple[dict[str, TensorInfo], dict[str, str]]:
    """Keys, shapes and dtypes plus ``__metadata__`` of a safetensors file, reading only its header.

    Also checks that the file is as long as the header says, so a truncated download is caught up front.
    """
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            if n > size - 8 or n > 100 * 2**20:
                raise ValueError("header length out of range")
            header = json.loads(f.read(n))
        metadata = header.pop("__metadata__", None) or {}
        infos, end = {}, 0
        for key, entry in header.items():
            start, stop = entry["data_offsets"]
            infos[key] = TensorInfo(tuple(entry["shape"]), _ST_DTYPES[entry["dtype"]], 8 + n + start, stop - start)
            end = max(end, stop)
        if 8 + n + end > size:
            raise ValueError(f"file is truncated ({size} bytes, header needs {8 + n + end})")
    except (OSError, ValueError, KeyError, TypeError, struct.error) as e:
        raise CorruptFileError(f"'{path}' is not a valid safetensors file ({e}); delete it and download or save "
                               f"it again") from None
    return infos, {str(k): str(v) for k, v in metadata.items()}


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
            raise CorruptFileError(f"cannot open '{self.resolved.weights_file}': {e}") from None
        try:
            yield _SafeReader(fd, self.resolved.weights_file, self.tensors)
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
                                       f"it is not a plain tensor checkpoint") from None
            if isinstance(state, dict) and "state_dict" in state:
                state = state["state_dict"]
            self._pickle_state = state
        return self._pickle_state


class _SafeReader:
    """Reads one tensor of a safetensors file with ``pread`` at the offsets of its header.

    Plain reads instead of a memory map: with many ingredients open at once, mapped pages of every file would
    count against the process (resident set); read buffers are freed as soon as the tensor is consumed.
    """

    def __init__(self, fd: int, path: Path, infos: dict[str, TensorInfo]):
        self._fd, self._path, self._infos = fd, path, infos

    def get_tensor(self, key: str) -> torch.Tensor:
        info = self._infos[key]
        if info.nbytes == 0:
            return torch.empty(info.shape, dtype=info.dtype)
        buf = bytearray(info.nbytes)
        view, done = memoryview(buf), 0
        while done < info.nbytes:  # pread may return short reads on some filesystems
            got = os.preadv(self._fd, [view[done:]], info.offset + done)
            if got <= 0:
                raise CorruptFileError(f"cannot read tensor '{key}' from '{self._path}': file ended early")
            done += got
        return torch.frombuffer(buf, dtype=info.dtype).reshape(info.shape)


class _DictReader:
    def __init__(self, state):
        self._s = state

    def get_tensor(self, key: str) -> torch.Tensor:
        return self._s[key]


def sha256_file(path: str | Path, chunk: int = 2**22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


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
        raise CorruptFileError(f"{resolved.config_file} is not a timm config.json ({e})") from None
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

    for other in ingredients[1:]:
        where = f"'{other.reference}' vs '{ref.reference}'"
        if other.architecture != ref.architecture:
            raise IncompatibleModelsError(f"different architectures: {other.architecture} vs {ref.architecture} "
                                          f"({where}); soups need one architecture")
        missing = ref.tensors.keys() - other.tensors.keys()
        extra = other.tensors.keys() - ref.tensors.keys()
        if missing or extra:
            parts = []
            if missing:
                parts.append(f"missing {names(missing)}")
            if extra:
                parts.append(f"unexpected {names(extra)}")
            raise IncompatibleModelsError(f"different keys ({where}): " + "; ".join(parts))
        shapes = [k for k in ref.tensors if other.tensors[k].shape != ref.tensors[k].shape]
        if shapes:
            k = shapes[0]
            raise IncompatibleModelsError(
                f"different shapes ({where}) for {names(shapes)}: e.g. {k} {list(other.tensors[k].shape)} vs "
                f"{list(ref.tensors[k].shape)}")
        dtypes = [k for k in ref.tensors if other.tensors[k].dtype != ref.tensors[k].dtype]
        if dtypes:
            k = dtypes[0]
            raise IncompatibleModelsError(
                f"different dtypes ({where}) for {names(dtypes)}: e.g. {k} {other.tensors[k].dtype} vs "
                f"{ref.tensors[k].dtype}")
