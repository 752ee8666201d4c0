"""scikit-learn's handwritten digits as a CIFAR-shaped ``datasets`` dataset (id ``sklearn:digits``).

1,797 8x8 grey images (values 0..16) are scaled to 0..255, upscaled to 32x32 (bilinear) and replicated to RGB,
with CIFAR's column names (``img``, ``fine_label``; ClassLabel names "0".."9"). The ``test`` split is a fixed 20 %
(``train_test_split(test_size=0.2, seed=0)``); ``val``/``train-main`` are carved from ``train`` by the usual rule
(5 %, seed 42). Everything is generated locally: no network.
"""

from __future__ import annotations

import functools

import numpy as np

DIGITS_ID = "sklearn:digits"
TEST_FRACTION = 0.2
TEST_SEED = 0


def is_sklearn_id(dataset: str) -> bool:
    return isinstance(dataset, str) and dataset.startswith("sklearn:")


def digits_images() -> tuple[np.ndarray, np.ndarray]:
    """uint8 N x 32 x 32 x 3 images and int64 labels, in scikit-learn's order."""
    import torch
    import torch.nn.functional as F
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.from_numpy(d.images.astype(np.float32) * (255.0 / 16.0))[:, None]
    x = F.interpolate(x, size=(32, 32), mode="bilinear", align_corners=False)
    x = x.round().clamp(0, 255).to(torch.uint8).repeat(1, 3, 1, 1).permute(0, 2, 3, 1).contiguous()
    return x.numpy(), d.target.astype(np.int64)


@functools.lru_cache(maxsize=1)
def digits_dataset_dict():
    """``DatasetDict(train=…, test=…)`` with features img (Image) / fine_label (ClassLabel "0".."9")."""
    import datasets
    from PIL import Image

    images, labels = digits_images()
    features = datasets.Features({"img": datasets.Image(),
                                  "fine_label": datasets.ClassLabel(names=[str(i) for i in range(10)])})
    full = datasets.Dataset.from_dict({"img": [Image.fromarray(a) for a in images], "fine_label": labels.tolist()},
                                      features=features)
    parts = full.train_test_split(test_size=TEST_FRACTION, seed=TEST_SEED)
    return datasets.DatasetDict(train=parts["train"], test=parts["test"])


def load_sklearn_split(dataset: str, split: str):
    """The source split (``train`` or ``test``) of a ``sklearn:NAME`` dataset."""
    from hfsoup.errors import DatasetError

    name = dataset.split(":", 1)[1]
    if name != "digits":
        raise DatasetError(f"unknown scikit-learn dataset '{dataset}': only {DIGITS_ID} is built in")
    dd = digits_dataset_dict()
    if split not in dd:
        raise DatasetError(f"'{dataset}' has no '{split}' split (it has train, test)")
    return dd[split]
