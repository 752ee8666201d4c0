"""The recipe registry: the built-in declarations, validation (defaults, coercion, exact error messages), defaults
equal to the functions' signatures, registering a new recipe, the parameters recorded in soup.json, the docs table."""

from __future__ import annotations

import inspect
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import hfsoup
from hfsoup.errors import InvalidParameterError
from hfsoup.recipes import registry
from hfsoup.recipes.registry import Param, Recipe, get_recipe, list_recipes, recipe_params, register_recipe

BUILT_IN = ("mix", "uniform", "greedy", "radin", "learned", "ensemble")
DOCS = Path(__file__).resolve().parents[1] / "docs" / "recipes.md"


@pytest.fixture
def scratch_registry(monkeypatch):
    """A copy of the registry for tests that register recipes (restored afterwards)."""
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))


def test_built_in_recipes_are_listed():
    assert set(BUILT_IN) <= set(list_recipes())
    assert list_recipes() == hfsoup.list_recipes()
    assert [get_recipe(n).name for n in BUILT_IN] == list(BUILT_IN)


def test_declarations():
    heldout = {n: get_recipe(n).needs_heldout for n in BUILT_IN}
    assert heldout == {"mix": False, "uniform": False, "greedy": True, "radin": True, "learned": True,
                       "ensemble": True}
    assert [n for n in BUILT_IN if not get_recipe(n).writes_model] == ["ensemble"]
    assert get_recipe("greedy").reference == "Wortsman et al. 2022, Recipe 1 (§2)"
    assert get_recipe("learned").reference == "Wortsman et al. 2022, Appendix I"
    assert get_recipe("radin").reference == "Ménès & Risser-Maroux, RADIN, Recipe 2"
    flags = [p.cli_flag for p in get_recipe("learned").params]
    assert flags == ["--learned-epochs", "--learned-lr", "--learned-batch-size", "--learned-weight-decay",
                     "--learned-init", "--per-layer", "--seed"]
    assert get_recipe("learned").param("seed") is get_recipe("radin").param("seed")
    assert recipe_params()["--seed"] == (get_recipe("radin").param("seed"), ("radin", "learned"))


def test_unknown_recipe_lists_the_known_ones():
    with pytest.raises(InvalidParameterError) as e:
        get_recipe("soupy")
    assert str(e.value) == f"unknown recipe 'soupy': choose one of {', '.join(list_recipes())}"
    assert e.value.parameter == "recipe"


def test_validate_defaults():
    assert get_recipe("mix").validate() == {"alpha": 0.5}
    assert get_recipe("uniform").validate() == {}
    assert get_recipe("greedy").validate() == {"accept_ties": False}
    assert get_recipe("radin").validate() == {"budget": 25, "candidates": 200, "prior_lambda": 0.0, "proxy": "loss",
                                              "seed": 0}
    assert get_recipe("learned").validate() == {"epochs": 3, "lr": 0.1, "train_batch_size": 64,
                                                "weight_decay": 0.0, "init": "uniform", "per_layer": False,
                                                "seed": 0}
    assert get_recipe("ensemble").validate() == {}
    # None means "not given": the default
    assert get_recipe("radin").validate({"budget": None})["budget"] == 25


def test_validate_coerces():
    out = get_recipe("radin").validate({"budget": "3", "candidates": 10.0, "prior_lambda": "1", "seed": 7})
    assert out == {"budget": 3, "candidates": 10, "prior_lambda": 1.0, "proxy": "loss", "seed": 7}
    assert type(out["budget"]) is int and type(out["prior_lambda"]) is float
    assert get_recipe("greedy").validate({"accept_ties": "yes"}) == {"accept_ties": True}
    assert get_recipe("greedy").validate({"accept_ties": "false"}) == {"accept_ties": False}
    assert get_recipe("learned").validate({"per_layer": 1})["per_layer"] is True


@pytest.mark.parametrize("recipe, values, message", [
    ("radin", {"budget": 0}, "--budget must be >= 1, got 0"),
    ("radin", {"candidates": -3}, "--candidates must be >= 0, got -3"),
    ("radin", {"seed": -1}, "--seed must be >= 0, got -1"),
    ("radin", {"budget": 2.5}, "--budget takes an integer, got 2.5"),
    ("radin", {"budget": True}, "--budget takes an integer, got True"),
    ("radin", {"budget": "many"}, "--budget takes an integer, got 'many'"),
    ("radin", {"prior_lambda": "nan"}, "--prior-lambda takes a finite number, got 'nan'"),
    ("radin", {"proxy": "mse"}, "--proxy must be one of loss, accuracy, got 'mse'"),
    ("greedy", {"accept_ties": "maybe"}, "--accept-ties takes true or false, got 'maybe'"),
    ("greedy", {"budget": 3}, "recipe 'greedy' has no parameter budget (its parameters: accept_ties)"),
    ("uniform", {"alpha": 0.5}, "recipe 'uniform' has no parameter alpha (its parameters: none)"),
    ("mix", {"alpha": 1.5}, "--alpha must be <= 1, got 1.5"),
    ("mix", {"alpha": -0.1}, "--alpha must be >= 0, got -0.1"),
    ("learned", {"lr": 0}, "--learned-lr must be > 0, got 0.0"),
    ("learned", {"train_batch_size": 0}, "--learned-batch-size must be >= 1, got 0"),
    ("learned", {"weight_decay": -0.5}, "--learned-weight-decay must be >= 0, got -0.5"),
    ("learned", {"init": "best-ever"}, "--learned-init must be one of uniform, best, got 'best-ever'"),
])
def test_validate_errors(recipe, values, message):
    with pytest.raises(InvalidParameterError) as e:
        get_recipe(recipe).validate(values)
    assert str(e.value) == message
    assert e.value.parameter == next(iter(values))


def test_defaults_equal_the_function_signatures():
    """The declaration is the one source of defaults: every recipe function's keyword defaults equal it, and every
    function takes the common keywords of the calling convention."""
    for name in BUILT_IN:
        recipe = get_recipe(name)
        sig = inspect.signature(recipe.load())
        for p in recipe.params:
            assert p.name in sig.parameters, (name, p.name)
            assert sig.parameters[p.name].default == p.default, (name, p.name)
            assert type(sig.parameters[p.name].default) is type(p.default), (name, p.name)
        common = ("integer_policy", "progress") + (("cache", "batch_size", "device") if recipe.needs_heldout else ())
        assert all(k in sig.parameters for k in common), name


def test_declarations_import_no_torch():
    code = ("import sys; from hfsoup.recipes.registry import list_recipes, recipes_markdown_table;"
            "recipes_markdown_table(); print(list_recipes(), 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip().endswith("] False")


def first_model_soup(models, *, weight: float = 1.0, integer_policy: str = "mean", progress: bool = False):
    """A recipe for the registry test: all the weight on the first model."""
    n = len(models)
    return hfsoup.weighted_soup(models, [weight] + [0.0] * (n - 1), recipe="first", integer_policy=integer_policy,
                                progress=progress)


def test_a_new_recipe_is_one_function_and_one_registration(scratch_registry, model_dirs):
    recipe = register_recipe(Recipe(name="first", summary="the first model, as a soup", reference="none",
                                    entry=f"{__name__}:first_model_soup",
                                    params=(Param("weight", float, 1.0, "the first model's weight", minimum=1.0,
                                                  maximum=1.0),)))
    assert "first" in list_recipes() and get_recipe("first") is recipe
    assert "| `first` | the first model, as a soup | no | yes | `--weight` = 1.0 | none |" in \
        registry.recipes_markdown_table()
    soup = recipe.load()(model_dirs, **recipe.validate({}), integer_policy="mean", progress=False)
    assert soup.recipe == "first" and soup.weights == [1.0, 0.0, 0.0]
    first = hfsoup.load_ingredient(model_dirs[0]).state_dict()
    assert all(torch.equal(soup.state_dict[k], first[k]) for k in first)


def test_registration_errors(scratch_registry):
    with pytest.raises(ValueError, match="a recipe named 'greedy' is already registered"):
        register_recipe(Recipe(name="greedy", summary="", reference="", entry="x:y"))
    with pytest.raises(ValueError, match="declares a parameter twice"):
        register_recipe(Recipe(name="a", summary="", reference="", entry="x:y",
                               params=(Param("k", int, 1, ""), Param("k", int, 2, ""))))
    with pytest.raises(ValueError, match="parameter name batch_size is a common keyword"):
        register_recipe(Recipe(name="b", summary="", reference="", entry="x:y",
                               params=(Param("batch_size", int, 1, ""),)))
    # a second --seed must be the shared one, not a look-alike with another default
    with pytest.raises(ValueError, match=r"parameter seed \(--seed\) differs from recipe 'radin'"):
        register_recipe(Recipe(name="c", summary="", reference="", entry="x:y", params=(Param("seed", int, 1, ""),)))
    register_recipe(Recipe(name="d", summary="", reference="", entry="x:y",
                           params=(get_recipe("radin").param("seed"),)))
    assert recipe_params()["--seed"][1] == ("radin", "learned", "d")


def test_check_models():
    get_recipe("mix").check_models(2)
    with pytest.raises(InvalidParameterError, match="recipe 'mix' takes exactly 2 models, got 3"):
        get_recipe("mix").check_models(3)
    with pytest.raises(InvalidParameterError, match="recipe 'greedy' needs at least 2 models, got 1"):
        get_recipe("greedy").check_models(1)


def test_recorded_parameters_are_the_validated_ones(model_dirs, monkeypatch, tmp_path):
    """What soup.json records under "parameters" is validate()'s output, plus the integer policy and the held-out
    data's description."""
    from hfsoup.hub.format import save_soup
    from test_greedy import tiny_data

    monkeypatch.setenv("HFSOUP_CACHE", str(tmp_path / "cache"))
    data = tiny_data(n=8, num_classes=100)
    common = {"integer_policy": "mean", "progress": False, "cache": True, "batch_size": 500, "device": "cpu"}
    for name, given in [("greedy", {"accept_ties": "true"}), ("radin", {"budget": "1", "candidates": 3, "seed": 2})]:
        recipe = get_recipe(name)
        params = recipe.validate(given)
        soup = recipe.load()(model_dirs, data, **params, **common)
        assert soup.parameters == {**params, "integer_policy": "mean", "heldout": data.describe()}, name
        save_soup(soup, tmp_path / name)
        manifest = json.loads((tmp_path / name / "soup.json").read_text())
        assert manifest["parameters"] == json.loads(json.dumps(soup.parameters)), name


def test_docs_embed_the_generated_table():
    text = DOCS.read_text()
    m = re.search(r"<!-- recipes-table -->\n(.*?)<!-- /recipes-table -->", text, re.S)
    assert m, "docs/recipes.md lacks the <!-- recipes-table --> block"
    assert m.group(1) == registry.recipes_markdown_table(), \
        "docs/recipes.md is stale: paste recipes_markdown_table() between the markers"
