"""Time to soup: greedy vs RADIN (B = 1, 5, 25) for N nano ingredients, in seconds and in full evaluation passes,
plus the throughput of RADIN's vectorised proxy scoring (candidates per second).

    python bench/bench_recipes.py            # N = 8, 16, 32; 500 held-out images
    python bench/bench_recipes.py --quick    # N = 8, 16; 100 held-out images

Ingredients are random resnet10_cifar_nano models (100 classes), the held-out split random images: timings only,
the accuracies mean nothing. The logit cache is warmed first (one forward pass per ingredient, reported apart), so
the recipe timings show the selection cost itself.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TQDM_DISABLE", "1")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--samples", type=int, default=None)
    args = ap.parse_args()
    ns = [8, 16] if args.quick else [8, 16, 32]
    samples = args.samples or (100 if args.quick else 500)
    budgets = [1, 5, 25]

    import timm

    import hfsoup
    from hfsoup.data.images import ImageData
    from hfsoup.hub.format import save_model
    from hfsoup.eval.logit_cache import all_logits
    from hfsoup.recipes.radin import generate_candidates, membership_matrix, proxy_scores

    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["HFSOUP_CACHE"] = str(Path(tmp) / "cache")
        g = torch.Generator().manual_seed(0)
        data = ImageData(torch.randint(0, 256, (samples, 3, 32, 32), dtype=torch.uint8, generator=g),
                         torch.randint(0, 100, (samples,), generator=g), None, "synthetic", "val")
        dirs = []
        for i in range(max(ns)):
            torch.manual_seed(i)
            m = timm.create_model("resnet10_cifar_nano", num_classes=100).eval()
            dirs.append(str(save_model(m, Path(tmp) / f"m{i}")))
        print(f"held-out: {samples} images, device {hfsoup.eval.metrics.default_device()}, "
              f"torch threads {torch.get_num_threads()}")
        print(f"{'N':>3} {'recipe':<10} {'seconds':>8} {'soup passes':>12} {'ingredient passes':>18}")
        for n in ns:
            ings = hfsoup.load_ingredients(dirs[:n])
            t = time.perf_counter()
            all_logits(ings, data, progress=False)
            cold = time.perf_counter() - t
            print(f"{n:>3} {'(logits)':<10} {cold:8.2f} {0:>12} {n:>18}   one pass per ingredient, cached")
            t = time.perf_counter()
            s = hfsoup.greedy_soup(ings, data)
            print(f"{n:>3} {'greedy':<10} {time.perf_counter() - t:8.2f} {s.log['cost']['soup_passes']:>12} "
                  f"{s.log['cost']['ingredient_passes']:>18}")
            for b in budgets:
                t = time.perf_counter()
                s = hfsoup.radin_soup(ings, data, budget=b, candidates=200, seed=0)
                print(f"{n:>3} {'radin B=' + str(b):<10} {time.perf_counter() - t:8.2f} "
                      f"{s.log['cost']['soup_passes']:>12} {s.log['cost']['ingredient_passes']:>18}"
                      f"   proxy {s.log['cost']['seconds_proxy']:.3f}s for {s.log['num_candidates']} candidates")
        # proxy throughput
        print("\nproxy scoring throughput (float64, membership @ logits):")
        for n in ns:
            logits = torch.randn(n, samples, 100)
            cands = generate_candidates(n, 2000, seed=0)
            mem = membership_matrix(cands, n)
            t = time.perf_counter()
            proxy_scores(logits, data.labels, mem)
            dt = time.perf_counter() - t
            print(f"  N={n:>2}: {len(cands)} candidates x {samples} images x 100 classes in {dt:.3f}s "
                  f"= {len(cands) / dt:,.0f} candidates/s")


if __name__ == "__main__":
    main()
