"""Averaging benchmark: time and peak memory to average N ResNet-50-sized safetensors files (N = 2, 8, 32)
against the time to merely read the same files.

    python bench/bench_average.py            # N = 2, 8, 32 (about 3 GB of temporary files for N = 32)
    python bench/bench_average.py --n 2 8    # a quicker run

Peak memory is the process's resident-set high-water mark (ru_maxrss) measured in a fresh subprocess per N, so
one measurement does not inherit another's peak.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _make_files(root: Path, n: int) -> list[str]:
    import timm
    import torch

    import hfsoup

    base = timm.create_model("resnet50_cifar")
    paths = []
    for i in range(n):
        folder = root / f"m{i}"
        if not folder.exists():
            torch.manual_seed(i)
            with torch.no_grad():
                for p in base.parameters():
                    p.add_(torch.randn_like(p) * 1e-3)
            hfsoup.hub.format.save_model(base, folder)
        paths.append(str(folder))
    return paths


def _worker(mode: str, paths: list[str]) -> None:
    from safetensors import safe_open

    import hfsoup

    t0 = time.perf_counter()
    if mode == "read":
        total = 0
        for p in paths:
            with safe_open(f"{p}/model.safetensors", "pt") as f:
                for k in f.keys():
                    total += f.get_tensor(k).numel()
    else:
        ings = hfsoup.load_ingredients(paths)
        out = hfsoup.average(ings)
        total = sum(t.numel() for t in out.values())
    dt = time.perf_counter() - t0
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds": dt, "peak_rss_mb": peak_mb, "elements": total}))


def _run(mode, paths):
    proc = subprocess.run([sys.executable, __file__, "--worker", mode, *paths], capture_output=True, text=True,
                          check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, nargs="+", default=[2, 8, 32])
    ap.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        _worker(args.worker[0], args.worker[1:])
        return
    with tempfile.TemporaryDirectory() as tmp:
        paths = _make_files(Path(tmp), max(args.n))
        baseline = _run("read", paths[:1])  # interpreter + torch import + one file: the fixed cost
        size_mb = Path(paths[0], "model.safetensors").stat().st_size / 2**20
        print(f"resnet50_cifar safetensors: {size_mb:.1f} MB per file; baseline process with one file read: "
              f"{baseline['peak_rss_mb']:.0f} MB peak RSS")
        print(f"{'N':>4} {'read s':>8} {'average s':>10} {'ratio':>6} {'read peak MB':>13} {'avg peak MB':>12} "
              f"{'avg peak - read(1) MB':>22}")
        for n in args.n:
            read = _run("read", paths[:n])
            avg = _run("average", paths[:n])
            print(f"{n:>4} {read['seconds']:>8.2f} {avg['seconds']:>10.2f} {avg['seconds'] / read['seconds']:>6.2f} "
                  f"{read['peak_rss_mb']:>13.0f} {avg['peak_rss_mb']:>12.0f} "
                  f"{avg['peak_rss_mb'] - baseline['peak_rss_mb']:>22.0f}")


if __name__ == "__main__":
    main()
