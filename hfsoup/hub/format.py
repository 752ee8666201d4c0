"""The Hub format of every model hfsoup writes: ``model.safetensors`` (with string ``__metadata__``), timm's
``config.json``, a ``README.md`` model card and, for soups, ``soup.json``. Folders are written atomically."""

from __future__ import annotations

import json
import os
import shutil
import uuid
from importlib import resources
from pathlib import Path
from typing import Callable, Mapping

import torch

from hfsoup.core.ingredients import sha256_file
from hfsoup.core.soup import Soup
from hfsoup.errors import OutputExistsError

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
CARD_NAME = "README.md"
SOUP_MANIFEST_NAME = "soup.json"
HUB_FILES = (WEIGHTS_NAME, CONFIG_NAME, CARD_NAME, SOUP_MANIFEST_NAME)


def safetensors_metadata(values: Mapping[str, object]) -> dict[str, str]:
    """``__metadata__`` must map strings to strings: strings stay, everything else is JSON-encoded."""
    out = {"format": "pt"}
    for k, v in values.items():
        if v is None:
            continue
        out[str(k)] = v if isinstance(v, str) else json.dumps(v, sort_keys=True)
    return out


def decode_metadata(metadata: Mapping[str, str]) -> dict:
    """Inverse of :func:`safetensors_metadata` (values that are not JSON stay strings)."""
    out = {}
    for k, v in metadata.items():
        try:
            out[k] = json.loads(v)
        except (TypeError, ValueError):
            out[k] = v
    return out


def timm_config(model: torch.nn.Module, *, label_names: list[str] | None = None, extra: dict | None = None) -> dict:
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


def check_output(out: str | Path, force: bool = False) -> Path:
    """Fail early (before any work) if ``out`` exists and ``force`` is not set."""
    out = Path(out)
    if out.exists() and not force:
        raise OutputExistsError(f"'{out}' already exists: choose another --out or pass --force to replace it")
    return out


def write_model_folder(out: str | Path, state_dict: Mapping[str, torch.Tensor], config: dict, *,
                       metadata: Mapping[str, object] | None = None, card: str | Callable[[str], str] | None = None,
                       manifest: dict | None = None, force: bool = False) -> Path:
    """Write a model folder in hfsoup's Hub format, atomically.

    Everything is written to a temporary sibling folder first and renamed into place, so an interrupted write
    leaves no partial output, and an existing ``out`` is only replaced with ``force=True``. When ``manifest`` is
    given it is written as ``soup.json`` with ``sha256`` set to the hash of ``model.safetensors``; ``card`` may be
    a function of that hash.
    """
    from safetensors.torch import save_file

    out = check_output(out, force)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        tensors = {k: v.detach().cpu().contiguous() for k, v in state_dict.items()}
        save_file(tensors, str(tmp / WEIGHTS_NAME), metadata=safetensors_metadata(metadata or {}))
        _write_text(tmp / CONFIG_NAME, json.dumps(config, indent=2) + "\n")
        digest = sha256_file(tmp / WEIGHTS_NAME)
        if manifest is not None:
            manifest = dict(manifest, sha256=digest)
            _write_text(tmp / SOUP_MANIFEST_NAME, json.dumps(manifest, indent=2, default=_json_default) + "\n")
        if card is not None:
            _write_text(tmp / CARD_NAME, card(digest) if callable(card) else card)
        _replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _write_text(path: Path, text: str) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def _replace_dir(tmp: Path, out: Path) -> None:
    """Move ``tmp`` to ``out``; an existing ``out`` is moved aside first and removed only once the new one is in."""
    if out.exists():
        old = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:8]}"
        os.replace(out, old)
        os.replace(tmp, out)
        if old.is_dir():
            shutil.rmtree(old, ignore_errors=True)
        else:
            old.unlink(missing_ok=True)
    else:
        os.replace(tmp, out)


def write_json_atomic(path: str | Path, obj) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    _write_text(tmp, json.dumps(obj, indent=2, default=_json_default) + "\n")
    os.replace(tmp, path)


def _json_default(o):
    if isinstance(o, Path):
        return str(o)
    if isinstance(o, torch.Tensor):
        return o.tolist()
    if hasattr(o, "to_dict"):
        return o.to_dict()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def render_card(template: str, card_data: dict, **variables) -> str:
    """Render a model card from ``model_cards/<template>.md`` with ``huggingface_hub.ModelCard.from_template``."""
    from huggingface_hub import ModelCard, ModelCardData

    path = resources.files("hfsoup.model_cards").joinpath(f"{template}.md")
    data = ModelCardData(**card_data)
    with resources.as_file(path) as p:
        return str(ModelCard.from_template(data, template_path=str(p), **variables))


def eval_results_for_card(results: dict, *, dataset_name: str) -> list:
    """``model-index`` entries (``huggingface_hub.EvalResult``) from ``{split: {"accuracy":…, "loss":…, "dataset":…}}``."""
    from huggingface_hub import EvalResult

    out = []
    for split, r in results.items():
        ds = r.get("dataset") or dataset_name
        common = dict(task_type="image-classification", task_name="Image Classification", dataset_type=ds,
                      dataset_name=r.get("dataset_name", ds), dataset_split=r.get("split", split),
                      dataset_revision=r.get("revision"), dataset_config=r.get("config"))
        out.append(EvalResult(metric_type="accuracy", metric_name="Top-1 accuracy",
                              metric_value=round(float(r["accuracy"]), 6), **common))
        out.append(EvalResult(metric_type="loss", metric_name="Cross-entropy",
                              metric_value=round(float(r["loss"]), 6), **common))
    return out


def save_model(model: torch.nn.Module, out: str | Path, *, metadata: Mapping[str, object] | None = None,
               results: list[dict] | None = None, repo_id: str | None = None, description: str | None = None,
               datasets: list[str] | None = None, label_names: list[str] | None = None, tags: list[str] | None = None,
               force: bool = False) -> Path:
    """Save a trained timm model in hfsoup's Hub format (weights + metadata, timm config, model card).

    ``results`` is a list of ``{"dataset", "split", "accuracy", "loss", ["revision", "config"]}`` rows that go into
    the card's table and ``model-index``.
    """
    from hfsoup import __version__

    config = timm_config(model, label_names=label_names)
    meta = {"hfsoup_version": __version__, "architecture": config["architecture"], **(metadata or {})}
    card_data = {"library_name": "timm", "license": "apache-2.0", "pipeline_tag": "image-classification",
                 "tags": ["image-classification", "timm", "hfsoup", *(tags or [])]}
    if datasets:
        card_data["datasets"] = list(datasets)
    if results:
        card_data.update(model_name=(repo_id or str(out)).split("/")[-1],
                         eval_results=eval_results_for_card(
                             {f"{r['dataset']}:{r['split']}": r for r in results}, dataset_name="dataset"))
    card = render_card("model", card_data, title=(repo_id or Path(out).name).split("/")[-1],
                       architecture=config["architecture"], num_classes=config["num_classes"],
                       description=description, metadata={k: v for k, v in meta.items()}, results=results or [],
                       repo_id=repo_id)
    return write_model_folder(out, model.state_dict(), config, metadata=meta, card=card, force=force)


def soup_card(soup: Soup, repo_id: str | None = None, sha256: str | None = None) -> str:
    """The model card of a soup: its ingredients as ``base_model`` (``base_model_relation: merge``), the recipe and
    its parameters, and a ``model-index`` with every recorded result."""
    base_models = []
    for ing in soup.ingredients:
        hub_id = ing.repo_id or decode_metadata(ing.metadata).get("repo_id")
        if isinstance(hub_id, str) and hub_id not in base_models:
            base_models.append(hub_id)
    datasets_ = sorted({r.data["dataset"] for r in soup.results.values()
                        if "/" in r.data["dataset"] and not Path(r.data["dataset"]).exists()})
    card_results = {
        split: dict(r.soup.to_dict(), dataset=r.data["dataset"], split=r.data["split"],
                    revision=r.data.get("revision"), config=r.data.get("config"))
        for split, r in soup.results.items()}
    card_data = {
        "library_name": "timm",
        "license": "apache-2.0",
        "tags": ["image-classification", "timm", "merge", "model-soup", "hfsoup"],
        "pipeline_tag": "image-classification",
    }
    if base_models:
        card_data.update(base_model=base_models, base_model_relation="merge")
    if datasets_:
        card_data["datasets"] = datasets_
    if card_results:
        card_data.update(model_name=repo_id.split("/")[-1] if repo_id else "hfsoup-soup",
                         eval_results=eval_results_for_card(card_results, dataset_name="dataset"))
    return render_card(
        "soup", card_data, title=(repo_id.split("/")[-1] if repo_id else f"{soup.recipe} soup"),
        recipe=soup.recipe, parameters=soup.parameters, architecture=soup.architecture,
        num_classes=soup.ingredients[0].num_classes, sha256=sha256 or "see soup.json", repo_id=repo_id,
        ingredients=soup.describe_ingredients(),
        results={s: {"models": {k: v.to_dict() for k, v in r.models.items()}, "gain": r.gain}
                 for s, r in soup.results.items()})


def save_soup(soup: Soup, out: str | Path, *, force: bool = False, repo_id: str | None = None) -> Path:
    """Write a soup in the Hub format (weights + metadata, timm config, card, ``soup.json``), atomically."""
    return write_model_folder(out, soup.state_dict, soup.config, metadata=soup.metadata(),
                              card=lambda digest: soup_card(soup, repo_id, sha256=digest),
                              manifest=soup.manifest(), force=force)
