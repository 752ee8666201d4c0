"""Image classification data through ``datasets``: CIFAR-100 from the Hub, a local parquet folder or a saved
dataset, decoded once into a uint8 tensor, with the held-out split of the zoo recipe and a fingerprint.

Splits: ``test`` and ``train`` are the source's; ``val`` is the held-out 5 % of the source's train split
(``Dataset.train_test_split(test_size=0.05, seed=42)["test"]``) and ``train-main`` the other 95 % (what the zoo
trains on). Greedy soup and RADIN only ever read ``val``.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from hfsoup.errors import DatasetError, InvalidParameterError, first_line, from_client_error, is_connection_error

DEFAULT_DATASET = "uoft-cs/cifar100"
IMAGE_COLUMNS = ("img", "image")
LABEL_COLUMNS = ("fine_label", "label")
VAL_FRACTION = 0.05
SPLIT_SEED = 42
SPLITS = ("test", "val", "train", "train-main")


@dataclass
class ImageData:
    """Decoded images (uint8, N x C x H x W) and integer labels of one split, with provenance."""

    images: torch.Tensor
    labels: torch.Tensor
    class_names: list[str] | None
    dataset: str
    split: str
    revision: str | None = None
    indices_sha256: str | None = None  # hash of the chosen row indices (held-out splits)
    _fingerprint: str | None = field(default=None, repr=False)
    _normalized: dict = field(default_factory=dict, repr=False)
    label_column: str | None = None  # the column the labels were read from (named in label errors)
    _labels_checked: set = field(default_factory=set, repr=False)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def fingerprint(self) -> str:
        """SHA-256 of the decoded images and labels: identifies the split's content (cache keys, manifests)."""
        if self._fingerprint is None:
            h = hashlib.sha256()
            h.update(self.images.contiguous().numpy().tobytes())
            h.update(self.labels.to(torch.int64).numpy().tobytes())
            self._fingerprint = h.hexdigest()
        return self._fingerprint

    def normalized(self, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
        """Float32 images normalised with ``mean``/``std``, computed once per (mean, std) and kept."""
        key = (tuple(float(m) for m in mean), tuple(float(s) for s in std))
        if key not in self._normalized:
            m = torch.tensor(key[0]).view(1, -1, 1, 1)
            s = torch.tensor(key[1]).view(1, -1, 1, 1)
            self._normalized[key] = (self.images.float().div_(255.0) - m).div_(s)
        return self._normalized[key]

    def subset(self, n: int) -> "ImageData":
        return ImageData(self.images[:n], self.labels[:n], self.class_names, self.dataset, self.split,
                         self.revision, self.indices_sha256, label_column=self.label_column)

    def check_labels(self, num_classes: int | None = None, *, fix: str | None = None) -> None:
        """Raise :class:`DatasetError` naming the label column, the value and its row when a label is outside
        ``[0, num_classes)`` (the model's classes; by default the dataset's own class names, when it has them).

        Cross-entropy would silently ignore -100 and fail on other values, so every evaluation against labels
        checks them first. Negative labels are always refused. Checked once per ``num_classes``. ``fix``: what the
        message tells the user to do (default: the CLI's ``--label-column``).
        """
        limit = int(num_classes) if num_classes is not None else (
            len(self.class_names) if self.class_names else None)
        if limit in self._labels_checked:
            return
        check_label_values(self.labels, limit, column=self.label_column, dataset=self.dataset, split=self.split,
                           of_model=num_classes is not None, fix=fix)
        self._labels_checked.add(limit)

    def describe(self) -> dict:
        """Provenance recorded with every result."""
        return {"dataset": self.dataset, "revision": self.revision, "split": self.split, "num_samples": len(self),
                "fingerprint": self.fingerprint, "indices_sha256": self.indices_sha256}


def check_label_values(labels: torch.Tensor, num_classes: int | None, *, column: str | None = None,
                       dataset: str | None = None, split: str | None = None, of_model: bool = True,
                       fix: str | None = None) -> None:
    """Raise :class:`DatasetError` when a label is negative or (``num_classes`` given) ``>= num_classes``: the
    message names the column (when known), the first bad value and its row, and what to do."""
    if labels.numel() == 0:
        return
    bad = labels < 0
    if num_classes is not None:
        bad |= labels >= num_classes
    if not bool(bad.any()):
        return
    row = int(bad.nonzero()[0, 0])
    value = int(labels[row])
    where = f"label column '{column}'" if column else "the labels"
    if dataset:
        where += f" of '{dataset}'" + (f" [{split}]" if split else "")
    if value < 0:
        outside = "a negative label (-100 and -1 mark unlabelled rows; cross-entropy would skip -100 silently)"
    else:
        whose = "the model's" if of_model else "the dataset's"
        outside = f"outside {whose} {num_classes} classes [0, {num_classes})"
    holds = "holds" if column else "hold"
    fix = fix or "pass the right column with --label-column, or a dataset with the model's classes"
    raise DatasetError(f"{where} {holds} {value} at row {row}: {outside}: {fix}", dataset=dataset, column=column,
                       split=split)


def looks_like_path(dataset: str) -> bool:
    """Whether a ``--dataset`` value is meant as a local path rather than a Hub id (``org/name``): it starts with
    ``./``, ``../``, ``/`` or ``~``, has more than one ``/`` (a Hub id has at most one), a backslash on Windows,
    or a data file suffix."""
    text = str(dataset)
    seps = ("/", os.sep, os.altsep or "/")
    if text in (".", "..") or text.startswith(("~", *seps)) or any(text.startswith(f".{s}") or text.startswith(
            f"..{s}") for s in seps):
        return True
    if os.sep != "/" and os.sep in text:
        return True
    return text.count("/") >= 2 or text.lower().endswith((".parquet", ".arrow", ".csv", ".json", ".jsonl"))


def heldout_indices(num_rows: int, test_size: float = VAL_FRACTION, seed: int = SPLIT_SEED) -> tuple[list, list]:
    """Row indices (train part, held-out part) of ``Dataset.train_test_split(test_size, seed=seed)``.

    Computed by running that very function on an index column, so it matches the split of any dataset with
    ``num_rows`` rows exactly.
    """
    import datasets

    idx = datasets.Dataset.from_dict({"i": np.arange(num_rows, dtype=np.int64)})
    parts = idx.train_test_split(test_size=test_size, seed=seed)
    return list(parts["train"]["i"]), list(parts["test"]["i"])


def _indices_hash(indices: Sequence[int]) -> str:
    return hashlib.sha256(np.asarray(indices, dtype=np.int64).tobytes()).hexdigest()


def load_split(dataset: str = DEFAULT_DATASET, split: str = "test", *, revision: str | None = None,
               name: str | None = None):
    """The raw ``datasets.Dataset`` of ``split`` (``val``/``train-main`` carved from ``train``), and the row
    indices used for a carved split (None otherwise)."""
    if split not in SPLITS:
        raise DatasetError(f"unknown split '{split}': choose one of {', '.join(SPLITS)}", dataset=dataset,
                           split=split)
    source_split = "train" if split in ("val", "train-main") else split
    ds = _load_source(dataset, source_split, revision=revision, name=name)
    if split in ("val", "train-main"):
        train_idx, val_idx = heldout_indices(len(ds))
        indices = val_idx if split == "val" else train_idx
        return ds.select(indices), indices
    return ds, None


def _probe_hub(dataset: str, revision: str | None) -> None:
    """One bounded request (no retries) before ``datasets`` talks to the Hub: when the Hub cannot be reached, fail
    now with the one-line hint, instead of after the client's retries of every file request (over a minute with
    the default timeout). Any HTTP answer (not found, gated, ...) is left to ``datasets`` to report, as before."""
    import datasets
    from huggingface_hub import HfApi

    if datasets.config.HF_HUB_OFFLINE:  # HF_HUB_OFFLINE / HF_DATASETS_OFFLINE: the cache only, no request
        return
    try:
        HfApi().dataset_info(dataset, revision=revision)
    except Exception as e:  # noqa: BLE001 - only "no answer at all" is ours to report here
        if is_connection_error(e):
            raise from_client_error(e, f"dataset '{dataset}'", kind="dataset", repo_id=dataset,
                                    revision=revision) from None


def _load_source(dataset: str, split: str, *, revision: str | None, name: str | None):
    import datasets

    if dataset.startswith("sklearn:"):  # built-in small datasets (hfsoup.data.digits): offline, no download
        from hfsoup.data.digits import load_sklearn_split

        return load_sklearn_split(dataset, split)
    path = Path(dataset).expanduser()
    if not path.exists() and looks_like_path(dataset):
        # Not a Hub id: saying "not found on the Hub" would send the user to the wrong place.
        raise DatasetError(f"local dataset '{dataset}' does not exist: check the path (a parquet folder or file, "
                           f"or a save_to_disk folder), or pass a Hub dataset id (org/name)", dataset=dataset)
    try:
        if path.exists():
            if path.is_dir() and ((path / "dataset_dict.json").exists() or (path / "state.json").exists()):
                obj = datasets.load_from_disk(str(path))
                if isinstance(obj, datasets.DatasetDict):
                    if split not in obj:
                        raise DatasetError(f"'{dataset}' has no '{split}' split (it has {', '.join(obj)})",
                                           dataset=dataset, split=split)
                    return obj[split]
                return obj
            if path.is_file():
                return datasets.load_dataset("parquet", data_files={split: str(path)}, split=split)
            return datasets.load_dataset(str(path), name, split=split)
        from hfsoup.core.hubclient import configure

        configure()  # Hub requests of `datasets` go through huggingface_hub's client: bound them like ours
        _probe_hub(dataset, revision)
        return datasets.load_dataset(dataset, name, split=split, revision=revision)
    except DatasetError:
        raise
    except ValueError as e:
        msg = first_line(e)
        if "split" in msg.lower():  # the dataset is there, the split is not
            raise DatasetError(f"'{dataset}' has no '{split}' split ({msg})", dataset=dataset, split=split) from None
        if path.exists() and type(e).__module__.startswith("pyarrow"):  # ArrowInvalid: not parquet/arrow data
            raise DatasetError(f"local dataset '{dataset}' cannot be read ({type(e).__name__}: {msg[:160]}): pass a "
                               f"parquet file or folder, or a save_to_disk folder", dataset=dataset) from None
        raise from_client_error(e, f"dataset '{dataset}'", kind="dataset", dataset=dataset,
                                revision=revision) from None
    except Exception as e:  # noqa: BLE001 - datasets raises many types (FileNotFound, ConnectionError, HTTP errors…)
        raise from_client_error(e, f"dataset '{dataset}'", kind="dataset", dataset=dataset,
                                revision=revision) from None


def _pick_column(columns: Sequence[str], wanted: str | None, candidates: Sequence[str], what: str, option: str):
    if wanted is not None:
        if wanted not in columns:
            raise DatasetError(f"no {what} column '{wanted}' in the dataset (columns: {', '.join(columns)}); "
                               f"pass the right name with {option}", column=wanted)
        return wanted
    for c in candidates:
        if c in columns:
            return c
    raise DatasetError(f"cannot find the {what} column (tried {', '.join(candidates)}; columns: "
                       f"{', '.join(columns)}): name it with {option}")


def decode_images(values, size: int | None = 32, *, column: str | None = None, first_row: int = 0,
                  dataset: str | None = None) -> np.ndarray:
    """Decode a batch of image values (PIL images, ``{"bytes": …}`` dicts or arrays) to uint8 N x H x W x 3.

    A value that is not an image raises :class:`DatasetError` naming ``column`` and the row (``first_row`` + its
    position in the batch)."""
    from PIL import Image
    import io

    out = []
    for i, v in enumerate(values):
        try:
            if isinstance(v, dict):
                v = Image.open(io.BytesIO(v["bytes"])) if v.get("bytes") else Image.open(v["path"])
            if isinstance(v, Image.Image):
                v = v.convert("RGB")
                if size and v.size != (size, size):
                    v = v.resize((size, size), Image.BILINEAR)
                arr = np.asarray(v, dtype=np.uint8)
            else:
                arr = np.asarray(v, dtype=np.uint8)
                if arr.ndim == 2:
                    arr = np.repeat(arr[..., None], 3, axis=-1)
            if arr.ndim != 3 or arr.shape[-1] != 3 or (size and arr.shape[:2] != (size, size)):
                raise ValueError(f"an array of shape {tuple(arr.shape)}, not an RGB image"
                                 + (f" of {size}x{size}" if size else ""))
        except (OSError, ValueError, TypeError, KeyError, SyntaxError) as e:  # PIL raises all of these
            where = f"image column '{column}'" if column else "an image"
            where += f" of '{dataset}'" if dataset else ""
            raise DatasetError(f"{where}: row {first_row + i} cannot be decoded ({type(e).__name__}: "
                               f"{first_line(e)[:120]}): fix or drop that row, or name the image column with "
                               f"--image-column", dataset=dataset, column=column) from None
        out.append(arr)
    return np.stack(out)


def to_image_data(ds, *, dataset: str, split: str, revision: str | None = None, image_column: str | None = None,
                  label_column: str | None = None, limit: int | None = None, indices=None,
                  batch_size: int = 1000, progress: bool = True, image_size: int | None = 32) -> ImageData:
    """Decode a ``datasets.Dataset`` once into an :class:`ImageData`."""
    import datasets

    columns = list(ds.column_names)
    img_col = _pick_column(columns, image_column, IMAGE_COLUMNS, "image", "--image-column")
    lab_col = _pick_column(columns, label_column, LABEL_COLUMNS, "label", "--label-column")
    if limit is not None:
        if limit <= 0:
            raise InvalidParameterError(f"--limit must be positive, got {limit}", parameter="limit")
        ds = ds.select(range(min(limit, len(ds))))
        indices = None if indices is None else indices[:limit]
    if len(ds) == 0:
        raise DatasetError(f"split '{split}' of '{dataset}' is empty", dataset=dataset, split=split)
    feature = ds.features[lab_col]
    class_names = list(feature.names) if isinstance(feature, datasets.ClassLabel) else None
    ds = ds.select_columns([img_col, lab_col])
    if isinstance(ds.features[img_col], datasets.Image):
        ds = ds.cast_column(img_col, datasets.Image(decode=False))  # decode ourselves, in batches
    images = np.empty((len(ds), image_size or 32, image_size or 32, 3), dtype=np.uint8) if image_size else None
    chunks, labels = [], np.empty(len(ds), dtype=np.int64)
    bar = tqdm(total=len(ds), desc=f"decoding {split}", unit="img", disable=not progress, leave=False)
    for start in range(0, len(ds), batch_size):
        batch = ds[start:start + batch_size]
        arr = decode_images(batch[img_col], size=image_size, column=img_col, first_row=start, dataset=dataset)
        if images is not None:
            images[start:start + len(arr)] = arr
        else:
            chunks.append(arr)
        try:
            labels[start:start + len(arr)] = np.asarray(batch[lab_col], dtype=np.int64)
        except (TypeError, ValueError):
            raise DatasetError(f"label column '{lab_col}' does not hold integer class ids: pass the right one "
                               f"with --label-column", dataset=dataset, column=lab_col) from None
        bar.update(len(arr))
    bar.close()
    if images is None:
        images = np.concatenate(chunks)
    data = ImageData(torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(), torch.from_numpy(labels),
                     class_names, dataset, split, revision,
                     _indices_hash(indices) if indices is not None else None, label_column=lab_col)
    data.check_labels()  # negative labels, or labels past the dataset's own class names: wrong for any model
    return data


def load_image_data(dataset: str = DEFAULT_DATASET, split: str = "test", *, revision: str | None = None,
                    image_column: str | None = None, label_column: str | None = None, limit: int | None = None,
                    name: str | None = None, progress: bool = True) -> ImageData:
    """Load and decode one split of an image classification dataset.

    Args:
        dataset: a Hub dataset id (default ``uoft-cs/cifar100``), a local folder of parquet files, a parquet
            file, or a folder written by ``save_to_disk``.
        split: ``test``, ``train``, ``val`` (the held-out 5 % of train, seed 42) or ``train-main`` (the rest).
        image_column / label_column: column names; by default ``img``/``image`` and ``fine_label``/``label``.
        limit: keep only the first ``limit`` rows (quick runs).
    """
    ds, indices = load_split(dataset, split, revision=revision, name=name)
    return to_image_data(ds, dataset=dataset, split=split, revision=revision, image_column=image_column,
                         label_column=label_column, limit=limit, indices=indices, progress=progress)
