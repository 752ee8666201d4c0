"""CIFAR-100-C (Hendrycks & Dietterich, 2019): convert the original release into a parquet Hub dataset, publish
it, and load it back per corruption and severity.

The original release (Zenodo record 3555552, ``CIFAR-100-C.tar``) is a folder ``CIFAR-100-C/`` holding one uint8
array ``<corruption>.npy`` of shape (50000, 32, 32, 3) per corruption -- five blocks of 10,000 images, severity 1
to 5, each block in CIFAR-100 test-set order -- and ``labels.npy`` (the 10,000 test labels, repeated five times).

The converted dataset has columns ``image`` (PNG, ``datasets.Image``), ``label`` (``ClassLabel`` with CIFAR-100's
100 fine names), ``corruption`` (string) and ``severity`` (int), one config per corruption (folder
``<corruption>/`` of parquet shards, split ``test``) plus ``all``; its ``README.md`` lists the configs so
``datasets.load_dataset(path_or_repo, "fog", split="test")`` works.
"""

from __future__ import annotations

import io
import json
import re
import shutil
import tarfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from hfsoup.errors import DatasetError, HfSoupError, PushError, first_line

COMMON_CORRUPTIONS = ("gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur", "motion_blur",
                      "zoom_blur", "snow", "frost", "fog", "brightness", "contrast", "elastic_transform", "pixelate",
                      "jpeg_compression")
EXTRA_CORRUPTIONS = ("speckle_noise", "gaussian_blur", "spatter", "saturate")
CORRUPTIONS = COMMON_CORRUPTIONS + EXTRA_CORRUPTIONS
CORRUPTION_SETS = {"all": CORRUPTIONS, "common": COMMON_CORRUPTIONS, "extra": EXTRA_CORRUPTIONS}
SEVERITIES = (1, 2, 3, 4, 5)
COLUMNS = ("image", "label", "corruption", "severity")
SPLIT = "test"
#: Where ``--eval-corrupted`` looks when no ``--corrupted-dataset`` is given (publish it there first).
DEFAULT_CORRUPTED_DATASET = "hfsoup/cifar100-c"
SHARD_ROWS = 10_000
IMAGE_SHAPE = (32, 32, 3)

#: CIFAR-100's 100 fine label names, in label order (Krizhevsky 2009, ``meta['fine_label_names']``).
#: Note: the Hub copy ``uoft-cs/cifar100`` spells class 26 "cra" (a typo of "crab"); we keep the original
#: spelling. Pass ``class_names_from`` to take the names of a given CIFAR dataset instead.
CIFAR100_FINE_LABELS = (
    "apple", "aquarium_fish", "baby", "bear", "beaver", "bed", "bee", "beetle", "bicycle", "bottle", "bowl", "boy",
    "bridge", "bus", "butterfly", "camel", "can", "castle", "caterpillar", "cattle", "chair", "chimpanzee", "clock",
    "cloud", "cockroach", "couch", "crab", "crocodile", "cup", "dinosaur", "dolphin", "elephant", "flatfish",
    "forest", "fox", "girl", "hamster", "house", "kangaroo", "keyboard", "lamp", "lawn_mower", "leopard", "lion",
    "lizard", "lobster", "man", "maple_tree", "motorcycle", "mountain", "mouse", "mushroom", "oak_tree", "orange",
    "orchid", "otter", "palm_tree", "pear", "pickup_truck", "pine_tree", "plain", "plate", "poppy", "porcupine",
    "possum", "rabbit", "raccoon", "ray", "road", "rocket", "rose", "sea", "seal", "shark", "shrew", "skunk",
    "skyscraper", "snail", "snake", "spider", "squirrel", "streetcar", "sunflower", "sweet_pepper", "table", "tank",
    "telephone", "television", "tiger", "tractor", "train", "trout", "tulip", "turtle", "wardrobe", "whale",
    "willow_tree", "wolf", "woman", "worm",
)
assert len(CIFAR100_FINE_LABELS) == 100


# -- selection -----------------------------------------------------------------------------------------------------
def parse_corruptions(spec: str | Sequence[str] | None = "all") -> tuple[str, list[str]]:
    """``"all"``, ``"common"``, ``"extra"``, corruption names, or a comma list of those -> (set name, names).

    The set name is ``all``/``common``/``extra`` when the selection is exactly one of them, else the names joined
    with ``+``. Unknown names are an error that lists the valid ones.
    """
    items = ([t.strip() for t in spec.split(",")] if isinstance(spec, str) else list(spec or ["all"]))
    items = [t for t in items if t] or ["all"]
    names: list[str] = []
    for t in items:
        key = t.lower().replace("-", "_")
        group = CORRUPTION_SETS.get(key)
        if group is None and key not in CORRUPTIONS:
            raise DatasetError(f"unknown corruption '{t}': choose all, common, extra or names among "
                               f"{', '.join(CORRUPTIONS)}")
        for n in group or (key,):
            if n not in names:
                names.append(n)
    names = [c for c in CORRUPTIONS if c in names]  # canonical order
    set_name = next((k for k, v in CORRUPTION_SETS.items() if list(v) == names), "+".join(names))
    return set_name, names


def parse_severities(spec: str | int | Sequence[int] | None = 3) -> list[int]:
    """A level (``3``), a range (``1-5``) or a comma list (``1,3,5``) of severities in 1–5."""
    if spec is None:
        spec = 3
    if isinstance(spec, int):
        values = [spec]
    elif isinstance(spec, str):
        values = []
        try:
            for part in (p.strip() for p in spec.split(",") if p.strip()):
                m = re.fullmatch(r"(-?\d+)\s*-\s*(-?\d+)", part)
                if m:
                    lo, hi = int(m.group(1)), int(m.group(2))
                    if lo > hi:
                        raise DatasetError(f"empty severity range '{part}': write it low-high, e.g. 1-5")
                    values.extend(range(lo, hi + 1))
                else:
                    values.append(int(part))
        except ValueError:
            raise DatasetError(f"--severity takes a level (3), a range (1-5) or a comma list (1,3,5), "
                               f"got '{spec}'") from None
    else:
        values = [int(v) for v in spec]
    if not values:
        raise DatasetError("no severity given: pass e.g. --severity 3 or --severity 1-5")
    bad = [v for v in values if v not in SEVERITIES]
    if bad:
        raise DatasetError(f"severity must be between 1 and 5, got {bad[0]}")
    return sorted(set(values))


# -- reading the original release ----------------------------------------------------------------------------------
@dataclass
class _Member:
    name: str  # corruption name or "labels"
    where: str  # path (folder) or member name (tar)


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
    return p.is_dir() and (p / "README.md").is_file() and (p / "conversion.json").is_file()


def convert_release(source: str | Path, out: str | Path, *, force: bool = False, check_labels: str | None = None,
                    class_names_from: str | None = None, shard_rows: int = SHARD_ROWS,
                    progress: bool = True) -> dict:
    """Convert the original CIFAR-100-C release (folder or ``.tar``) into a parquet dataset folder at ``out``.

    Memory stays bounded: arrays are read ``shard_rows`` rows at a time and written shard by shard with a
    ``pyarrow.parquet.ParquetWriter``. The folder is written to a temporary sibling and renamed into place
    (``force`` replaces an existing one). ``check_labels`` names a CIFAR-100 dataset whose test labels must match
    ``labels.npy``; ``class_names_from`` one whose label names are used (default: CIFAR-100's fine names).
    Returns a summary (corruptions, block size, rows, files).
    """
    import pyarrow as pa
    import pyarrow.parquet as pq
    from tqdm.auto import tqdm

    from hfsoup.hub.format import _replace_dir, check_output

    out = check_output(Path(out).expanduser(), force)
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

        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.parent / f".{out.name}.tmp-{uuid.uuid4().hex[:8]}"
        tmp.mkdir()
        try:
            files = {}
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
                        "image": pa.array([{"bytes": _png(a), "path": None} for a in arr], type=schema.field("image").type),
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
            summary = {"source": "CIFAR-100-C (Hendrycks & Dietterich 2019, Zenodo 3555552)",
                       "converted_from": Path(source).name, "corruptions": release.corruptions,
                       "images_per_severity": block, "rows_per_corruption": rows_total,
                       "severities": list(SEVERITIES), "columns": list(COLUMNS), "files": files,
                       "labels_checked_against": check_labels, "class_names": class_names}
            (tmp / "conversion.json").write_text(json.dumps(summary, indent=2) + "\n")
            (tmp / "README.md").write_text(dataset_card(release.corruptions, block, class_names))
            _replace_dir(tmp, out)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    finally:
        release.close()
    return dict(summary, out=str(out))


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


# -- publishing ----------------------------------------------------------------------------------------------------
def push_converted(folder: str | Path, repo_id: str, *, private: bool | None = None, revision: str | None = None,
                   token: str | None = None, large: bool = False) -> dict:
    """Upload a converted folder to a Hub dataset repo (created if missing).

    Safe to re-run: ``upload_folder`` compares file hashes with the repo and skips an upload when nothing
    changed (the conversion is deterministic, so reconverting gives the same files); ``large=True`` uses
    ``upload_large_folder``, which resumes an interrupted upload from its local state.
    """
    from huggingface_hub import HfApi

    folder = Path(folder)
    if not is_converted(folder):
        raise DatasetError(f"'{folder}' is not a converted CIFAR-100-C folder (no conversion.json/README.md)")
    api = HfApi(token=token)
    try:
        api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
        if large:
            api.upload_large_folder(repo_id=repo_id, folder_path=str(folder), repo_type="dataset",
                                    revision=revision, private=private)
            return {"repo_id": repo_id, "commit": None, "url": f"{api.endpoint}/datasets/{repo_id}"}
        info = api.upload_folder(repo_id=repo_id, folder_path=str(folder), repo_type="dataset", revision=revision,
                                 commit_message="Upload CIFAR-100-C (parquet, converted by hfsoup)")
        return {"repo_id": repo_id, "commit": getattr(info, "oid", None),
                "url": getattr(info, "commit_url", None) or f"{api.endpoint}/datasets/{repo_id}"}
    except HfSoupError:
        raise
    except Exception as e:  # noqa: BLE001 - HfHubHTTPError, connection errors…
        msg = first_line(e)
        raise PushError(f"cannot push '{folder}' to dataset repo '{repo_id}' ({type(e).__name__}: {msg[:200]}); "
                        f"check HF_TOKEN / `hf auth login` and your network, then re-run (it is safe)") from None


# -- loading -------------------------------------------------------------------------------------------------------
def _load_config(source: str, corruption: str, revision: str | None):
    import datasets

    path = Path(source).expanduser()
    try:
        if path.exists():
            if revision:
                raise DatasetError(f"--corrupted-revision applies to Hub datasets, not the local folder '{source}'")
            # a local folder may be reconverted in place (--force): datasets' cache key would not see it, so
            # rebuild the arrow cache from the parquet files every time (cheap next to decoding).
            return datasets.load_dataset(str(path), corruption, split=SPLIT, download_mode="force_redownload",
                                         verification_mode="no_checks")
        return datasets.load_dataset(source, corruption, split=SPLIT, revision=revision)
    except DatasetError:
        raise
    except ValueError as e:
        msg = first_line(e)
        if "config" in msg.lower():
            raise DatasetError(f"'{source}' has no config '{corruption}': is it CIFAR-100-C converted by "
                               f"`hfsoup data cifar100c` (one config per corruption)?") from None
        raise DatasetError(f"cannot load CIFAR-100-C '{source}' ({msg[:200]})") from None
    except Exception as e:  # noqa: BLE001
        msg = first_line(e)
        hint = ("" if path.exists() else "; offline? convert the release with `hfsoup data cifar100c --from "
                "CIFAR-100-C.tar --out DIR` and pass DIR")
        raise DatasetError(f"cannot load CIFAR-100-C '{source}' ({type(e).__name__}: {msg[:200]}){hint}") from None


def iter_corrupted(source: str, corruptions="all", severities=3, *, revision: str | None = None,
                   limit: int | None = None, progress: bool = True) -> Iterator[tuple[str, int, "ImageData"]]:
    """Yield ``(corruption, severity, ImageData)`` for every selected cell, one corruption loaded at a time.

    ``source`` is a Hub dataset id or a local folder converted by :func:`convert_release`. Each cell is decoded
    once; ``limit`` keeps the first N images of each cell.
    """
    from hfsoup.data.images import to_image_data

    set_name, names = parse_corruptions(corruptions)
    levels = parse_severities(severities)
    conv = Path(source).expanduser() / "conversion.json"
    if conv.is_file():  # a local converted folder lists what it holds: fail before decoding anything
        try:
            have = json.loads(conv.read_text()).get("corruptions") or []
        except ValueError:
            have = []
        missing = [c for c in names if have and c not in have]
        if missing:
            raise DatasetError(f"'{source}' has no corruption {', '.join(missing[:3])}"
                               f"{' …' if len(missing) > 3 else ''} (selection '{set_name}'; it has "
                               f"{', '.join(have)}): choose --corruptions among those")
    for c in names:
        ds = _load_config(source, c, revision)
        missing = [col for col in COLUMNS if col not in ds.column_names]
        if missing:
            raise DatasetError(f"'{source}' ({c}) has no column {', '.join(missing)} (columns: "
                               f"{', '.join(ds.column_names)}): expected {', '.join(COLUMNS)} as written by "
                               f"`hfsoup data cifar100c`")
        sev = np.asarray(ds.data.column("severity").to_numpy(), dtype=np.int64)
        for s in levels:
            idx = np.nonzero(sev == s)[0]
            if len(idx) == 0:
                raise DatasetError(f"'{source}' has no rows of severity {s} for '{c}'")
            sub = ds.select(idx)
            data = to_image_data(sub, dataset=source, split=f"{c}/s{s}", revision=revision, image_column="image",
                                 label_column="label", limit=limit, progress=progress)
            yield c, s, data


def load_corrupted(source: str, corruptions="all", severities=3, **kwargs) -> dict:
    """``{(corruption, severity): ImageData}`` for the selection (holds everything in memory: prefer
    :func:`iter_corrupted` for the full 19 x 5 grid)."""
    return {(c, s): d for c, s, d in iter_corrupted(source, corruptions, severities, **kwargs)}
