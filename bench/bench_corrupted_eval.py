"""Throughput of the CIFAR-100-C evaluation with the data path included (parquet -> datasets -> PNG decode ->
normalise -> forward), on a generated release converted by hfsoup.

    python bench/bench_corrupted_eval.py [--images-per-severity 250] [--corruptions 2] [--archs ...] [--device cpu]

Prints images/s for each architecture, the share spent loading and decoding, and the estimated time for one model
at severity 3 on the full 19 corruptions x 10,000 images (190,000 images).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images-per-severity", type=int, default=250)
    ap.add_argument("--corruptions", type=int, default=2, help="how many corruptions to generate")
    ap.add_argument("--archs", default="resnet10_cifar_nano,resnet50_cifar")
    ap.add_argument("--batch-size", type=int, default=250)
    ap.add_argument("--device", default=None)
    args = ap.parse_args()

    import timm

    import hfsoup
    from hfsoup.data.cifar100c import CORRUPTIONS, iter_corrupted
    from hfsoup.data.cifar100c_release import convert_release
    from hfsoup.eval.metrics import default_device

    torch.set_num_threads(os.cpu_count() or 1)
    names = list(CORRUPTIONS[:args.corruptions])
    n = args.images_per_severity
    with tempfile.TemporaryDirectory() as tmp:
        rel = Path(tmp) / "CIFAR-100-C"
        rel.mkdir()
        rng = np.random.default_rng(0)
        np.save(rel / "labels.npy", np.tile(rng.integers(0, 100, n), 5).astype(np.uint8))
        for c in names:
            np.save(rel / f"{c}.npy", rng.integers(0, 256, (5 * n, 32, 32, 3), dtype=np.uint8))
        t0 = time.perf_counter()
        convert_release(rel, Path(tmp) / "conv", progress=False)
        t_conv = time.perf_counter() - t0
        rows = 5 * n * len(names)
        print(f"conversion: {rows} images in {t_conv:.2f} s ({rows / t_conv:,.0f} img/s, PNG encode + parquet)")
        src = str(Path(tmp) / "conv")
        # data path alone (first pass also builds the datasets arrow cache, as a first real run does)
        for label in ("data path, cold (arrow cache built)", "data path, warm"):
            t0 = time.perf_counter()
            total = sum(len(d) for _, _, d in iter_corrupted(src, ",".join(names), 3, progress=False))
            dt = time.perf_counter() - t0
            print(f"{label}: {total} images in {dt:.2f} s ({total / dt:,.0f} img/s load + decode)")
        per_img_data = dt / total
        print(f"device: {args.device or default_device()}, threads: {torch.get_num_threads()}")
        for arch in args.archs.split(","):
            model = timm.create_model(arch, num_classes=100).eval()
            t0 = time.perf_counter()
            res = hfsoup.evaluate_corrupted({arch: model}, src, ",".join(names), 3, batch_size=args.batch_size,
                                            device=args.device, progress=False)
            dt = time.perf_counter() - t0
            total = sum(r.num_samples for r in res.cells[arch].values())
            ips = total / dt
            est = 190_000 / ips
            print(f"{arch}: {total} images (severity 3) in {dt:.2f} s -> {ips:,.0f} img/s end to end "
                  f"(data path ≈ {100 * per_img_data * ips:.0f}% of it); estimated full severity-3 run "
                  f"(19 x 10,000 = 190,000 images): {est / 60:.1f} min")


if __name__ == "__main__":
    main()
