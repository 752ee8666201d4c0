"""Averaging benchmark: time and peak memory to average N ResNet-50-sized safetensors files (N = 2, 8, 32)
against the time to read the same files, side by side in one run (goal: average <= 1.5x read).

    python bench/bench_average.py                 # N = 2, 8, 32 (about 3 GB of temporary files for N = 32)
    python bench/bench_average.py --n 2 8         # a quicker run
    python bench/bench_average.py --dir /tmp/f    # make the files once and reuse them in later runs

Columns, each measured in a fresh subprocess (so one does not inherit another's peak resident set, ru_maxrss):

- ``read``: every tensor of every file through ``safetensors.safe_open(...).get_tensor`` (the goal's baseline).
  safetensors maps the file and hands out tensors over the mapping: this costs the page mappings, and touches
  no data.
- ``bytes``: every byte of every file read (``readv`` into one reused 1 MB buffer): the cost of reading the data
  itself, without making anything of it.
- ``floor``: a bare soup: every byte read (``pread``, one thread per core), float32 ``a + b + ...`` straight into
  one fresh model-sized array; no mean, no checks, no planning. What memory allows; the engine cannot beat it.
- ``average``: ``hfsoup.load_ingredients`` + ``hfsoup.average`` (the exact mean, NaN/Inf checks, all tensors).

Measurements alternate, ``--repeat`` times per N, and the medians are printed (the ratio is the median of the
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
    elif mode == "bytes":
        total, buf = 0, bytearray(2**20)
        for p in paths:
            fd = os.open(f"{p}/model.safetensors", os.O_RDONLY)
            try:
                while (got := os.readv(fd, [buf])) > 0:
                    total += got
            finally:
                os.close(fd)
    elif mode == "floor":
        total = _bare_soup([f"{p}/model.safetensors" for p in paths], workers)
    else:
        ings = hfsoup.load_ingredients(paths)
        out = hfsoup.average(ings, workers=workers)
        total = sum(t.numel() for t in out.values())
    dt = time.perf_counter() - t0
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds": dt, "peak_rss_mb": peak_mb, "elements": total}))


def _bare_soup(files: list[str], workers: int | None, tile: int = 2**17) -> int:
    """Σ of the files' bytes read as float32, into one fresh array: one thread per stretch of the files (as many
    threads as the engine uses by default: torch's thread count)."""
    import threading

    import numpy as np
    import torch

    workers = workers or torch.get_num_threads()
    n = os.path.getsize(files[0]) // 4
    # allocated as the engine allocates its result (numpy's own allocator asks for huge pages, which makes
    # first-touch page faults far slower on some kernels)
    out = torch.empty(n, dtype=torch.float32).numpy()
    fds = [os.open(f, os.O_RDONLY) for f in files]

    def work(lo: int, hi: int) -> None:
        first, other = np.empty(tile, np.float32), np.empty(tile, np.float32)
        for a in range(lo, hi, tile):
            k = min(tile, hi - a)
            os.preadv(fds[0], [memoryview(first)[:k]], 4 * a)
            np.copyto(out[a:a + k], first[:k])
            for fd in fds[1:]:
                os.preadv(fd, [memoryview(other)[:k]], 4 * a)
                np.add(out[a:a + k], other[:k], out=out[a:a + k])

    step = -(-n // workers)
    threads = [threading.Thread(target=work, args=(i * step, min(n, (i + 1) * step))) for i in range(workers)]
    with np.errstate(all="ignore"):  # random bytes as floats: NaN and overflow are expected and harmless
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    for fd in fds:
        os.close(fd)
    return n


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
        modes = ("read", "bytes", "floor", "average")
        print(f"{'N':>4} {'read s':>8} {'bytes s':>8} {'floor s':>8} {'average s':>10} {'avg/read':>9} {'goal':>6} "
              f"{'avg/bytes':>10} {'floor/read':>11} {'avg peak - read(1) MB':>22}")
        for n in args.n:
            runs = {m: [] for m in modes}
            ratios = {"read": [], "bytes": [], "floor": []}
            for _ in range(args.repeat):
                for m in modes:
                    runs[m].append(_run(m, paths[:n], args))
                avg = runs["average"][-1]["seconds"]
                ratios["read"].append(avg / runs["read"][-1]["seconds"])
                ratios["bytes"].append(avg / runs["bytes"][-1]["seconds"])
                ratios["floor"].append(runs["floor"][-1]["seconds"] / runs["read"][-1]["seconds"])
            sec = {m: statistics.median(r["seconds"] for r in runs[m]) for m in modes}
            ratio = statistics.median(ratios["read"])
            avg_peak = statistics.median(a["peak_rss_mb"] for a in runs["average"])
            print(f"{n:>4} {sec['read']:>8.4g} {sec['bytes']:>8.4g} {sec['floor']:>8.4g} {sec['average']:>10.4g} "
                  f"{ratio:>9.2f} {'ok' if ratio <= GOAL else 'MISS':>6} {statistics.median(ratios['bytes']):>10.2f} "
                  f"{statistics.median(ratios['floor']):>11.2f} {avg_peak - baseline['peak_rss_mb']:>22.0f}",
                  flush=True)


if __name__ == "__main__":
    main()
