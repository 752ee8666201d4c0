"""CIFAR-style ResNets registered as timm models.

timm's ResNet has no CIFAR stem, so hfsoup registers its own family: the ImageNet stem (7x7/2 conv + max-pool) is
replaced by a 3x3 stride-1 conv without bias and no pooling, which keeps the 32x32 resolution for ``layer1``.
Registering the names with timm means ``timm.create_model("hf-hub:org/name", pretrained=True)`` and
``timm.create_model("local-dir:./folder", pretrained=True)`` work after ``import hfsoup``.
"""

from __future__ import annotations

import os

import torch
import torch.nn as nn
from timm.models import build_model_with_cfg, register_model
from timm.models._registry import generate_default_cfgs
from timm.models.resnet import BasicBlock, Bottleneck, ResNet

from hfsoup.errors import HfSoupError, IncompatibleModelsError, UnsafeConfigError

CIFAR100_MEAN = (0.5071, 0.4867, 0.4408)
CIFAR100_STD = (0.2675, 0.2565, 0.2761)

#: The registered CIFAR architectures: name -> (block, layers, channels, stem width).
CIFAR_ARCHITECTURES = {
    "resnet50_cifar": (Bottleneck, (3, 4, 6, 3), (64, 128, 256, 512), 64),
    "resnet18_cifar": (BasicBlock, (2, 2, 2, 2), (64, 128, 256, 512), 64),
    # ~0.32M parameters: fast enough on 2 CPU cores for tests and the embedded demo.
    "resnet10_cifar_tiny": (BasicBlock, (1, 1, 1, 1), (16, 32, 64, 128), 16),
    # ~80k parameters: the embedded mini-zoo stays a few MB.
    "resnet10_cifar_nano": (BasicBlock, (1, 1, 1, 1), (8, 16, 32, 64), 8),
}


class CifarResNet(ResNet):
    """timm :class:`~timm.models.resnet.ResNet` with the CIFAR stem: 3x3 stride-1 conv, no max-pool."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        in_chans = kwargs.get("in_chans", 3)
        stem_width = self.conv1.out_channels
        self.conv1 = nn.Conv2d(in_chans, stem_width, kernel_size=3, stride=1, padding=1, bias=False)
        nn.init.kaiming_normal_(self.conv1.weight, mode="fan_out", nonlinearity="relu")
        self.maxpool = nn.Identity()
        # The stem no longer downsamples by 4: keep feature_info truthful for features_only users.
        for info in self.feature_info:
            info["reduction"] = max(1, info["reduction"] // 4)


def _cfg(**kwargs):
    return {
        "num_classes": 100,
        "input_size": (3, 32, 32),
        "pool_size": (4, 4),
        "crop_pct": 1.0,
        "interpolation": "bilinear",
        "mean": CIFAR100_MEAN,
        "std": CIFAR100_STD,
        "first_conv": "conv1",
        "classifier": "fc",
        "license": "apache-2.0",
        **kwargs,
    }


default_cfgs = generate_default_cfgs({name: _cfg() for name in CIFAR_ARCHITECTURES})


def _create(variant: str, pretrained: bool = False, **kwargs) -> CifarResNet:
    block, layers, channels, stem_width = CIFAR_ARCHITECTURES[variant]
    kwargs.setdefault("num_classes", 100)
    model_args = dict(block=block, layers=layers, channels=channels, stem_width=stem_width)
    return build_model_with_cfg(CifarResNet, variant, pretrained, **dict(model_args, **kwargs))


@register_model
def resnet50_cifar(pretrained: bool = False, **kwargs) -> CifarResNet:
    """ResNet-50 (Bottleneck 3-4-6-3) with a CIFAR stem; 100 classes by default."""
    return _create("resnet50_cifar", pretrained, **kwargs)


@register_model
def resnet18_cifar(pretrained: bool = False, **kwargs) -> CifarResNet:
    """ResNet-18 (BasicBlock 2-2-2-2) with a CIFAR stem; 100 classes by default."""
    return _create("resnet18_cifar", pretrained, **kwargs)


@register_model
def resnet10_cifar_tiny(pretrained: bool = False, **kwargs) -> CifarResNet:
    """BasicBlock 1-1-1-1, widths 16-32-64-128, CIFAR stem: for tests and demos."""
    return _create("resnet10_cifar_tiny", pretrained, **kwargs)


@register_model
def resnet10_cifar_nano(pretrained: bool = False, **kwargs) -> CifarResNet:
    """BasicBlock 1-1-1-1, widths 8-16-32-64, CIFAR stem: the embedded mini-zoo."""
    return _create("resnet10_cifar_nano", pretrained, **kwargs)


#: Top-level ``config.json`` keys hfsoup reads or keeps (what :func:`hfsoup.hub.format.timm_config` and timm's
#: ``save_for_hf`` write). Any other key is refused: hfsoup cannot tell what a consumer would do with it.
CONFIG_KEYS = frozenset({"architecture", "num_classes", "num_features", "global_pool", "model_args",
                         "pretrained_cfg", "label_names", "label_descriptions"})
#: ``model_args`` passed to the timm constructor: only the shape of the head and the input. Everything else is
#: refused, in particular the factory arguments that load files (``checkpoint_path``, ``pretrained_cfg``,
#: ``pretrained_cfg_overlay``, ``cache_dir``…) and arbitrary architecture arguments.
MODEL_ARGS = frozenset({"num_classes", "in_chans", "global_pool"})
#: ``pretrained_cfg`` fields that are data (preprocessing, head names, provenance text): kept on the model.
PRETRAINED_CFG_DATA = frozenset({
    "architecture", "tag", "input_size", "test_input_size", "min_input_size", "fixed_input_size", "interpolation",
    "crop_pct", "test_crop_pct", "crop_mode", "mean", "std", "num_classes", "label_offset", "label_names",
    "label_descriptions", "pool_size", "test_pool_size", "first_conv", "classifier", "license", "description",
    "origin_url", "paper_name", "paper_ids", "notes"})
#: ``pretrained_cfg`` fields that tell timm where to load weights from: refused unless empty/false (timm's own
#: ``save_for_hf`` writes ``custom_load: false``).
PRETRAINED_CFG_SOURCES = frozenset({"url", "file", "state_dict", "hf_hub_id", "hf_hub_filename", "source",
                                    "custom_load"})


def _refuse(key: str, why: str, where: str) -> UnsafeConfigError:
    return UnsafeConfigError(f"{where}: refusing config entry '{key}': {why}; remove it from config.json (hfsoup "
                             f"only builds models from the architecture, class count and preprocessing data)",
                             key=key)


def _is_int(v, minimum: int = 0) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= minimum


def _is_plain_data(v, depth: int = 0) -> bool:
    """JSON scalars, lists of them and str->str maps (label descriptions): nothing a consumer could execute."""
    if v is None or isinstance(v, (bool, int, float, str)):
        return True
    if isinstance(v, list) and depth < 2:
        return all(_is_plain_data(x, depth + 1) for x in v)
    if isinstance(v, dict) and depth == 0:
        return all(isinstance(k, str) and isinstance(x, str) for k, x in v.items())
    return False


def check_config(config, source: str | os.PathLike | None = None) -> dict:
    """Validate a timm ``config.json`` dict against hfsoup's allow-list and return the ``model_args`` to build it.

    Only a registered timm architecture, the class count, pooling, input channels and ``pretrained_cfg`` *data*
    (mean, std, input size, crop…) are accepted. Raises :class:`~hfsoup.errors.UnsafeConfigError` naming the
    first refused key: unknown keys, ``model_args`` beyond :data:`MODEL_ARGS` (``checkpoint_path``,
    ``pretrained_cfg_overlay``… would make timm unpickle another file), and ``pretrained_cfg`` sources
    (``file``, ``url``, ``hf_hub_id``…).
    """
    import timm

    where = f"config '{source}'" if source is not None else "model config"
    try:
        if not isinstance(config, dict):
            raise _refuse("<root>", f"expected a JSON object, got {type(config).__name__}", where)
        unknown = sorted(k for k in config if k not in CONFIG_KEYS)
        if unknown:
            raise _refuse(unknown[0], "unknown key (allowed: " + ", ".join(sorted(CONFIG_KEYS)) + ")", where)
        arch = config.get("architecture")
        if not isinstance(arch, str) or not timm.is_model(arch):
            raise _refuse("architecture", f"{arch!r} is not a registered timm model name (a hub or file "
                                          f"reference would make timm download or load files)", where)
        for key in ("num_classes", "num_features"):
            if key in config and not _is_int(config[key]):
                raise _refuse(key, "must be a non-negative integer", where)
        if "global_pool" in config and not isinstance(config["global_pool"], str):
            raise _refuse("global_pool", "must be a string", where)
        if "label_names" in config and not (isinstance(config["label_names"], list)
                                            and all(isinstance(n, str) for n in config["label_names"])):
            raise _refuse("label_names", "must be a list of strings", where)
        if "label_descriptions" in config and not (isinstance(config["label_descriptions"], dict) and _is_plain_data(
                config["label_descriptions"])):
            raise _refuse("label_descriptions", "must map strings to strings", where)
        model_args = config.get("model_args") or {}
        if not isinstance(model_args, dict):
            raise _refuse("model_args", "must be a JSON object", where)
        for key in sorted(model_args):
            value = model_args[key]
            if key not in MODEL_ARGS:
                raise _refuse(f"model_args.{key}", "not an argument hfsoup passes to timm (allowed: "
                                                  + ", ".join(sorted(MODEL_ARGS)) + ")", where)
            ok = (_is_int(value) if key == "num_classes" else _is_int(value, 1) if key == "in_chans"
                  else isinstance(value, str))
            if not ok:
                raise _refuse(f"model_args.{key}", f"invalid value {value!r}", where)
        pcfg = config.get("pretrained_cfg") or {}
        if not isinstance(pcfg, dict):
            raise _refuse("pretrained_cfg", "must be a JSON object", where)
        for key in sorted(pcfg):
            value = pcfg[key]
            if key in PRETRAINED_CFG_SOURCES:
                if value not in (None, "", False):
                    raise _refuse(f"pretrained_cfg.{key}", "it tells timm to load weights from another file or "
                                                           "URL", where)
            elif key not in PRETRAINED_CFG_DATA:
                raise _refuse(f"pretrained_cfg.{key}", "unknown pretrained_cfg field", where)
            elif not _is_plain_data(value):
                raise _refuse(f"pretrained_cfg.{key}", "must be plain data (numbers, strings, lists)", where)
            elif key == "architecture" and value != arch:
                raise _refuse("pretrained_cfg.architecture", f"{value!r} differs from the architecture {arch!r}",
                              where)
    except UnsafeConfigError as e:
        e.path = source
        raise
    return dict(model_args)


def build_model(config: dict, state_dict: dict[str, torch.Tensor] | None = None,
                device: str | torch.device = "cpu") -> torch.nn.Module:
    """Create the timm model described by a timm ``config.json`` dict and load ``state_dict`` strictly.

    The config is checked first (:func:`check_config`): only allow-listed, data-only fields reach timm, and the
    model is always built with ``pretrained=False``, so a config can never make timm load another file.
    """
    import timm

    kwargs = check_config(config)
    arch = config["architecture"]
    kwargs.setdefault("num_classes", config.get("num_classes", 1000))
    try:
        model = timm.create_model(arch, pretrained=False, **kwargs)
    except (RuntimeError, TypeError, ValueError) as e:
        raise HfSoupError(f"timm cannot build architecture '{arch}': {e}") from None
    pcfg = {k: v for k, v in (config.get("pretrained_cfg") or {}).items() if k in PRETRAINED_CFG_DATA}
    if pcfg:
        model.pretrained_cfg = {**getattr(model, "pretrained_cfg", {}), **pcfg}
    if state_dict is not None:
        try:
            model.load_state_dict(state_dict, strict=True)
        except RuntimeError as e:
            raise IncompatibleModelsError(f"weights do not fit {arch}: {str(e).splitlines()[0]}") from None
    return model.to(device).eval()
