"""The Hub format of every model hfsoup writes: ``model.safetensors`` (with string ``__metadata__``), timm's
``config.json``, a ``README.md`` model card (:mod:`hfsoup.hub.cards`) and, for soups, ``soup.json``.

Folders are written atomically (:mod:`hfsoup.core.files`): an interrupted write leaves no partial output and an
existing output is only replaced with ``force``. Torch is not imported here: the tensors come from the caller.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Mapping

from hfsoup.core.files import atomic_folder, atomic_save, atomic_write_text, check_output, dumps_json
from hfsoup.core.references import CONFIG_NAME, SAFETENSORS_NAME
from hfsoup.core.safetensors_io import decode_metadata, encode_metadata, sha256_file
from hfsoup.hub.cards import model_card, soup_card

if TYPE_CHECKING:
    import torch

    from hfsoup.core.soup import Soup

WEIGHTS_NAME = SAFETENSORS_NAME
CARD_NAME = "README.md"
SOUP_MANIFEST_NAME = "soup.json"
#: The files of a model folder, in the order they are pushed.
HUB_FILES = (WEIGHTS_NAME, CONFIG_NAME, CARD_NAME, SOUP_MANIFEST_NAME)


def timm_config(model: "torch.nn.Module", *, label_names: list[str] | None = None,
                extra: dict | None = None) -> dict:
    """timm's ``config.json`` layout (as written by ``timm.models.save_for_hf``) for a model built by timm."""
    from timm.models import get_model_args

    pcfg = {k: v for k, v in dict(model.pretrained_cfg).items()
            if k not in ("architecture", "tag", "hf_hub_id", "hf_hub_filename", "url", "file", "source",
                         "state_dict", "custom_load", "label_names", "label_descriptions")
            and v is not None}
    pcfg["num_classes"] = model.num_classes
    config = {
        "architecture": model.pretrained_cfg["architecture"],
        "num_classes": model.num_classes,
        "num_features": model.num_features,
        "global_pool": "avg",
        "model_args": get_model_args(model),
        "pretrained_cfg": json.loads(json.dumps(pcfg)),  # tuples -> lists, as in a JSON round trip
    }
    if label_names:
        config["label_names"] = list(label_names)
    config.update(extra or {})
    return config


def write_model_folder(out: str | Path, state_dict: Mapping[str, "torch.Tensor"], config: dict, *,
                       metadata: Mapping[str, object] | None = None, card: str | Callable[[str], str] | None = None,
                       manifest: dict | None = None, force: bool = False) -> Path:
    """Write a model folder in hfsoup's Hub format, atomically.

    Everything is written to a temporary sibling folder first and renamed into place, so an interrupted write
    leaves no partial output, and an existing ``out`` is only replaced with ``force=True``. When ``manifest`` is
    given it is written as ``soup.json`` with ``sha256`` set to the hash of ``model.safetensors``; ``card`` may be
    a function of that hash.
    """
    from safetensors.torch import save_file

    out = Path(out)
    with atomic_folder(out, force=force) as tmp:
        tensors = {k: v.detach().cpu().contiguous() for k, v in state_dict.items()}
        atomic_save(tmp / WEIGHTS_NAME,
                    lambda p: save_file(tensors, str(p), metadata=encode_metadata(metadata or {})))
        atomic_write_text(tmp / CONFIG_NAME, dumps_json(config))
        digest = sha256_file(tmp / WEIGHTS_NAME)
        if manifest is not None:
            atomic_write_text(tmp / SOUP_MANIFEST_NAME, dumps_json(dict(manifest, sha256=digest)))
        if card is not None:
            atomic_write_text(tmp / CARD_NAME, card(digest) if callable(card) else card)
    return out


def save_model(model: "torch.nn.Module", out: str | Path, *, metadata: Mapping[str, object] | None = None,
               results: list[dict] | None = None, repo_id: str | None = None, description: str | None = None,
               datasets: list[str] | None = None, label_names: list[str] | None = None, tags: list[str] | None = None,
               force: bool = False) -> Path:
    """Save a trained timm model in hfsoup's Hub format (weights + metadata, timm config, model card).

    ``results`` is a list of ``{"dataset", "split", "accuracy", "loss", ["revision", "config"]}`` rows that go into
    the card's table and ``model-index``.
    """
    from hfsoup import __version__

    check_output(out, force)  # before building the card
    config = timm_config(model, label_names=label_names)
    meta = {"hfsoup_version": __version__, "architecture": config["architecture"], **(metadata or {})}
    card = model_card(config, out=out, metadata=meta, results=results, repo_id=repo_id, description=description,
                      datasets=datasets, tags=tags)
    return write_model_folder(out, model.state_dict(), config, metadata=meta, card=card, force=force)


def save_soup(soup: "Soup", out: str | Path, *, force: bool = False, repo_id: str | None = None) -> Path:
    """Write a soup in the Hub format (weights + metadata, timm config, card, ``soup.json``), atomically."""
    return write_model_folder(out, soup.state_dict, soup.config, metadata=soup.metadata(),
                              card=lambda digest: soup_card(soup, repo_id, sha256=digest),
                              manifest=soup.manifest(), force=force)


__all__ = ["WEIGHTS_NAME", "CONFIG_NAME", "CARD_NAME", "SOUP_MANIFEST_NAME", "HUB_FILES", "decode_metadata",
           "timm_config", "write_model_folder", "save_model", "save_soup", "check_output"]
