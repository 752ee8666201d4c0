"""Conversion of the original CIFAR-100-C release (Hendrycks & Dietterich, 2019) into a parquet Hub dataset.

The original release (Zenodo record 3555552, ``CIFAR-100-C.tar``) is a folder ``CIFAR-100-C/`` holding one uint8
array ``<corruption>.npy`` of shape (50000, 32, 32, 3) per corruption -- five blocks of 10,000 images, severity 1
to 5, each block in CIFAR-100 test-set order -- and ``labels.npy`` (the 10,000 test labels, repeated five times).

:func:`convert_release` writes the layout :mod:`hfsoup.data.cifar100c` reads: columns ``image`` (PNG), ``label``
(``ClassLabel``), ``corruption``, ``severity``; one config per corruption (folder ``<corruption>/`` of parquet
shards, split ``test``) plus ``all``, listed in the dataset card (``README.md``), so the folder loads with
``datasets.load_dataset(folder, "fog", split="test")`` as it is, and as a Hub dataset once pushed
(:func:`hfsoup.hub.datasets.push_dataset_folder`). The card is written here, with the data, because a local
folder needs it to be loadable. ``conversion.json`` records what was converted.
"""

from __future__ import annotations

import io
import tarfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from hfsoup.core.files import atomic_folder, atomic_write_json, atomic_write_text, check_output
from hfsoup.data.cifar100c import (CIFAR100_FINE_LABELS, COLUMNS, CORRUPTIONS, IMAGE_SHAPE, SEVERITIES, SHARD_ROWS,
                                   SPLIT)
from hfsoup.errors import DatasetError

CARD_NAME = "README.md"
CONVERSION_NAME = "conversion.json"
SOURCE_DESCRIPTION = "CIFAR-100-C (Hendrycks & Dietterich 2019, Zenodo 3555552)"


@dataclass
class ConversionResult:
    """What :func:`convert_release` wrote: the folder, the corruptions, block size, label names and shards.

    :meth:`to_dict` is the content of ``conversion.json`` plus ``out``.
    """

    out: Path
    converted_from: str
    corruptions: list[str]
    images_per_severity: int
    rows_per_corruption: int
    class_names: list[str]
    files: dict[str, list[str]] = field(default_factory=dict)
    labels_checked_against: str | None = None

    def manifest(self) -> dict:
        """The content of ``conversion.json``."""
        doc = asdict(self)
        doc.pop("out")
        return {"source": SOURCE_DESCRIPTION, **doc, "severities": list(SEVERITIES), "columns": list(COLUMNS)}

    def to_dict(self) -> dict:
        return {**self.manifest(), "out": str(self.out)}


# -- reading the original release ----------------------------------------------------------------------------------
class _Release:
    """The original release, as a folder or a ``.tar``: lists the arrays and reads them in row chunks."""

    def __init__(self, source: str | Path):
        self.source = Path(source).expanduser()
        if not self.source.exists():
            raise DatasetError(f"'{source}' does not exist: pass the CIFAR-100-C folder or CIFAR-100-C.tar "
                               f"(Zenodo record 3555552)")
        self.tar = None
        if self.source.is_dir():
            folder = self.source
            if not (folder / "labels.npy").exists() and (folder / "CIFAR-100-C").is_dir():
                folder = folder / "CIFAR-100-C"
            files = {p.stem: str(p) for p in folder.glob("*.npy") if not p.name.startswith("._")}
        else:
            try:
                self.tar = tarfile.open(self.source, "r:*")
                files = {}
                for m in self.tar:  # headers only; data is read per member, on demand
                    base = m.name.rsplit("/", 1)[-1]
                    if m.isfile() and base.endswith(".npy") and not base.startswith("._"):
                        files[base[:-4]] = m.name
            except (tarfile.TarError, OSError) as e:
                raise DatasetError(f"cannot read '{source}' as a tar archive ({e}): pass CIFAR-100-C.tar or the "
                                   f"extracted CIFAR-100-C folder") from None
        if "labels" not in files:
            raise DatasetError(f"no labels.npy in '{source}': is it the CIFAR-100-C release (Zenodo 3555552)?")
        unknown = sorted(set(files) - set(CORRUPTIONS) - {"labels"})
        if unknown:
            raise DatasetError(f"unknown corruption '{unknown[0]}.npy' in '{source}' (CIFAR-100-C has "
                               f"{', '.join(CORRUPTIONS)})")
        self.files = files
        self.corruptions = [c for c in CORRUPTIONS if c in files]
        if not self.corruptions:
            raise DatasetError(f"no corruption arrays (<corruption>.npy) in '{source}'")

    def close(self):
        if self.tar is not None:
            self.tar.close()

    def _open(self, name: str):
        if self.tar is None:
            return open(self.files[name], "rb")
        f = self.tar.extractfile(self.files[name])
        if f is None:
            raise DatasetError(f"cannot read {name}.npy from '{self.source}'")
        return f

    def header(self, name: str, f) -> tuple[tuple, np.dtype, bool]:
        try:
            version = np.lib.format.read_magic(f)
            read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                    else np.lib.format.read_array_header_2_0)
            shape, fortran, dtype = read(f)
            return tuple(shape), np.dtype(dtype), bool(fortran)
        except ValueError as e:
            raise DatasetError(f"{name}.npy in '{self.source}' is not a valid .npy file ({e})") from None

    def labels(self) -> np.ndarray:
        with self._open("labels") as f:
            shape, dtype, _ = self.header("labels", f)
            if len(shape) != 1 or dtype.kind not in "iu":
                raise DatasetError(f"labels.npy must be a 1-D integer array, got shape {shape} dtype {dtype}")
            data = f.read()
        return np.frombuffer(data, dtype=dtype, count=shape[0]).astype(np.int64)

    def chunks(self, name: str, rows: int, chunk: int) -> Iterator[np.ndarray]:
        """Rows of ``<name>.npy`` (checked: uint8, rows x 32 x 32 x 3), ``chunk`` rows at a time."""
        with self._open(name) as f:
            shape, dtype, fortran = self.header(name, f)
            if tuple(shape) != (rows, *IMAGE_SHAPE) or dtype != np.uint8 or fortran:
                raise DatasetError(f"{name}.npy has shape {tuple(shape)} dtype {dtype}, expected ({rows}, 32, 32, 3)"
                                   f" uint8 (5 severities x {rows // 5} images, as labels.npy)")
            row_bytes = int(np.prod(IMAGE_SHAPE))
            for start in range(0, rows, chunk):
                n = min(chunk, rows - start)
                buf = f.read(n * row_bytes)
                if len(buf) != n * row_bytes:
                    raise DatasetError(f"{name}.npy in '{self.source}' is truncated")
                yield np.frombuffer(buf, dtype=np.uint8).reshape(n, *IMAGE_SHAPE)


def _features(class_names: Sequence[str]):
    import datasets

    return datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=list(class_names)),
                              "corruption": datasets.Value("string"), "severity": datasets.Value("int64")})


def _png(arr: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def _reference_labels(dataset: str, revision: str | None = None):
    """Labels and class names of the test split of a CIFAR-100 dataset (Hub id or local folder)."""
    import datasets

    from hfsoup.data.images import LABEL_COLUMNS, load_split

    ds, _ = load_split(dataset, "test", revision=revision)
    col = next((c for c in LABEL_COLUMNS if c in ds.column_names), None)
    if col is None:
        raise DatasetError(f"'{dataset}' has no label column (fine_label or label)")
    feat = ds.features[col]
    names = list(feat.names) if isinstance(feat, datasets.ClassLabel) else None
    return np.asarray(ds.data.column(col).to_numpy(), dtype=np.int64), names


def is_converted(path: str | Path) -> bool:
    """True for a folder written by :func:`convert_release` (a README with configs and parquet shards)."""
    p = Path(path)
    return p.is_dir() and (p / CARD_NAME).is_file() and (p / CONVERSION_NAME).is_file()


def convert_release(source: str | Path, out: str | Path, *, force: bool = False, check_labels: str | None = None,
                    class_names_from: str | None = None, shard_rows: int = SHARD_ROWS,
                    progress: bool = True) -> ConversionResult:
    """Convert the original CIFAR-100-C release (folder or ``.tar``) into a parquet dataset folder at ``out``.

    Memory stays bounded: arrays are read ``shard_rows`` rows at a time and written shard by shard with a
    ``pyarrow.parquet.ParquetWriter``. The folder is written to a temporary sibling and renamed into place
    (``force`` replaces an existing one). ``check_labels`` names a CIFAR-100 dataset whose test labels must match
    ``labels.npy``; ``class_names_from`` one whose label names are used (default: CIFAR-100's fine names).
    Returns a :class:`ConversionResult`.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq
    from tqdm.auto import tqdm

    out = check_output(Path(out).expanduser(), force)  # fail before reading anything
    release = _Release(source)
    try:
        labels = release.labels()
        if len(labels) == 0 or len(labels) % 5:
            raise DatasetError(f"labels.npy has {len(labels)} rows: expected 5 severities x N test images")
        block = len(labels) // 5
        if not np.array_equal(labels, np.tile(labels[:block], 5)):
            raise DatasetError("labels.npy is not the same test labels repeated for the 5 severities")
        class_names = list(CIFAR100_FINE_LABELS)
        if class_names_from:
            _, names = _reference_labels(class_names_from)
            if not names:
                raise DatasetError(f"'{class_names_from}' has no ClassLabel names to use")
            class_names = names
        if labels.min() < 0 or labels.max() >= len(class_names):
            raise DatasetError(f"labels.npy holds labels outside 0..{len(class_names) - 1}")
        if check_labels:
            ref, _ = _reference_labels(check_labels)
            if len(ref) != block or not np.array_equal(ref, labels[:block]):
                n_bad = (int((ref != labels[:block]).sum()) if len(ref) == block else None)
                raise DatasetError(f"labels.npy does not match the test labels of '{check_labels}' ("
                                   + (f"{n_bad} of {block} differ" if n_bad is not None
                                      else f"{len(ref)} test images vs {block} per severity") + ")")
        features = _features(class_names)
        schema = features.arrow_schema
        severity_col = np.repeat(np.arange(1, 6, dtype=np.int64), block)

        with atomic_folder(out, force=force) as tmp:
            files: dict[str, list[str]] = {}
            rows_total = len(labels)
            n_shards = -(-rows_total // shard_rows)
            bar = tqdm(total=rows_total * len(release.corruptions), desc="converting", unit="img",
                       disable=not progress)
            for c in release.corruptions:
                bar.set_description(f"converting {c}")
                (tmp / c).mkdir()
                files[c] = []
                for i, arr in enumerate(release.chunks(c, rows_total, shard_rows)):
                    start = i * shard_rows
                    n = len(arr)
                    table = pa.table({
                        "image": pa.array([{"bytes": _png(a), "path": None} for a in arr],
                                          type=schema.field("image").type),
                        "label": pa.array(labels[start:start + n], type=pa.int64()),
                        "corruption": pa.array([c] * n, type=pa.string()),
                        "severity": pa.array(severity_col[start:start + n], type=pa.int64()),
                    }, schema=schema)
                    name = f"{c}/test-{i:05d}-of-{n_shards:05d}.parquet"
                    with pq.ParquetWriter(str(tmp / name), schema) as w:
                        w.write_table(table, row_group_size=1000)
                    files[c].append(name)
                    bar.update(n)
            bar.close()
            result = ConversionResult(out=out, converted_from=Path(source).name, corruptions=release.corruptions,
                                      images_per_severity=block, rows_per_corruption=rows_total,
                                      class_names=class_names, files=files, labels_checked_against=check_labels)
            atomic_write_json(tmp / CONVERSION_NAME, result.manifest())
            atomic_write_text(tmp / CARD_NAME, dataset_card(release.corruptions, block, class_names))
    finally:
        release.close()
    return result


def dataset_card(corruptions: Sequence[str], block: int, class_names: Sequence[str]) -> str:
    """README.md of the converted dataset: YAML ``configs`` (one per corruption + ``all``) and documentation."""
    import yaml

    configs = [{"config_name": c, "data_files": [{"split": SPLIT, "path": f"{c}/*.parquet"}]} for c in corruptions]
    configs.append({"config_name": "all", "data_files": [{"split": SPLIT, "path": "*/*.parquet"}]})
    meta = {
        "license": "cc-by-4.0",
        "task_categories": ["image-classification"],
        "tags": ["cifar100", "cifar-100-c", "robustness", "corruptions", "hfsoup"],
        "pretty_name": "CIFAR-100-C",
        "size_categories": ["100K<n<1M"] if len(corruptions) * block * 5 >= 100_000 else ["n<1K"],
        "configs": configs,
        "dataset_info": {"features": [
            {"name": "image", "dtype": "image"},
            {"name": "label", "dtype": {"class_label": {"names": {str(i): n for i, n in enumerate(class_names)}}}},
            {"name": "corruption", "dtype": "string"},
            {"name": "severity", "dtype": "int64"}]},
    }
    front = yaml.safe_dump(meta, sort_keys=False, allow_unicode=True)
    n = len(corruptions)
    return f"""---
{front}---

# CIFAR-100-C

The CIFAR-100 test set under {n} corruptions at 5 severities (Hendrycks & Dietterich, 2019), converted from the
original release (Zenodo record [3555552](https://zenodo.org/records/3555552), `CIFAR-100-C.tar`) to parquet by
[hfsoup](https://github.com/) (`hfsoup data cifar100c`). Pixels and labels are unchanged (lossless PNG).

## Layout

- One config per corruption ({', '.join(f'`{c}`' for c in corruptions)}) and `all`; each has one split, `test`.
- Folder `<corruption>/` holds parquet shards; rows are ordered by severity (1 to 5), {block:,} images per
  severity, each block in CIFAR-100 test-set order (row `i` of a block is test image `i`).
- Columns: `image` (PNG, 32x32 RGB), `label` (CIFAR-100 fine label, 100 classes), `corruption` (string),
  `severity` (1-5).

```python
from datasets import load_dataset
fog = load_dataset("<this repo or folder>", "fog", split="test")
fog3 = fog.filter(lambda s: s == 3, input_columns="severity")
```

Evaluate with `hfsoup eval MODEL --dataset cifar100-c=<this repo or folder> --severity 3`.

## Licence

CC BY 4.0, as the original release by Dan Hendrycks and Thomas Dietterich; CIFAR-100 is by Alex Krizhevsky
(2009). The label names are CIFAR-100's fine label names (class 26 is `crab`; the Hub copy `uoft-cs/cifar100`
spells it `cra`).

## Citation

```bibtex
@inproceedings{{hendrycks2019robustness,
  title={{Benchmarking Neural Network Robustness to Common Corruptions and Perturbations}},
  author={{Dan Hendrycks and Thomas Dietterich}},
  booktitle={{International Conference on Learning Representations}},
  year={{2019}}
}}
```
"""
