"""The Hub format of every model hfsoup writes: ``model.safetensors`` (with string ``__metadata__``), timm's
``config.json``, a ``README.md`` model card (:mod:`hfsoup.hub.cards`) and, for soups, ``soup.json``.

Folders are written atomically (:mod:`hfsoup.core.files`): an interrupted write leaves no partial output and an
existing output is only replaced with ``force``. Torch is not imported here: the tensors come from the caller.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, Mapping

from hfsoup.core.files import atomic_folder, atomic_save, atomic_write_text, check_output, dumps_json
from hfsoup.core.references import CONFIG_NAME, SAFETENSORS_NAME
from hfsoup.core.safetensors_io import decode_metadata, encode_metadata, sha256_file, write_safetensors
from hfsoup.errors import OutputOverlapsInputError
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
    out = Path(out)
    with atomic_folder(out, force=force) as tmp:
        # hfsoup's own writer, not safetensors.save_file: the same tensors and metadata give the same bytes.
        atomic_save(tmp / WEIGHTS_NAME,
                    lambda p: write_safetensors(p, state_dict, metadata=encode_metadata(metadata or {})))
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


def check_output_not_input(out: str | Path, inputs: Iterable[str | Path]) -> None:
    """Refuse an output folder that is, contains or lies inside one of the ``inputs`` (symlinks resolved): writing
    it, or replacing it with ``--force``, would destroy an input. Raises
    :class:`~hfsoup.errors.OutputOverlapsInputError`."""
    target = Path(out).expanduser().resolve()
    for folder in inputs:
        src = Path(folder).expanduser().resolve()
        if target == src:
            how = "is the input model folder"
        elif src in target.parents:
            how = "lies inside the input model folder"
        elif target in src.parents:
            how = "contains the input model folder"
        else:
            continue
        raise OutputOverlapsInputError(f"output '{out}' {how} '{folder}': writing it would destroy an input; choose "
                                       f"an --out outside every input folder", path=Path(out), input=Path(folder))


def soup_input_folders(soup: "Soup") -> list[Path]:
    """The folders a soup was read from: local ingredient folders, and the HF cache snapshots of Hub ones."""
    return [ing.resolved.folder for ing in soup.ingredients]


def check_outputs_not_inputs(outs: Iterable[str | Path | None], ingredients: Iterable) -> None:
    """:func:`check_output_not_input` for each planned output (``None``: not saved) against the ingredients'
    folders: lets a command fail before any averaging, not only when :func:`save_soup` writes."""
    folders = [ing.resolved.folder for ing in ingredients]
    for out in outs:
        if out is not None:
            check_output_not_input(out, folders)


def save_soup(soup: "Soup", out: str | Path, *, force: bool = False, repo_id: str | None = None) -> Path:
    """Write a soup in the Hub format (weights + metadata, timm config, card, ``soup.json``), atomically.

    Refuses (:class:`~hfsoup.errors.OutputOverlapsInputError`) an ``out`` that is, contains or lies inside an
    ingredient's folder, before anything is written.
    """
    check_output_not_input(out, soup_input_folders(soup))
    return write_model_folder(out, soup.state_dict, soup.config, metadata=soup.metadata(),
                              card=lambda digest: soup_card(soup, repo_id, sha256=digest),
                              manifest=soup.manifest(), force=force)


__all__ = ["WEIGHTS_NAME", "CONFIG_NAME", "CARD_NAME", "SOUP_MANIFEST_NAME", "HUB_FILES", "decode_metadata",
           "timm_config", "write_model_folder", "save_model", "save_soup", "check_output", "check_output_not_input",
           "check_outputs_not_inputs", "soup_input_folders"]
