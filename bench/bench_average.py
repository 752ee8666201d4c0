"""Averaging benchmark: time and peak memory to average N ResNet-50-sized safetensors files (N = 2, 8, 32)
against the time to merely read the same files, side by side in one run (goal: average <= 1.5x read).

    python bench/bench_average.py                 # N = 2, 8, 32 (about 3 GB of temporary files for N = 32)
    python bench/bench_average.py --n 2 8         # a quicker run
    python bench/bench_average.py --dir /tmp/f    # make the files once and reuse them in later runs

Every measurement runs in a fresh subprocess (so one does not inherit another's peak resident set, ru_maxrss);
read and average alternate, ``--repeat`` times per N, and the medians are printed (the ratio is the median of the
per-repeat ratios, each taken from back-to-back runs, so a busy machine disturbs it least). The files are in the
page cache (they were just written or read): this measures the engine, not the disk.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GOAL = 1.5


def _make_files(root: Path, n: int, arch: str = "resnet50_cifar") -> list[str]:
    import timm
    import torch

    from hfsoup.hub.format import save_model

    base = timm.create_model(arch)
    paths = []
    for i in range(n):
        folder = root / f"m{i}"
        if not (folder / "model.safetensors").exists():
            torch.manual_seed(i)
            with torch.no_grad():
                for p in base.parameters():
                    p.add_(torch.randn_like(p) * 1e-3)
            save_model(base, folder, force=True)
        paths.append(str(folder))
    return paths


def _worker(mode: str, paths: list[str], workers: int | None, tile: int | None) -> None:
    from safetensors import safe_open

    import hfsoup
    from hfsoup.core import averaging, ingredients  # noqa: F401 - imports (torch, timm) are not the engine's time

    if tile:
        averaging.TILE_ELEMENTS = tile
    t0 = time.perf_counter()
    if mode == "read":
        total = 0
        for p in paths:
            with safe_open(f"{p}/model.safetensors", "pt") as f:
                for k in f.keys():
                    total += f.get_tensor(k).numel()
    else:
        ings = hfsoup.load_ingredients(paths)
        out = hfsoup.average(ings, workers=workers)
        total = sum(t.numel() for t in out.values())
    dt = time.perf_counter() - t0
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds": dt, "peak_rss_mb": peak_mb, "elements": total}))


def _run(mode, paths, args):
    cmd = [sys.executable, __file__, "--worker", mode]
    if args.workers:
        cmd += ["--workers", str(args.workers)]
    if args.tile:
        cmd += ["--tile", str(args.tile)]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([*cmd, "--", *paths], capture_output=True, text=True, check=True, env=env)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _cpu() -> str:
    try:
        info = Path("/proc/cpuinfo").read_text()
        name = next(line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name"))
    except (OSError, StopIteration):
        import platform

        name = platform.processor() or platform.machine()
    return f"{name}, {os.cpu_count()} cores"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, nargs="+", default=[2, 8, 32])
    ap.add_argument("--repeat", type=int, default=3, help="runs of each measurement; medians are printed")
    ap.add_argument("--dir", help="folder for the model files (made if missing, kept); default: a temporary one")
    ap.add_argument("--arch", default="resnet50_cifar", help="timm architecture of the files (tests: a tiny one)")
    ap.add_argument("--workers", type=int, help="threads of the averaging engine (default: torch's thread count)")
    ap.add_argument("--tile", type=int, help="elements per tile (default: the engine's TILE_ELEMENTS)")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("paths", nargs="*", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        _worker(args.worker, args.paths, args.workers, args.tile)
        return
    sys.path.insert(0, str(ROOT))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.dir) if args.dir else Path(tmp)
        paths = _make_files(root, max(args.n), args.arch)
        baseline = _run("read", paths[:1], args)  # interpreter + torch import + one file: the fixed cost
        size_mb = Path(paths[0], "model.safetensors").stat().st_size / 2**20
        print(f"machine: {_cpu()}; engine threads: {args.workers or 'default'}")
        print(f"{args.arch} safetensors: {size_mb:.1f} MB per file; baseline process with one file read: "
              f"{baseline['peak_rss_mb']:.0f} MB peak RSS; medians of {args.repeat} runs")
        print(f"{'N':>4} {'read s':>8} {'average s':>10} {'avg/read':>9} {'goal':>6} {'read peak MB':>13} "
              f"{'avg peak MB':>12} {'avg peak - read(1) MB':>22}")
        for n in args.n:
            reads, avgs, ratios = [], [], []
            for _ in range(args.repeat):
                reads.append(_run("read", paths[:n], args))
                avgs.append(_run("average", paths[:n], args))
                ratios.append(avgs[-1]["seconds"] / reads[-1]["seconds"])
            read_s = statistics.median(r["seconds"] for r in reads)
            avg_s = statistics.median(a["seconds"] for a in avgs)
            ratio = statistics.median(ratios)
            read_peak = statistics.median(r["peak_rss_mb"] for r in reads)
            avg_peak = statistics.median(a["peak_rss_mb"] for a in avgs)
            print(f"{n:>4} {read_s:>8.3f} {avg_s:>10.3f} {ratio:>9.2f} {'ok' if ratio <= GOAL else 'MISS':>6} "
                  f"{read_peak:>13.0f} {avg_peak:>12.0f} {avg_peak - baseline['peak_rss_mb']:>22.0f}", flush=True)


if __name__ == "__main__":
    main()
