"""hfsoup: model soups for timm models on the Hugging Face Hub.

The data path: model references → :func:`load_ingredients` (config, metadata, lazy tensors) → a recipe
(:func:`mix`, :func:`uniform_soup`, …) built on :func:`average` → :class:`Soup` → :func:`evaluate` /
:meth:`Soup.save` / :func:`push`. Importing hfsoup registers the CIFAR ResNets with timm.
"""

__version__ = "0.1.0"

from . import models  # noqa: F401  (registers resnet50_cifar, resnet18_cifar, resnet10_cifar_tiny/nano with timm)
from .averaging import INTEGER_POLICIES, average, check_weights
from .data import ImageData, heldout_indices, load_image_data
from .errors import (CorruptFileError, DatasetError, HfSoupError, IncompatibleModelsError, InvalidWeightsError,
                     ModelReferenceError, NonFiniteError, OfflineError, OutputExistsError, PushError,
                     UnsafeCheckpointError)
from .evaluation import EvalResult, evaluate, evaluate_model, metrics_from_logits, predict_logits, soup_gain
from .hub_format import write_model_folder
from .ingredients import Ingredient, build_model, check_compatible, load_ingredient, load_ingredients
from .push import push
from .references import ModelRef, parse_reference, resolve
from .soup import Soup, mix, parse_alphas, uniform_soup, weighted_soup
from .robustness import evaluate_corrupted  # noqa: E402  (CIFAR-100-C evaluation)
from .greedy import greedy_soup  # noqa: E402  (selection recipes: greedy, RADIN, ensemble baseline, BN recal.)
from .radin import radin_soup  # noqa: E402
from .learned import learned_soup  # noqa: E402  (learned soup, Wortsman et al. Appendix I)
from .ensemble import ensemble_evaluate  # noqa: E402
from .bn import recalibrate_bn  # noqa: E402

__all__ = ["greedy_soup", "radin_soup", "ensemble_evaluate", "recalibrate_bn"]  # extended below

__all__ += [
    "__version__", "average", "check_weights", "INTEGER_POLICIES", "ImageData", "load_image_data",
    "heldout_indices", "EvalResult", "evaluate", "evaluate_model", "predict_logits", "metrics_from_logits",
    "soup_gain", "write_model_folder", "Ingredient", "load_ingredient", "load_ingredients", "check_compatible",
    "build_model", "push", "ModelRef", "parse_reference", "resolve", "Soup", "mix", "uniform_soup",
    "weighted_soup", "parse_alphas", "HfSoupError", "ModelReferenceError", "OfflineError", "UnsafeCheckpointError",
    "CorruptFileError", "IncompatibleModelsError", "InvalidWeightsError", "NonFiniteError", "DatasetError",
    "OutputExistsError", "PushError",
]
__all__ += ["evaluate_corrupted"]
__all__ += ["learned_soup"]
