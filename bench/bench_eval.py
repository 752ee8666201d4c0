"""Evaluation benchmark: images/s of the CIFAR ResNet-50 forward pass per numerics variant, side by side in one run,
each with its ratio to eager fp32, its agreement with eager fp32, and the achieved GFLOP/s against the machine's
fp32 peak.

    python bench/bench_eval.py                          # resnet50_cifar, 256 images, on the CPU
    python bench/bench_eval.py --device cuda            # fp32 vs bf16 vs auto (with the check's figures)
    python bench/bench_eval.py --arch resnet10_cifar_tiny --images 2000 --no-compile

CPU variants: eager fp32 (what ``hfsoup eval`` runs), bf16 autocast, channels-last fp32, ``torch.compile`` fp32
(compiled once; the compilation time is printed apart). On a CPU without native bf16 (no AMX / AVX-512 BF16) bf16
is emulated and very slow, so it runs on ``--slow-images`` images only (throughput is per image, so the ratio holds).
FLOPs per image are counted from the model (``torch.utils.flop_counter``: 2 per multiply-add); the peak is cores ×
clock × fp32 flop/cycle/core from the vector width (AVX-512+FMA: 2 units × 16 lanes × 2 = 64; AVX2+FMA: 32; AVX:
16; SSE: 8) and the clock /proc/cpuinfo reports (a virtual machine may hide boost clocks). The images are random
32×32 uint8 images decoded from a parquet file (the data path of ``hfsoup eval``), normalised once.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def _cpuinfo() -> dict:
    info = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if ":" in line:
                k, v = (s.strip() for s in line.split(":", 1))
                info.setdefault(k, v)  # the first processor's entries
    except OSError:
        pass
    return info


def cpu_peak() -> tuple[float, str]:
    """(fp32 peak GFLOP/s, how it was computed) of this machine's CPU."""
    info = _cpuinfo()
    flags = set(info.get("flags", "").split())
    cores = os.cpu_count() or 1
    mhz = float(info.get("cpu MHz", 0) or 0)
    if "avx512f" in flags:
        per_cycle, isa = 64, "AVX-512+FMA: 2 FMA units x 16 fp32 lanes x 2"
    elif "avx2" in flags and "fma" in flags:
        per_cycle, isa = 32, "AVX2+FMA: 2 FMA units x 8 fp32 lanes x 2"
    elif "avx" in flags:
        per_cycle, isa = 16, "AVX: 8 lanes x (1 add + 1 mul)"
    else:
        per_cycle, isa = 8, "SSE: 4 lanes x (1 add + 1 mul)"
    used = sorted(flags & {"sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512_bf16", "amx_bf16",
                           "amx_tile", "avx512_vnni"})
    text = (f"{info.get('model name', 'cpu')} (family {info.get('cpu family', '?')}, model {info.get('model', '?')}): "
            f"{cores} cores x {mhz / 1000:.2f} GHz x {per_cycle} flop/cycle "
            f"({isa}); flags: {' '.join(used) or 'none'}")
    return cores * mhz / 1000 * per_cycle, text


def flops_per_image(model, device) -> float:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.zeros(1, 3, 32, 32, device=device)
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        model(x)
    return float(counter.get_total_flops())


def _data(n: int, tmp: str):
    import datasets
    from PIL import Image

    rng = np.random.default_rng(0)
    ds = datasets.Dataset.from_dict(
        {"img": [Image.fromarray(a) for a in rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)],
         "fine_label": rng.integers(0, 100, n).tolist()},
        features=datasets.Features({"img": datasets.Image(), "fine_label": datasets.ClassLabel(num_classes=100)}))
    (Path(tmp) / "data").mkdir()
    ds.to_parquet(f"{tmp}/data/test-00000-of-00001.parquet")


def _forward(model, x_all, batch_size, device, *, bf16=False, channels_last=False):
    """Logits of ``model`` on ``x_all`` (normalised float images, on the CPU) and the seconds it took."""
    import torch

    ctx = (lambda: torch.autocast(device_type=device.type, dtype=torch.bfloat16)) if bf16 else contextlib.nullcontext
    outs = []
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    with torch.inference_mode():
        for start in range(0, len(x_all), batch_size):
            x = x_all[start:start + batch_size].to(device, non_blocking=True)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with ctx():
                outs.append(model(x).float())
        if device.type == "cuda":
            torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    return torch.cat(outs).cpu(), dt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", default="resnet50_cifar")
    ap.add_argument("--images", type=int, default=256)
    ap.add_argument("--slow-images", type=int, default=32,
                    help="images of the emulated-bf16 variant on a CPU without native bf16 (default: %(default)s)")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--device", default=None, help="cpu (default when no CUDA) or cuda")
    ap.add_argument("--repeat", type=int, default=2, help="timed runs per variant; the median is printed")
    ap.add_argument("--no-compile", action="store_true", help="skip the torch.compile variant")
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))

    import timm
    import torch

    import hfsoup
    from hfsoup.eval.metrics import choose_eval_precision, default_device, norm_stats
    from hfsoup.eval.precision import compare_logits, native_bf16

    device = torch.device(args.device) if args.device else default_device()
    with tempfile.TemporaryDirectory() as tmp:
        _data(args.images, tmp)
        t0 = time.perf_counter()
        data = hfsoup.load_image_data(tmp, "test", progress=False)
        t_decode = time.perf_counter() - t0
    model = timm.create_model(args.arch).eval().to(device)
    flops = flops_per_image(model, device)
    x_all = data.normalized(*norm_stats(model))
    labels = data.labels
    native = native_bf16(device)

    variants = [("eager fp32", dict()), ("bf16 autocast", dict(bf16=True))]
    if device.type == "cpu":
        variants.append(("channels-last fp32", dict(channels_last=True)))
    else:
        variants = [("fp32 channels-last", dict(channels_last=True)),
                    ("bf16 autocast channels-last", dict(bf16=True, channels_last=True))]
    if not args.no_compile:
        variants.append(("torch.compile fp32", dict(compile=True)))

    # Prepare every variant (compile, warm up), then time them round-robin, so a change in the machine's load
    # during the run shifts every variant alike.
    prepared = []
    for name, opts in variants:
        opts = dict(opts)
        if opts.pop("channels_last", False):
            m = model.to(memory_format=torch.channels_last)
            opts["channels_last"] = True
        else:
            m = model.to(memory_format=torch.contiguous_format)
        note = ""
        if opts.pop("compile", False):
            m = torch.compile(m)
            tc = time.perf_counter()
            _forward(m, x_all[:args.batch_size], args.batch_size, device)  # compiles (one batch shape)
            if len(x_all) % args.batch_size:
                _forward(m, x_all[:len(x_all) % args.batch_size], args.batch_size, device)  # the last batch
            note = f"compiled in {time.perf_counter() - tc:.0f} s"
        n = len(x_all)
        if opts.get("bf16") and device.type == "cpu" and not native:
            n = min(n, args.slow_images)
            note = f"emulated bf16: {n} images"
        _forward(m, x_all[:min(n, args.batch_size)], args.batch_size, device, **opts)  # warm-up
        prepared.append([name, m, opts, n, note, [], None])
    for _ in range(max(1, args.repeat)):
        for entry in prepared:
            _, m, opts, n, _, times, _ = entry
            entry[6], dt = _forward(m, x_all[:n], args.batch_size, device, **opts)
            times.append(dt)
    results, reference = [], prepared[0][6]
    for name, _, _, n, note, times, logits in prepared:
        check = compare_logits(reference[:n], logits, labels[:n])
        same = torch.equal(reference[:n].argmax(1), logits.argmax(1))
        maxdiff = (reference[:n] - logits).abs().max().item()
        results.append((name, n / statistics.median(times), check, same, maxdiff, note))

    base = results[0][1]
    where = torch.cuda.get_device_name() if device.type == "cuda" else f"{torch.get_num_threads()} threads"
    print(f"device: {device} ({where}); "
          f"torch {torch.__version__}, cpu capability {torch.backends.cpu.get_cpu_capability()}; "
          f"native bf16: {'yes' if native else 'no'}")
    peak = None
    if device.type == "cpu":
        peak, how = cpu_peak()
        print(f"fp32 peak: {peak:.0f} GFLOP/s = {how}")
    print(f"{args.arch}: {flops / 1e9:.2f} GFLOP per 32x32 image (FlopCounterMode); {len(x_all)} images, "
          f"batch {args.batch_size}; decode (parquet -> uint8): {len(x_all) / t_decode:,.0f} img/s; "
          f"median of {args.repeat} runs")
    print(f"{'variant':<30} {'img/s':>8} {'vs eager':>9} {'GFLOP/s':>8} {'% peak':>7} {'top-1 same':>11} "
          f"{'max |dlogit|':>12}  notes")
    for name, ips, check, same, maxdiff, note in results:
        gflops = ips * flops / 1e9
        pct = f"{100 * gflops / peak:.0f}%" if peak else "-"
        print(f"{name:<30} {ips:>8.1f} {ips / base:>8.2f}x {gflops:>8.1f} {pct:>7} "
              f"{100 * check.agreement:>10.2f}% {maxdiff:>12.2e}  {note}{'' if same else ' (predictions differ)'}")
    if device.type == "cuda" or native:
        choice = choose_eval_precision("auto", model.to(memory_format=torch.contiguous_format), data,
                                       device=device, batch_size=args.batch_size)
        c = choice.check
        print(f"auto -> {choice.precision} ({choice.reason})" + (
            f"; check on {c.num_samples} images: top-1 agreement {100 * c.agreement:.2f}% (>= 99.9%), accuracy "
            f"{c.accuracy_fp32:.4f} -> {c.accuracy:.4f} (within 0.001), loss {c.loss_fp32:.4f} -> {c.loss:.4f} "
            f"({100 * c.loss_relative:.3f}% rel., within 0.5%): {'passed' if c.passed else 'failed'}" if c else ""))
    else:
        print(f"auto -> fp32 (no native bf16 on this {device.type}: no check needed)")


if __name__ == "__main__":
    main()
