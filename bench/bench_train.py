"""Training throughput of the zoo pipeline (data path included: uint8 images on the device, batched crop/flip,
normalisation, forward, backward, SGD step) and the wall time it implies for one trunk and the full zoo.

    python bench/bench_train.py            # resnet50_cifar fp32 + bf16 (+ tiny/nano), on GPU when available
    python bench/bench_train.py --quick    # a few steps (CPU-sized)
"""

from __future__ import annotations

import argparse
import json
import time

import torch
import torch.nn.functional as F


def bench(arch: str, precision: str, *, batch: int, steps: int, warmup: int, device: torch.device,
          channels_last: bool, compile_: bool = False) -> float:
    import timm

    import hfsoup  # noqa: F401
    from hfsoup.zoo.augment import augment_batch

    torch.manual_seed(0)
    model = timm.create_model(arch, num_classes=100).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    if compile_:
        model = torch.compile(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4)
    n = batch * 4
    images = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, device=device)
    labels = torch.randint(0, 100, (n,), device=device)
    mean = torch.tensor((0.5071, 0.4867, 0.4408), device=device).view(1, 3, 1, 1)
    std = torch.tensor((0.2675, 0.2565, 0.2761), device=device).view(1, 3, 1, 1)
    amp = torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")

    def step(i):
        idx = torch.randint(0, n, (batch,), device=device)
        x = augment_batch(images[idx], torch.randint(0, 9, (batch, 2), device=device),
                          torch.rand(batch, device=device) < 0.5, 4)
        x = (x.float().div_(255) - mean) / std
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with amp:
            loss = F.cross_entropy(model(x).float(), labels[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for i in range(warmup):
        step(i)
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for i in range(steps):
        step(i)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return batch * steps / (time.perf_counter() - t0)


def machine(device: torch.device) -> str:
    """What the figures depend on: the device, the CPU and its vector flags, whether bf16 is native, torch."""
    import os
    import platform

    from hfsoup.eval.precision import cpu_flags, native_bf16

    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            name = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    flags = sorted(cpu_flags() & {"avx", "avx2", "fma", "f16c", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile"})
    gpu = f"{torch.cuda.get_device_name(device)}; " if device.type == "cuda" else ""
    return (f"device: {device} ({gpu}{name}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads); "
            f"flags: {' '.join(flags) or 'none'}; native bf16: {'yes' if native_bf16(device) else 'no'}; "
            f"torch {torch.__version__}, cpu capability {torch.backends.cpu.get_cpu_capability()}")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--quick", action="store_true", help="a few steps only")
    p.add_argument("--compile", action="store_true")
    p.add_argument("--train-images", type=int, default=47500, help="images per epoch (CIFAR-100 train-main)")
    p.add_argument("--max-branch-epochs", type=int, default=60, help="max epochs of one branch (zoo config)")
    p.add_argument("--branches", type=int, default=104)
    args = p.parse_args()
    gpu = torch.cuda.is_available()
    device = torch.device("cuda" if gpu else "cpu")
    if gpu:
        cases = [("resnet50_cifar", "fp32", 128, 50), ("resnet50_cifar", "bf16", 128, 50),
                 ("resnet10_cifar_tiny", "fp32", 128, 50), ("resnet10_cifar_nano", "fp32", 128, 50)]
    else:
        s = 3 if args.quick else 10
        cases = [("resnet50_cifar", "fp32", 32, s), ("resnet50_cifar", "bf16", 32, s),
                 ("resnet10_cifar_tiny", "fp32", 128, s), ("resnet10_cifar_nano", "fp32", 128, s)]
    if args.quick and gpu:
        cases = [(a, pr, b, 20) for a, pr, b, _ in cases]
    print(machine(device), flush=True)
    rows = []
    for arch, prec, batch, steps in cases:
        ips = bench(arch, prec, batch=batch, steps=steps, warmup=1 if not gpu else 5, device=device,
                    channels_last=gpu, compile_=args.compile)
        trunk_h = 300 * args.train_images / ips / 3600
        zoo_h = trunk_h + args.branches * args.max_branch_epochs * args.train_images / ips / 3600
        rows.append({"arch": arch, "precision": prec, "batch": batch, "device": str(device),
                     "images_per_s": round(ips, 1), "trunk_300_epochs_h": round(trunk_h, 2),
                     "full_zoo_h": round(zoo_h, 1)})
        print(f"{arch:<22} {prec:<5} batch {batch:>4} on {device}: {ips:9.1f} img/s -> 300-epoch trunk "
              f"{trunk_h:8.2f} h, trunk + {args.branches} branches x {args.max_branch_epochs} epochs {zoo_h:9.1f} h",
              flush=True)
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
