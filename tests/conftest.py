"""Shared fixtures: tiny CIFAR-style models saved in hfsoup's format and a tiny CIFAR-100-shaped parquet dataset.

Everything is generated, offline and small (resnet10_cifar_nano, a few dozen 32x32 images).
"""

from __future__ import annotations

import os

# The HF libraries read these at import time: never touch the real Hub from tests.
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("HF_HUB_DISABLE_XET", "1")
os.environ.setdefault("TQDM_DISABLE", "1")
# A private HF home (datasets cache, hfsoup logit cache) and an endpoint where nothing listens: a test that forgot
# to use the loopback stand-in fails fast instead of reaching for the real Hub.
import tempfile  # noqa: E402

_HF_HOME = tempfile.mkdtemp(prefix="hfsoup-tests-hf-home-")
os.environ["HF_HOME"] = _HF_HOME
os.environ.pop("HFSOUP_CACHE", None)
os.environ["HF_ENDPOINT"] = "http://127.0.0.1:9"

from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

ARCH = "resnet10_cifar_nano"
NUM_CLASSES = 100


def make_model(seed: int, arch: str = ARCH, num_classes: int = NUM_CLASSES, bn_steps: int = 0):
    """A randomly initialised model; ``bn_steps`` forward passes in train mode give non-trivial BN buffers."""
    import timm

    import hfsoup  # noqa: F401

    torch.manual_seed(seed)
    model = timm.create_model(arch, num_classes=num_classes)
    if bn_steps:
        model.train()
        with torch.no_grad():
            for _ in range(bn_steps):
                model(torch.randn(4, 3, 32, 32))
    return model.eval()


def save_model_dir(path: Path, seed: int, **kwargs) -> Path:
    from hfsoup.hub.format import save_model

    meta = kwargs.pop("metadata", {"seed": seed})
    return save_model(make_model(seed, **kwargs), path, metadata=meta)


def folder_metadata(folder: Path) -> dict:
    """The decoded safetensors ``__metadata__`` of a model folder."""
    from safetensors import safe_open

    from hfsoup.core.safetensors_io import decode_metadata

    with safe_open(str(folder / "model.safetensors"), "pt") as f:
        return decode_metadata(f.metadata())


def folder_weights(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(folder / "model.safetensors"))


@pytest.fixture
def loaded_splits(monkeypatch) -> list:
    """Records the split of every ``hfsoup.data.images.load_image_data`` call (held-out isolation checks)."""
    import hfsoup.data.images as data_mod

    used, real = [], data_mod.load_image_data

    def spy(dataset, split="test", **kw):
        used.append(split)
        return real(dataset, split, **kw)

    monkeypatch.setattr(data_mod, "load_image_data", spy)
    return used


@pytest.fixture
def model_dirs(tmp_path):
    """Three compatible tiny models on disk (different seeds, BN buffers populated)."""
    return [save_model_dir(tmp_path / f"m{i}", seed=i, bn_steps=i + 1) for i in range(3)]


def make_cifar_like(n: int, seed: int = 0, num_classes: int = NUM_CLASSES, image_column: str = "img",
                    label_column: str = "fine_label"):
    """A ``datasets.Dataset`` with CIFAR-100's columns and features: PNG images, ClassLabel labels."""
    import datasets

    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, num_classes, size=n).tolist()
    names = [f"class_{i}" for i in range(num_classes)]
    features = datasets.Features({image_column: datasets.Image(),
                                  label_column: datasets.ClassLabel(names=names),
                                  "coarse_label": datasets.ClassLabel(names=[f"super_{i}" for i in range(20)])})
    from PIL import Image

    return datasets.Dataset.from_dict(
        {image_column: [Image.fromarray(a) for a in images], label_column: labels,
         "coarse_label": [lab % 20 for lab in labels]}, features=features)


def write_parquet_dataset(root: Path, n_train: int = 60, n_test: int = 40, **kwargs) -> Path:
    """A local dataset folder in the Hub's parquet layout (data/train-*.parquet, data/test-*.parquet)."""
    (root / "data").mkdir(parents=True, exist_ok=True)
    make_cifar_like(n_train, seed=1, **kwargs).to_parquet(str(root / "data" / "train-00000-of-00001.parquet"))
    make_cifar_like(n_test, seed=2, **kwargs).to_parquet(str(root / "data" / "test-00000-of-00001.parquet"))
    return root


@pytest.fixture(scope="session")
def cifar_parquet(tmp_path_factory):
    return write_parquet_dataset(tmp_path_factory.mktemp("cifar100"))
from hub_fixtures import *  # noqa: E402,F401,F403 - loopback Hub stand-in fixtures (hub, hub_offline, run_cli)
