"""The training augmentation of the zoo: one epoch's data order, crop offsets and flips, applied in batches on the
device.

Determinism: the plan of epoch ``e`` comes from one CPU generator seeded with ``data_seed + e``, so it is the same
on every rank and every device, whatever the number of processes, and a resumed run sees exactly the batches of an
uninterrupted one.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from hfsoup.zoo.config import ZooConfig


@dataclass
class EpochPlan:
    """The data order and augmentation of one epoch, for every image of the training split."""

    perm: torch.Tensor  # image order (n,)
    offsets: torch.Tensor  # crop offsets (n, 2) into the padded image
    flips: torch.Tensor  # horizontal flips (n,) bool
    pad: int  # zero padding of the random crop (0: no crop)


def epoch_plan(n: int, epoch_seed: int, cfg: ZooConfig) -> EpochPlan:
    """Permutation, crop offsets and flips of one epoch of ``n`` images, from one CPU generator seeded with
    ``epoch_seed``."""
    g = torch.Generator().manual_seed(int(epoch_seed))
    perm = torch.randperm(n, generator=g)
    pad = cfg.augment.padding if cfg.augment.random_crop else 0
    offsets = torch.randint(0, 2 * pad + 1, (n, 2), generator=g) if pad else torch.zeros(n, 2, dtype=torch.long)
    flips = (torch.rand(n, generator=g) < 0.5) if cfg.augment.hflip else torch.zeros(n, dtype=torch.bool)
    return EpochPlan(perm=perm, offsets=offsets, flips=flips, pad=pad)


def augment_batch(x: torch.Tensor, offsets: torch.Tensor, flips: torch.Tensor, pad: int) -> torch.Tensor:
    """Random crop (zero padding + per-image offsets, by indexing) and horizontal flip (``torch.where``) of a uint8
    batch ``x`` (b, c, h, w), on its device."""
    b, c, h, w = x.shape
    if pad:
        xp = F.pad(x, (pad, pad, pad, pad))
        rows = offsets[:, 0, None] + torch.arange(h, device=x.device)[None]  # b x h
        cols = offsets[:, 1, None] + torch.arange(w, device=x.device)[None]  # b x w
        xp = xp.gather(2, rows.view(b, 1, h, 1).expand(b, c, h, w + 2 * pad))
        x = xp.gather(3, cols.view(b, 1, 1, w).expand(b, c, h, w))
    if flips.any():
        x = torch.where(flips.view(b, 1, 1, 1), x.flip(3), x)
    return x


def plan_batch(plan: EpochPlan, images: torch.Tensor, idx: torch.Tensor, device) -> torch.Tensor:
    """The augmented uint8 images ``idx`` (CPU indices into the plan and the device-resident ``images``)."""
    return augment_batch(images[idx.to(device)], plan.offsets[idx].to(device), plan.flips[idx].to(device), plan.pad)
