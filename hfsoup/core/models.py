"""CIFAR-style ResNets registered as timm models.

timm's ResNet has no CIFAR stem, so hfsoup registers its own family: the ImageNet stem (7x7/2 conv + max-pool) is
replaced by a 3x3 stride-1 conv without bias and no pooling, which keeps the 32x32 resolution for ``layer1``.
Registering the names with timm means ``timm.create_model("hf-hub:org/name", pretrained=True)`` and
``timm.create_model("local-dir:./folder", pretrained=True)`` work after ``import hfsoup``.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from timm.models import build_model_with_cfg, register_model
from timm.models._registry import generate_default_cfgs
from timm.models.resnet import BasicBlock, Bottleneck, ResNet

from hfsoup.errors import HfSoupError, IncompatibleModelsError

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


def build_model(config: dict, state_dict: dict[str, torch.Tensor] | None = None,
                device: str | torch.device = "cpu") -> torch.nn.Module:
    """Create the timm model described by a timm ``config.json`` dict and load ``state_dict`` strictly."""
    import timm

    arch = config["architecture"]
    kwargs = dict(config.get("model_args") or {})
    kwargs.setdefault("num_classes", config.get("num_classes", 1000))
    try:
        model = timm.create_model(arch, pretrained=False, **kwargs)
    except RuntimeError as e:
        raise HfSoupError(f"timm cannot build architecture '{arch}': {e}") from None
    pcfg = config.get("pretrained_cfg")
    if pcfg:
        model.pretrained_cfg = {**getattr(model, "pretrained_cfg", {}), **pcfg}
    if state_dict is not None:
        try:
            model.load_state_dict(state_dict, strict=True)
        except RuntimeError as e:
            raise IncompatibleModelsError(f"weights do not fit {arch}: {str(e).splitlines()[0]}") from None
    return model.to(device).eval()
