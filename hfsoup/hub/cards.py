"""Model cards: the ``README.md`` of every model folder hfsoup writes, rendered from the Jinja templates in
``model_cards/`` (installed as ``hfsoup.model_cards``) with ``huggingface_hub.ModelCard.from_template``, with a
``model-index`` of the recorded results. Soups list their ingredients as ``base_model`` (``base_model_relation:
merge``), so the Hub links them."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Mapping

from hfsoup.core.safetensors_io import decode_metadata

if TYPE_CHECKING:
    from hfsoup.core.soup import Soup

CARD_TAGS = ["image-classification", "timm", "hfsoup"]


def render_card(template: str, card_data: dict, **variables) -> str:
    """Render a model card from ``model_cards/<template>.md`` with ``huggingface_hub.ModelCard.from_template``."""
    from huggingface_hub import ModelCard, ModelCardData

    path = resources.files("hfsoup.model_cards").joinpath(f"{template}.md")
    data = ModelCardData(**card_data)
    with resources.as_file(path) as p:
        return str(ModelCard.from_template(data, template_path=str(p), **variables))


def eval_results_for_card(results: Mapping[str, Mapping], *, dataset_name: str) -> list:
    """``model-index`` entries (``huggingface_hub.EvalResult``) from ``{split: {"accuracy", "loss", "dataset",
    ["split", "revision", "config", "dataset_name"]}}``: one accuracy and one loss entry per split."""
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


def model_card(config: Mapping, *, out: str | Path, metadata: Mapping[str, object], results: list[dict] | None = None,
               repo_id: str | None = None, description: str | None = None, datasets: list[str] | None = None,
               tags: list[str] | None = None) -> str:
    """The card of a trained model: architecture, training metadata, results (table and ``model-index``).

    ``results`` is a list of ``{"dataset", "split", "accuracy", "loss", ["revision", "config"]}`` rows.
    """
    card_data = {"library_name": "timm", "license": "apache-2.0", "pipeline_tag": "image-classification",
                 "tags": [*CARD_TAGS, *(tags or [])]}
    if datasets:
        card_data["datasets"] = list(datasets)
    if results:
        card_data.update(model_name=(repo_id or str(out)).split("/")[-1],
                         eval_results=eval_results_for_card(
                             {f"{r['dataset']}:{r['split']}": r for r in results}, dataset_name="dataset"))
    return render_card("model", card_data, title=(repo_id or Path(out).name).split("/")[-1],
                       architecture=config["architecture"], num_classes=config["num_classes"],
                       description=description, metadata=dict(metadata), results=results or [], repo_id=repo_id)


def soup_card(soup: "Soup", repo_id: str | None = None, sha256: str | None = None) -> str:
    """The model card of a soup: its ingredients as ``base_model`` (``base_model_relation: merge``), the recipe and
    its parameters, and a ``model-index`` with every recorded result."""
    base_models = []
    for ing in soup.ingredients:
        hub_id = ing.repo_id or decode_metadata(ing.metadata).get("repo_id")
        if isinstance(hub_id, str) and hub_id not in base_models:
            base_models.append(hub_id)
    datasets_ = sorted({r.data["dataset"] for r in soup.results.values()
                        if "/" in r.data["dataset"] and not Path(r.data["dataset"]).exists()})
    # Everything below is published: local paths become folder names (Soup.public), as in soup.json.
    card_results = soup.public({
        split: dict(r.soup.to_dict(), dataset=r.data["dataset"], split=r.data["split"],
                    revision=r.data.get("revision"), config=r.data.get("config"))
        for split, r in soup.results.items()})
    card_data = {"library_name": "timm", "license": "apache-2.0",
                 "tags": ["image-classification", "timm", "merge", "model-soup", "hfsoup"],
                 "pipeline_tag": "image-classification"}
    if base_models:
        card_data.update(base_model=base_models, base_model_relation="merge")
    if datasets_:
        card_data["datasets"] = datasets_
    if card_results:
        card_data.update(model_name=repo_id.split("/")[-1] if repo_id else "hfsoup-soup",
                         eval_results=eval_results_for_card(card_results, dataset_name="dataset"))
    return render_card(
        "soup", card_data, title=(repo_id.split("/")[-1] if repo_id else f"{soup.recipe} soup"),
        recipe=soup.recipe, parameters=soup.public(soup.parameters), architecture=soup.architecture,
        num_classes=soup.ingredients[0].num_classes, sha256=sha256 or "see soup.json", repo_id=repo_id,
        ingredients=soup.public(soup.describe_ingredients()),
        results=soup.public({s: {"models": {k: v.to_dict() for k, v in r.models.items()}, "gain": r.gain,
                                 "precision": r.data.get("precision")}  # the evaluation numerics, with its check
                             for s, r in soup.results.items()}))


__all__ = ["render_card", "eval_results_for_card", "model_card", "soup_card"]
