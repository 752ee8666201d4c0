"""CIFAR-100-C (Hendrycks & Dietterich, 2019): the corruptions and severities, and loading the converted dataset
per corruption and severity (a Hub dataset or a local folder).

The converted dataset (written by :func:`hfsoup.data.cifar100c_release.convert_release` from the original release)
has columns ``image`` (PNG, ``datasets.Image``), ``label`` (``ClassLabel`` with CIFAR-100's
100 fine names), ``corruption`` (string) and ``severity`` (int), one config per corruption (folder
``<corruption>/`` of parquet shards, split ``test``) plus ``all``; its ``README.md`` lists the configs so
``datasets.load_dataset(path_or_repo, "fog", split="test")`` works.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Sequence

import numpy as np

from hfsoup.errors import DatasetError, first_line, from_client_error

if TYPE_CHECKING:
    from hfsoup.data.images import ImageData

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


# -- loading -------------------------------------------------------------------------------------------------------
def _load_config(source: str, corruption: str, revision: str | None):
    import datasets

    path = Path(source).expanduser()
    if path.exists() and revision:
        raise DatasetError(f"--corrupted-revision applies to Hub datasets, not the local folder '{source}'",
                           dataset=source)
    try:
        if path.exists():
            # a local folder may be reconverted in place (--force): datasets' cache key would not see it, so
            # rebuild the arrow cache from the parquet files every time (cheap next to decoding).
            return datasets.load_dataset(str(path), corruption, split=SPLIT, download_mode="force_redownload",
                                         verification_mode="no_checks")
        return datasets.load_dataset(source, corruption, split=SPLIT, revision=revision)
    except ValueError as e:
        if "config" not in first_line(e).lower():
            raise from_client_error(e, f"CIFAR-100-C '{source}'", kind="dataset", dataset=source,
                                    revision=revision) from None
        raise DatasetError(f"'{source}' has no config '{corruption}': is it CIFAR-100-C converted by "
                           f"`hfsoup data cifar100c` (one config per corruption)?", dataset=source) from None
    except Exception as e:  # noqa: BLE001 - datasets raises many types (FileNotFound, ConnectionError, HTTP errors…)
        raise from_client_error(e, f"CIFAR-100-C '{source}'", kind="dataset", dataset=source,
                                revision=revision) from None


def iter_corrupted(source: str, corruptions="all", severities=3, *, revision: str | None = None,
                   limit: int | None = None, progress: bool = True) -> Iterator[tuple[str, int, "ImageData"]]:
    """Yield ``(corruption, severity, ImageData)`` for every selected cell, one corruption loaded at a time.

    ``source`` is a Hub dataset id or a local folder converted by
    :func:`~hfsoup.data.cifar100c_release.convert_release`. Each cell is decoded
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
                               f"{', '.join(have)}): choose --corruptions among those", dataset=source)
    for c in names:
        ds = _load_config(source, c, revision)
        missing = [col for col in COLUMNS if col not in ds.column_names]
        if missing:
            raise DatasetError(f"'{source}' ({c}) has no column {', '.join(missing)} (columns: "
                               f"{', '.join(ds.column_names)}): expected {', '.join(COLUMNS)} as written by "
                               f"`hfsoup data cifar100c`", dataset=source, column=missing[0])
        sev = np.asarray(ds.data.column("severity").to_numpy(), dtype=np.int64)
        for s in levels:
            idx = np.nonzero(sev == s)[0]
            if len(idx) == 0:
                raise DatasetError(f"'{source}' has no rows of severity {s} for '{c}'", dataset=source,
                                   column="severity")
            sub = ds.select(idx)
            data = to_image_data(sub, dataset=source, split=f"{c}/s{s}", revision=revision, image_column="image",
                                 label_column="label", limit=limit, progress=progress)
            yield c, s, data


def load_corrupted(source: str, corruptions="all", severities=3, **kwargs) -> dict:
    """``{(corruption, severity): ImageData}`` for the selection (holds everything in memory: prefer
    :func:`iter_corrupted` for the full 19 x 5 grid)."""
    return {(c, s): d for c, s, d in iter_corrupted(source, corruptions, severities, **kwargs)}
