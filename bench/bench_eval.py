"""Evaluation benchmark: images/s of the CIFAR ResNet-50 forward pass with the data path included
(decode from parquet through ``datasets`` → normalise once → batched inference), on the best available device.

    python bench/bench_eval.py                      # resnet50_cifar on 512 images
    python bench/bench_eval.py --arch resnet10_cifar_tiny --images 5000
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", default="resnet50_cifar")
    ap.add_argument("--images", type=int, default=512)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--device", default=None)
    args = ap.parse_args()

    import datasets
    import timm
    import torch
    from PIL import Image

    import hfsoup
    from hfsoup.eval.metrics import default_device, predict_logits

    device = torch.device(args.device) if args.device else default_device()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        ds = datasets.Dataset.from_dict(
            {"img": [Image.fromarray(a) for a in rng.integers(0, 256, (args.images, 32, 32, 3), dtype=np.uint8)],
             "fine_label": rng.integers(0, 100, args.images).tolist()},
            features=datasets.Features({"img": datasets.Image(),
                                        "fine_label": datasets.ClassLabel(num_classes=100)}))
        (Path(tmp) / "data").mkdir()
        ds.to_parquet(f"{tmp}/data/test-00000-of-00001.parquet")
        model = timm.create_model(args.arch).eval()

        t0 = time.perf_counter()
        data = hfsoup.load_image_data(tmp, "test", progress=False)
        t_decode = time.perf_counter() - t0
        predict_logits(model, data.subset(min(len(data), args.batch_size)), batch_size=args.batch_size,
                       device=device, progress=False)  # warm-up (cudnn autotune, allocator)
        if device.type == "cuda":
            torch.cuda.synchronize()
        t1 = time.perf_counter()
        predict_logits(model, data, batch_size=args.batch_size, device=device, progress=False)
        if device.type == "cuda":
            torch.cuda.synchronize()
        t_fwd = time.perf_counter() - t1
    n = args.images
    print(f"device: {device} ({torch.cuda.get_device_name() if device.type == 'cuda' else f'{torch.get_num_threads()} threads'})")
    print(f"{args.arch}: {n} images, batch {args.batch_size}")
    print(f"  decode (parquet -> uint8 tensor): {n / t_decode:,.0f} img/s")
    print(f"  forward (normalise once + inference): {n / t_fwd:,.1f} img/s")
    print(f"  end to end: {n / (t_decode + t_fwd):,.1f} img/s; "
          f"10,000-image CIFAR-100 test split ≈ {10_000 * (t_decode + t_fwd) / n:,.0f} s")


if __name__ == "__main__":
    main()
