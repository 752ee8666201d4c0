"""Pair-study benchmark (prints figures; not a test).

1. Mini-zoo (CPU): soups/s of ``hfsoup study run`` on the embedded mini-zoo against the loop a user would write
   today, ``hfsoup mix A B --alpha 0.5 --eval-split test`` per pair, called in one process (the CLI's ``main``).
2. ``resnet50_cifar`` with random weights on synthetic CIFAR-shaped data: seconds per soup (build on the device +
   evaluation), soups/min and images/s per soup, through the study engine; from these, the projected time of the
   5,356-pair clean sweep (10,000 test images) and of the CIFAR-100-C sweep (19 corruptions x 10,000 images).

    python bench/bench_study.py                                # both parts, CPU-sized counts
    python bench/bench_study.py --part resnet50 --device cuda --images 10000 --models 4
    python bench/bench_study.py --part mini --limit 120 --naive-pairs 8
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PAIRS_FULL = 5356  # 104 models
MODELS_FULL = 104
TEST_IMAGES = 10_000
CORRUPTIONS = 19


def machine() -> str:
    import torch

    lines = [f"python {platform.python_version()}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
             f"{os.cpu_count()} CPUs, load average {', '.join(f'{x:.1f}' for x in os.getloadavg())}"]
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        info = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
        flags = set(info.get("Flags", "").split())
        simd = [f for f in ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16") if f in flags]
        lines.append(f"cpu: {info.get('Model name', '?').strip()}; {info.get('CPU(s)', '?').strip()} CPU(s); "
                     f"SIMD: {' '.join(simd) or 'n/a'}")
    if torch.cuda.is_available():
        lines.append(f"gpu: {torch.cuda.get_device_name()}")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------ mini-zoo
def bench_mini(args) -> None:
    import hfsoup
    from hfsoup.cli import main as cli
    from hfsoup.study.run import StudyConfig, run_study

    zoo = Path(hfsoup.__file__).parent / "assets" / "mini_zoo"
    branches = sorted((zoo / "branches").iterdir())
    limit = ["--limit", str(args.limit)] if args.limit else []
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["HFSOUP_CACHE"] = str(Path(tmp) / "cache")  # a cold cache: the per-model pass is timed
        t0 = time.perf_counter()
        result = run_study(StudyConfig(sources=[str(zoo)], out=Path(tmp) / "study", dataset="sklearn:digits",
                                       limit=args.limit, progress=False, device="cpu"))
        total = time.perf_counter() - t0
        n = result.computed
        t0 = time.perf_counter()
        again = run_study(StudyConfig(sources=[str(zoo)], out=Path(tmp) / "study2", dataset="sklearn:digits",
                                      limit=args.limit, progress=False, device="cpu"))
        warm = time.perf_counter() - t0

        compiled = None
        if args.compile:
            t0 = time.perf_counter()
            res_c = run_study(StudyConfig(sources=[str(zoo)], out=Path(tmp) / "study3", dataset="sklearn:digits",
                                          limit=args.limit, progress=False, device="cpu", compile=True))
            compiled = (time.perf_counter() - t0, res_c)

        # The naive loop: one `hfsoup mix … --eval-split test` per pair, in this process.
        pairs = [(a, b) for i, a in enumerate(branches) for b in branches[i + 1:]][:args.naive_pairs]
        t0 = time.perf_counter()
        for a, b in pairs:
            with contextlib.redirect_stdout(io.StringIO()):
                rc = cli(["mix", str(a), str(b), "--alpha", "0.5", "--eval-split", "test", "--dataset",
                          "sklearn:digits", *limit, "--no-save", "--json", "-q", "--device", "cpu"])
            assert rc == 0
        naive = (time.perf_counter() - t0) / len(pairs)
    images = args.limit or 360
    print(f"\n== mini-zoo: {len(branches)} branches (resnet10_cifar_nano), {n} pairs at α = 0.5, {images} digits "
          f"test images, CPU")
    print(f"study run (cold cache, per-model pass included): {total:.1f} s in all, {n / total:.2f} pairs/s "
          f"(pair loop alone: {result.rows_per_second:.2f} pairs/s)")
    print(f"study run (warm per-model cache, new study folder): {warm:.1f} s, {again.computed / warm:.2f} pairs/s")
    if compiled:
        t_c, res_c = compiled
        print(f"study run --compile (per-model pass and compilation included): {t_c:.1f} s, "
              f"{res_c.computed / t_c:.2f} pairs/s (pair loop alone: {res_c.rows_per_second:.2f} pairs/s)")
    print(f"naive loop (hfsoup mix per pair, {len(pairs)} pairs timed): {naive:.2f} s/pair, {1 / naive:.2f} pairs/s")
    print(f"ratio: {n / total * naive:.1f}x (cold cache, whole run), {again.computed / warm * naive:.1f}x (warm cache)"
          + (f", {compiled[1].computed / compiled[0] * naive:.1f}x (--compile, whole run)" if compiled else ""))


# ------------------------------------------------------------------------------------------------ resnet50
def bench_resnet50(args) -> None:
    import timm
    import torch

    import hfsoup  # noqa: F401 - registers the CIFAR ResNets with timm
    from hfsoup.core.ingredients import load_ingredients
    from hfsoup.data.images import ImageData
    from hfsoup.hub.format import save_model
    from hfsoup.study.engine import EvalSet, PairEngine

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (args.images, 3, 32, 32), dtype=torch.uint8, generator=g)
    labels = torch.randint(0, 100, (args.images,), generator=g)
    data = ImageData(images, labels, None, "synthetic", "test")
    with tempfile.TemporaryDirectory() as tmp:
        refs = []
        for k in range(args.models):
            torch.manual_seed(k)
            refs.append(save_model(timm.create_model("resnet50_cifar").eval(), Path(tmp) / f"m{k}",
                                   metadata={"seed": k}))
        ings = load_ingredients(refs)
        t0 = time.perf_counter()
        engine = PairEngine(ings, EvalSet.from_image_data(data, "test", device), device=device,
                            batch_size=args.batch_size, cache=None, compile=args.compile)
        t_load = time.perf_counter() - t0

        def sync():
            if device.type == "cuda":
                torch.cuda.synchronize(device)

        t0 = time.perf_counter()
        for i in range(len(ings)):
            engine.model_outputs(i)
        sync()
        t_models = (time.perf_counter() - t0) / len(ings)
        pairs = [(i, j) for i in range(len(ings)) for j in range(i + 1, len(ings))]
        engine.soup(*pairs[0], 0.5)  # warm-up (allocator, cudnn autotune, compilation)
        sync()
        t_build = t_eval = t_sim = 0.0
        reps = 0
        for _ in range(args.repeats):
            for i, j in pairs:
                t0 = time.perf_counter()
                engine.builder.build(i, j, 0.5).item()
                sync()
                t1 = time.perf_counter()
                engine.soup(i, j, 0.5)
                sync()
                t2 = time.perf_counter()
                engine.similarity(i, j)
                sync()
                t3 = time.perf_counter()
                t_build += t1 - t0
                t_eval += (t2 - t1) - (t1 - t0)  # soup() builds again: keep the evaluation part
                t_sim += t3 - t2
                reps += 1
    t_build, t_eval, t_sim = t_build / reps, t_eval / reps, t_sim / reps
    per_soup = t_build + t_eval + t_sim
    ips = args.images / t_eval
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"\n== resnet50_cifar, random weights, {args.models} models, {len(pairs)} pairs x {args.repeats}, "
          f"{args.images} synthetic 32x32 images, batch {args.batch_size}, {device} ({name}), "
          f"{engine.runner.precision}{', compiled' if args.compile else ''}")
    print(f"weights on the device: {engine.bank.nbytes() / 2**20:.0f} MiB for {len(ings)} models "
          f"({t_load:.1f} s to load)")
    print(f"per model (logits + features, once): {t_models:.2f} s")
    print(f"per soup: build {1e3 * t_build:.1f} ms, evaluation {t_eval:.2f} s ({ips:.0f} images/s), "
          f"similarity {1e3 * t_sim:.1f} ms -> {per_soup:.2f} s/soup, {60 / per_soup:.1f} soups/min")
    # Projection to the full zoo: evaluation time scales with the images; build and similarity do not (the CKA
    # of 10,000 x 2048 features costs more than on a few images: measured here on this many images only).
    clean = t_build + TEST_IMAGES / ips + t_sim
    models = MODELS_FULL * TEST_IMAGES / ips * 1.05
    corrupted = t_build + (1 + CORRUPTIONS) * TEST_IMAGES / ips + t_sim
    print(f"projection, {MODELS_FULL} models / {PAIRS_FULL} pairs on {TEST_IMAGES} test images, one {device.type}: "
          f"per-model pass {models / 60:.1f} min + clean sweep {PAIRS_FULL * clean / 3600:.2f} h "
          f"({clean:.2f} s/soup); with CIFAR-100-C at one severity ({CORRUPTIONS} x {TEST_IMAGES} more images per "
          f"soup): {PAIRS_FULL * corrupted / 3600:.1f} h")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--part", choices=["mini", "resnet50", "all"], default="all")
    ap.add_argument("--limit", type=int, default=120, help="mini-zoo: test images (digits has 360)")
    ap.add_argument("--naive-pairs", type=int, default=6, help="mini-zoo: pairs timed for the naive loop")
    ap.add_argument("--models", type=int, default=3, help="resnet50: models (pairs = models choose 2)")
    ap.add_argument("--images", type=int, default=64, help="resnet50: synthetic images")
    ap.add_argument("--batch-size", type=int, default=500)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--device", default=None)
    ap.add_argument("--compile", action="store_true")
    args = ap.parse_args()
    os.environ.setdefault("HFSOUP_NO_PROGRESS", "1")
    print(machine())
    if args.part in ("mini", "all"):
        bench_mini(args)
    if args.part in ("resnet50", "all"):
        bench_resnet50(args)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
