"""hfsoup: model soups for timm models on the Hugging Face Hub.

The data path: model references → :func:`load_ingredients` (config, metadata, lazy tensors) → a recipe
(:func:`mix`, :func:`uniform_soup`, :func:`greedy_soup`, …, see :func:`list_recipes`) built on :func:`average` →
:class:`Soup` → :func:`evaluate_soup` / :func:`save_soup` / :func:`push`.

The package is lazy (PEP 562): ``import hfsoup`` imports neither torch nor timm, so ``hfsoup --help`` is instant.
Names are imported on first use. The CIFAR ResNets are registered with timm as soon as timm is imported, whether
before or after hfsoup, so ``import hfsoup, timm; timm.create_model("resnet50_cifar")`` works.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
from typing import TYPE_CHECKING

__version__ = "0.1.0"

#: Public name -> module that defines it. One table: ``__getattr__``, ``__dir__`` and ``__all__`` read it.
_EXPORTS: dict[str, str] = {
    # errors
    **{name: "hfsoup.errors" for name in (
        "HfSoupError", "ModelReferenceError", "OfflineError", "UnsafeCheckpointError", "CorruptFileError",
        "IncompatibleModelsError", "InvalidWeightsError", "NonFiniteError", "DatasetError", "OutputExistsError",
        "PushError", "InvalidParameterError", "from_client_error")},
    # core
    "ModelRef": "hfsoup.core.references", "parse_reference": "hfsoup.core.references",
    "resolve": "hfsoup.core.references",
    "Ingredient": "hfsoup.core.ingredients", "load_ingredient": "hfsoup.core.ingredients",
    "load_ingredients": "hfsoup.core.ingredients", "check_compatible": "hfsoup.core.ingredients",
    "as_ingredients": "hfsoup.core.ingredients",
    "build_model": "hfsoup.core.models",
    "average": "hfsoup.core.averaging", "check_weights": "hfsoup.core.averaging",
    "INTEGER_POLICIES": "hfsoup.core.averaging",
    "Soup": "hfsoup.core.soup",
    # data
    "ImageData": "hfsoup.data.images", "load_image_data": "hfsoup.data.images",
    "heldout_indices": "hfsoup.data.images",
    # eval
    "EvalResult": "hfsoup.eval.metrics", "evaluate": "hfsoup.eval.metrics", "evaluate_model": "hfsoup.eval.metrics",
    "predict_logits": "hfsoup.eval.metrics", "metrics_from_logits": "hfsoup.eval.metrics",
    "soup_gain": "hfsoup.eval.metrics",
    "evaluate_soup": "hfsoup.eval.soup", "SplitResult": "hfsoup.eval.soup",
    "evaluate_corrupted": "hfsoup.eval.corrupted",
    # recipes
    "mix": "hfsoup.recipes.mix", "uniform_soup": "hfsoup.recipes.mix", "weighted_soup": "hfsoup.recipes.mix",
    "parse_alphas": "hfsoup.recipes.mix",
    "greedy_soup": "hfsoup.recipes.greedy", "radin_soup": "hfsoup.recipes.radin",
    "learned_soup": "hfsoup.recipes.learned", "ensemble_evaluate": "hfsoup.recipes.ensemble",
    "recalibrate_bn": "hfsoup.recipes.bn", "EnsembleResult": "hfsoup.recipes.ensemble",
    "Recipe": "hfsoup.recipes.registry", "get_recipe": "hfsoup.recipes.registry",
    "list_recipes": "hfsoup.recipes.registry",
    # hub
    "write_model_folder": "hfsoup.hub.format", "save_soup": "hfsoup.hub.format", "push": "hfsoup.hub.upload",
    "upload_folder": "hfsoup.hub.upload", "UploadResult": "hfsoup.hub.upload",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'hfsoup' has no attribute '{name}'")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


# -- timm registration -------------------------------------------------------------------------------------------
_MODELS_MODULE = "hfsoup.core.models"


class _RegisterWithTimm(importlib.abc.MetaPathFinder):
    """Registers hfsoup's architectures right after timm finishes importing, wherever timm is imported from.

    A lazy ``import hfsoup`` must not import timm (it pulls in torch), yet timm's registry must know
    ``resnet50_cifar`` before ``timm.create_model("hf-hub:…")`` reads a hfsoup ``config.json``.
    """

    def find_spec(self, fullname, path=None, target=None):
        if fullname != "timm":
            return None
        sys.meta_path.remove(self)  # once, and let the real finders locate timm
        spec = importlib.util.find_spec("timm")
        if spec is None or spec.loader is None:
            return spec
        exec_module = spec.loader.exec_module

        def exec_then_register(module):
            exec_module(module)
            importlib.import_module(_MODELS_MODULE)

        spec.loader.exec_module = exec_then_register
        return spec


if "timm" in sys.modules:
    importlib.import_module(_MODELS_MODULE)
elif not any(isinstance(f, _RegisterWithTimm) for f in sys.meta_path):
    sys.meta_path.insert(0, _RegisterWithTimm())


if TYPE_CHECKING:  # static analysis and IDEs see the real names
    from hfsoup.core.averaging import INTEGER_POLICIES, average, check_weights
    from hfsoup.core.ingredients import (Ingredient, as_ingredients, check_compatible, load_ingredient,
                                         load_ingredients)
    from hfsoup.core.models import build_model
    from hfsoup.core.references import ModelRef, parse_reference, resolve
    from hfsoup.core.soup import Soup
    from hfsoup.data.images import ImageData, heldout_indices, load_image_data
    from hfsoup.errors import (CorruptFileError, DatasetError, HfSoupError, IncompatibleModelsError,
                               InvalidParameterError, InvalidWeightsError, ModelReferenceError, NonFiniteError,
                               OfflineError, OutputExistsError, PushError, UnsafeCheckpointError, from_client_error)
    from hfsoup.eval.corrupted import evaluate_corrupted
    from hfsoup.eval.metrics import (EvalResult, evaluate, evaluate_model, metrics_from_logits, predict_logits,
                                     soup_gain)
    from hfsoup.eval.soup import SplitResult, evaluate_soup
    from hfsoup.hub.format import save_soup, write_model_folder
    from hfsoup.hub.upload import UploadResult, push, upload_folder
    from hfsoup.recipes.bn import recalibrate_bn
    from hfsoup.recipes.ensemble import EnsembleResult, ensemble_evaluate
    from hfsoup.recipes.greedy import greedy_soup
    from hfsoup.recipes.learned import learned_soup
    from hfsoup.recipes.mix import mix, parse_alphas, uniform_soup, weighted_soup
    from hfsoup.recipes.radin import radin_soup
    from hfsoup.recipes.registry import Recipe, get_recipe, list_recipes
