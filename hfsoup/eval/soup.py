"""Scoring a soup against its ingredients on one split: the soup and every ingredient (those not already scored)
are evaluated, and the :class:`~hfsoup.core.results.SplitResult` is stored in ``soup.results``."""

from __future__ import annotations

from typing import Mapping

from hfsoup.core.results import EvalResult, SplitResult
from hfsoup.core.soup import Soup
from hfsoup.data.images import ImageData
from hfsoup.eval.metrics import choose_eval_precision, evaluate_model
from hfsoup.eval.precision import PrecisionChoice, ambient_precision


def evaluate_soup(soup: Soup, data: ImageData, *, ingredient_results: Mapping[str, EvalResult] | None = None,
                  key: str | None = None, precision: str | PrecisionChoice | None = None,
                  **eval_kwargs) -> SplitResult:
    """Evaluate ``soup`` and its ingredients (those not in ``ingredient_results``) on ``data``.

    The result is stored under ``soup.results[key or data.split]`` and returned. ``eval_kwargs`` go to
    :func:`~hfsoup.eval.metrics.predict_logits` (``batch_size``, ``device``, ``progress``). ``precision`` (``fp32``,
    ``bf16``, ``auto``; ``None``: the ambient one) is resolved once, on the soup, used for every model and recorded
    as ``data["precision"]`` of the result (:class:`~hfsoup.eval.precision.PrecisionChoice`).
    """
    soup_model = soup.create_model()
    if not isinstance(precision, PrecisionChoice):
        precision = choose_eval_precision(precision or ambient_precision(), soup_model, data,
                                          device=eval_kwargs.get("device"),
                                          batch_size=eval_kwargs.get("batch_size", 500))
    known = dict(ingredient_results or {})
    for ing in soup.ingredients:
        if ing.reference not in known:
            known[ing.reference] = evaluate_model(ing.create_model(), data, desc=f"eval {ing.name}"[:40],
                                                  precision=precision, **eval_kwargs)
    soup_result = evaluate_model(soup_model, data, desc="eval soup", precision=precision, **eval_kwargs)
    entry = SplitResult.build(dict(data.describe(), precision=precision.to_dict()), soup_result,
                              {i.reference: known[i.reference] for i in soup.ingredients}, soup.used_references)
    soup.results[key or data.split] = entry
    return entry


def soup_parents(ingredient, by_sha: Mapping[str, str]) -> list[str]:
    """If ``ingredient`` is a soup folder whose ingredients (those with a positive weight) are all among the
    models ``by_sha`` (``{sha256: reference}``), their references; else ``[]``. ``hfsoup eval`` reports the soup
    gain of such a soup against them."""
    import json

    manifest = ingredient.resolved.folder / "soup.json"
    if not manifest.is_file():
        return []
    try:
        entries = [e for e in json.loads(manifest.read_text()).get("ingredients", []) if e.get("weight", 1) > 0]
    except (ValueError, AttributeError):
        return []
    refs = [by_sha.get(e.get("sha256")) for e in entries]
    return refs if refs and all(refs) else []
