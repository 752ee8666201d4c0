"""BatchNorm recalibration of a soup: recompute the running mean/variance of every BatchNorm layer on a few training
batches, with :func:`torch.optim.swa_utils.update_bn` (statistics reset, then a cumulative average over the batches).

Averaging weights does not average activations: the averaged running statistics can be off for the averaged model,
and recalibrating them is cheap (forward passes only, no gradients). A post-processing step applied once, by the
caller, after any recipe (``--recalibrate-bn N`` uses N batches of ``train-main``, the 95 % of train the zoo trains
on, never the held-out or test split); off by default.
"""

from __future__ import annotations

import torch

from hfsoup.core.soup import Soup
from hfsoup.data.images import ImageData
from hfsoup.errors import InvalidParameterError
from hfsoup.eval.metrics import default_device, norm_stats
from hfsoup.recipes.selection import evaluate_state_dict


def check_bn_options(num_batches: int, batch_size: int) -> None:
    """Validate the recalibration options once, before any work: ``num_batches`` >= 0 (0 = off) and, when on, a
    positive ``batch_size``."""
    if isinstance(num_batches, bool) or not isinstance(num_batches, int) or num_batches < 0:
        raise InvalidParameterError(f"--recalibrate-bn takes a number of batches >= 1 (0 = off), got {num_batches}",
                                    parameter="recalibrate_bn")
    if num_batches and (isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size <= 0):
        raise InvalidParameterError(f"--bn-batch-size must be a positive number of images, got {batch_size}",
                                    parameter="bn_batch_size")


def recalibrate_bn(soup: Soup, data: ImageData, num_batches: int, batch_size: int = 128, seed: int = 0,
                   device=None, *, heldout: ImageData | None = None, **eval_kwargs) -> Soup:
    """Update ``soup.state_dict``'s BatchNorm statistics on ``num_batches`` random batches of ``data`` (in place).

    Batches are drawn without replacement with ``torch.Generator().manual_seed(seed)``; the parameters are
    recorded in ``soup.parameters["recalibrate_bn"]``. With ``heldout`` (the held-out data of a selection recipe)
    and a ``soup.results`` entry for its split, the recalibrated soup is evaluated on it again (one more pass), the
    entry's soup score and gain are replaced, and the figures before recalibration are kept in
    ``soup.parameters["recalibrate_bn"]["before"]``. ``eval_kwargs`` go to that evaluation: ``eval_batch_size``
    (default 500) and ``progress``; it runs on ``device``. Returns ``soup``.
    """
    if num_batches <= 0:
        raise InvalidParameterError(f"--recalibrate-bn takes a positive number of batches, got {num_batches}",
                                    parameter="recalibrate_bn")
    check_bn_options(num_batches, batch_size)
    unknown = sorted(set(eval_kwargs) - {"eval_batch_size", "progress"})
    if unknown:
        raise TypeError(f"recalibrate_bn() got unexpected keyword arguments {', '.join(unknown)}")
    device = torch.device(device) if device is not None else default_device()
    model = soup.create_model(device)
    if not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        soup.parameters["recalibrate_bn"] = {"num_batches": 0, "note": "no BatchNorm layer: nothing to do"}
        return soup
    x_all = data.normalized(*norm_stats(model))
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(len(data), generator=g)
    batches = [perm[i * batch_size:(i + 1) * batch_size] for i in range(num_batches)]
    batches = [b for b in batches if len(b)]
    loader = [x_all[b].to(device) for b in batches]
    torch.optim.swa_utils.update_bn(loader, model, device=device)
    model.eval()
    dtypes = {k: v.dtype for k, v in soup.state_dict.items()}
    soup.state_dict = {k: v.detach().to("cpu", dtypes[k]).clone() for k, v in model.state_dict().items()}
    record = {"num_batches": len(batches), "batch_size": batch_size, "seed": seed,
              "num_images": int(sum(len(b) for b in batches)), "data": data.describe(),
              "method": "torch.optim.swa_utils.update_bn (reset, cumulative average)"}
    soup.parameters["recalibrate_bn"] = record
    if heldout is not None and heldout.split in soup.results:
        entry = soup.results[heldout.split]
        before = entry.soup
        after = evaluate_state_dict(soup.config, soup.state_dict, heldout, batch_size=eval_kwargs.get(
            "eval_batch_size", 500), device=device, progress=eval_kwargs.get("progress", False),
            desc="eval recalibrated")
        entry.replace_soup(after, soup.used_references)
        record["before"] = {heldout.split: before.to_dict()}
    return soup
