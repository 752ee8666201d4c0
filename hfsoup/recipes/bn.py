"""BatchNorm recalibration of a soup: recompute the running mean/variance of every BatchNorm layer on a few training
batches, with :func:`torch.optim.swa_utils.update_bn` (statistics reset, then a cumulative average over the batches).

Averaging weights does not average activations: the averaged running statistics can be off for the averaged model,
and recalibrating them is cheap (forward passes only, no gradients). Off by default; ``--recalibrate-bn N`` uses N
batches of ``train-main`` (the 95 % of train the zoo trains on, never the held-out or test split).
"""

from __future__ import annotations

import torch

from hfsoup.data.images import ImageData
from hfsoup.errors import HfSoupError
from hfsoup.eval.metrics import _norm_stats, default_device


def recalibrate_bn(soup, data: ImageData, num_batches: int, batch_size: int = 128, seed: int = 0,
                   device=None) -> "Soup":
    """Update ``soup.state_dict``'s BatchNorm statistics on ``num_batches`` random batches of ``data`` (in place).

    Batches are drawn without replacement with ``torch.Generator().manual_seed(seed)``; the parameters are
    recorded in ``soup.parameters["recalibrate_bn"]``. Returns ``soup``.
    """
    if num_batches <= 0:
        raise HfSoupError(f"--recalibrate-bn takes a positive number of batches, got {num_batches}")
    if batch_size <= 0:
        raise HfSoupError(f"--bn-batch-size must be positive, got {batch_size}")
    device = torch.device(device) if device is not None else default_device()
    model = soup.create_model(device)
    if not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        soup.parameters["recalibrate_bn"] = {"num_batches": 0, "note": "no BatchNorm layer: nothing to do"}
        return soup
    x_all = data.normalized(*_norm_stats(model))
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(len(data), generator=g)
    batches = [perm[i * batch_size:(i + 1) * batch_size] for i in range(num_batches)]
    batches = [b for b in batches if len(b)]
    loader = [x_all[b].to(device) for b in batches]
    torch.optim.swa_utils.update_bn(loader, model, device=device)
    model.eval()
    dtypes = {k: v.dtype for k, v in soup.state_dict.items()}
    soup.state_dict = {k: v.detach().to("cpu", dtypes[k]).clone() for k, v in model.state_dict().items()}
    soup.parameters["recalibrate_bn"] = {
        "num_batches": len(batches), "batch_size": batch_size, "seed": seed,
        "num_images": int(sum(len(b) for b in batches)), "data": data.describe(),
        "method": "torch.optim.swa_utils.update_bn (reset, cumulative average)"}
    return soup


# -- CLI --------------------------------------------------------------------------------------------------------
def add_soup_options(parser) -> None:
    g = parser.add_argument_group("BatchNorm recalibration (any recipe)")
    g.add_argument("--recalibrate-bn", type=int, default=0, metavar="N",
                   help="recompute BatchNorm statistics of the soup on N batches of train-main (default: off)")
    g.add_argument("--bn-batch-size", type=int, default=128, help="batch size for --recalibrate-bn (default: 128)")


def validate_bn_args(args) -> None:
    n = getattr(args, "recalibrate_bn", 0) or 0
    if n < 0:
        raise HfSoupError(f"--recalibrate-bn takes a number of batches >= 1 (0 = off), got {n}")
    if n and getattr(args, "bn_batch_size", 128) <= 0:
        raise HfSoupError(f"--bn-batch-size must be positive, got {args.bn_batch_size}")


def maybe_recalibrate(soup, args, heldout: ImageData | None = None):
    """Apply ``--recalibrate-bn`` to a soup built by a CLI recipe. When held-out data is given the recalibrated
    soup is evaluated on it again (one more pass) and ``soup.results[split]`` is updated; the figures before
    recalibration stay in ``soup.parameters["recalibrate_bn"]["before"]``."""
    from hfsoup.data.images import load_image_data

    n = getattr(args, "recalibrate_bn", 0) or 0
    if not n:
        return soup
    bs = args.bn_batch_size
    data = load_image_data(args.dataset, "train-main", revision=args.dataset_revision,
                           image_column=args.image_column, label_column=args.label_column, limit=n * bs,
                           progress=not getattr(args, "quiet", False))
    recalibrate_bn(soup, data, n, bs, seed=getattr(args, "seed", 0) or 0, device=args.device)
    if heldout is not None and heldout.split in soup.results:
        from hfsoup.recipes.greedy import evaluate_state_dict, eval_kwargs

        entry = soup.results[heldout.split]
        before = entry.soup
        after = evaluate_state_dict(soup.config, soup.state_dict, heldout, desc="eval recalibrated",
                                    **eval_kwargs(args))
        entry.replace_soup(after, soup.used_references)
        soup.parameters["recalibrate_bn"]["before"] = {heldout.split: before.to_dict()}
    return soup


def recipe_uniform(ingredients, args, ctx):
    """``hfsoup soup --recipe uniform`` with optional ``--recalibrate-bn``."""
    from hfsoup.cli import _recipe_uniform

    validate_bn_args(args)
    return maybe_recalibrate(_recipe_uniform(ingredients, args, ctx), args)
