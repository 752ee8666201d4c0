"""The recipe registry: one declaration per recipe, from which everything else is derived.

A :class:`Recipe` declares its name, its parameters (:class:`Param`: name, type, default, help, choices, a check),
whether it needs a held-out split, whether it writes a model, and its reference (paper, section). The CLI options of
``hfsoup soup``, their validation (:meth:`Recipe.validate`, once), the ``--help`` text, the docs table
(:func:`recipes_markdown_table`) and the ``parameters`` recorded in ``soup.json`` all come from that declaration.

Declarations are plain data and import no torch (``hfsoup soup --help`` stays instant); a recipe's function is
imported from its ``entry`` (``"module:function"``) when it runs. A new recipe is one file plus one
:func:`register_recipe` call.
"""

from __future__ import annotations

import importlib
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

from hfsoup.errors import InvalidParameterError

_MISSING = object()
#: How a value of each parameter type is described in error messages.
_KINDS = {int: "an integer", float: "a finite number", bool: "true or false", str: "a string"}


@dataclass(frozen=True)
class Param:
    """One parameter of a recipe.

    ``name`` is the keyword of the recipe's function; the CLI flag is ``--name-with-dashes`` unless ``flag`` says
    otherwise. ``type`` is ``int``, ``float``, ``bool`` (a switch) or ``str``. ``minimum`` and ``maximum``
    (inclusive) and ``choices`` are checked by :meth:`Recipe.validate`, as is ``check`` (returns an error message
    or ``None``). Recipes that share a flag (``--seed``) share the same :class:`Param`.
    """

    name: str
    type: type
    default: Any
    help: str
    choices: tuple | None = None
    minimum: float | None = None
    flag: str | None = None
    check: Callable[[Any], str | None] | None = None
    maximum: float | None = None

    @property
    def cli_flag(self) -> str:
        return self.flag or "--" + self.name.replace("_", "-")

    def coerce(self, value: Any) -> Any:
        """``value`` as this parameter's type, or :class:`InvalidParameterError` naming the flag."""
        try:
            if self.type is bool:
                if isinstance(value, str):
                    if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                        raise ValueError(value)
                    return value.lower() in ("true", "1", "yes")
                return bool(value)
            if self.type is int:
                if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                    raise ValueError(value)
                return int(value)
            if self.type is float:
                out = float(value)
                if not math.isfinite(out):
                    raise ValueError(value)
                return out
            return self.type(value)
        except (TypeError, ValueError):
            raise InvalidParameterError(f"{self.cli_flag} takes {_KINDS.get(self.type, 'a ' + self.type.__name__)}, "
                                        f"got {value!r}", parameter=self.name) from None


@dataclass(frozen=True)
class Recipe:
    """A soup recipe: what it is, what it takes, and where its function lives.

    ``entry`` is ``"module:function"``. The function is called as ``fn(models, heldout, **params, **common)`` when
    ``needs_heldout`` is set, else ``fn(models, **params, **common)``, where ``models`` is a list of ingredients
    (or references), ``params`` is :meth:`validate`'s output and ``common`` holds :data:`COMMON_KEYWORDS`
    (``integer_policy`` and ``progress``; for held-out recipes also ``cache``, ``batch_size`` (evaluation) and
    ``device``). It returns a :class:`~hfsoup.core.soup.Soup` when ``writes_model`` is set, a report object
    otherwise. ``min_models``/``max_models`` bound the number of models (:meth:`check_models`).
    """

    name: str
    summary: str
    reference: str
    entry: str
    params: tuple[Param, ...] = ()
    needs_heldout: bool = False
    writes_model: bool = True
    min_models: int = 2
    examples: tuple[str, ...] = field(default=())
    max_models: int | None = None

    def check_models(self, count: int) -> None:
        """:class:`InvalidParameterError` unless ``count`` models fit this recipe."""
        if self.max_models is not None and self.max_models == self.min_models and count != self.min_models:
            raise InvalidParameterError(f"recipe '{self.name}' takes exactly {self.min_models} models, got {count}",
                                        parameter="models")
        if count < self.min_models:
            raise InvalidParameterError(f"recipe '{self.name}' needs at least {self.min_models} models, got {count}: "
                                        f"pass more model references", parameter="models")
        if self.max_models is not None and count > self.max_models:
            raise InvalidParameterError(f"recipe '{self.name}' takes at most {self.max_models} models, got {count}",
                                        parameter="models")

    def param(self, name: str) -> Param:
        for p in self.params:
            if p.name == name:
                return p
        raise KeyError(name)

    def defaults(self) -> dict[str, Any]:
        return {p.name: p.default for p in self.params}

    def validate(self, values: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Complete ``values`` with defaults, coerce and check them; unknown names are an error.

        Returns the parameters exactly as they are passed to the recipe and recorded in ``soup.json``.
        """
        values = dict(values or {})
        unknown = sorted(set(values) - {p.name for p in self.params})
        if unknown:
            known = ", ".join(p.name for p in self.params) or "none"
            raise InvalidParameterError(f"recipe '{self.name}' has no parameter {', '.join(unknown)} "
                                        f"(its parameters: {known})", parameter=unknown[0])
        out = {}
        for p in self.params:
            value = values.get(p.name, _MISSING)
            if value is _MISSING or value is None:
                out[p.name] = p.default
                if p.default is None:
                    continue
                value = p.default
            value = p.coerce(value)
            if p.choices is not None and value not in p.choices:
                raise InvalidParameterError(f"{p.cli_flag} must be one of {', '.join(map(str, p.choices))}, "
                                            f"got {value!r}", parameter=p.name)
            if p.minimum is not None and value < p.minimum:
                raise InvalidParameterError(f"{p.cli_flag} must be >= {p.minimum:g}, got {value!r}",
                                            parameter=p.name)
            if p.maximum is not None and value > p.maximum:
                raise InvalidParameterError(f"{p.cli_flag} must be <= {p.maximum:g}, got {value!r}",
                                            parameter=p.name)
            if p.check is not None:
                problem = p.check(value)
                if problem:
                    raise InvalidParameterError(f"{p.cli_flag} {problem}", parameter=p.name)
            out[p.name] = value
        return out

    def load(self) -> Callable:
        """The recipe's function (imports its module: torch and friends)."""
        module, _, fn = self.entry.partition(":")
        return getattr(importlib.import_module(module), fn)


#: Keywords every recipe function receives from its caller (see :class:`Recipe`): no parameter may take them.
COMMON_KEYWORDS = ("integer_policy", "progress", "cache", "batch_size", "device")

_REGISTRY: dict[str, Recipe] = {}


def register_recipe(recipe: Recipe) -> Recipe:
    """Add a recipe; a second recipe of the same name is an error (no silent replacement).

    A parameter may not be named like one of :data:`COMMON_KEYWORDS`, and a name or CLI flag already used by
    another recipe must be declared by the very same :class:`Param` (one ``--seed``, one meaning).
    """
    if recipe.name in _REGISTRY:
        raise ValueError(f"a recipe named '{recipe.name}' is already registered")
    names = [p.name for p in recipe.params]
    if len(set(names)) != len(names):
        raise ValueError(f"recipe '{recipe.name}' declares a parameter twice")
    reserved = sorted(set(names) & set(COMMON_KEYWORDS))
    if reserved:
        raise ValueError(f"recipe '{recipe.name}': parameter name {reserved[0]} is a common keyword of every recipe "
                         f"function; choose another name")
    for p in recipe.params:
        for other in _REGISTRY.values():
            for q in other.params:
                if (q.name == p.name or q.cli_flag == p.cli_flag) and q != p:
                    raise ValueError(f"recipe '{recipe.name}': parameter {p.name} ({p.cli_flag}) differs from "
                                     f"recipe '{other.name}'s {q.name} ({q.cli_flag}); share one Param")
    _REGISTRY[recipe.name] = recipe
    return recipe


def get_recipe(name: str) -> Recipe:
    """The recipe called ``name``, or :class:`InvalidParameterError` listing the known ones."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise InvalidParameterError(f"unknown recipe '{name}': choose one of {', '.join(_REGISTRY)}",
                                    parameter="recipe") from None


def list_recipes() -> list[str]:
    """Names of the registered recipes, in registration order."""
    return list(_REGISTRY)


def recipe_params() -> dict[str, tuple[Param, tuple[str, ...]]]:
    """Every distinct parameter of the registered recipes, by CLI flag: ``{flag: (param, recipe names)}``, in
    registration order. A shared parameter (``--seed``) appears once, with all the recipes that take it."""
    out: dict[str, tuple[Param, tuple[str, ...]]] = {}
    for r in _REGISTRY.values():
        for p in r.params:
            param, users = out.get(p.cli_flag, (p, ()))
            out[p.cli_flag] = (param, users + (r.name,))
    return out


def recipes_markdown_table(recipes: Sequence[Recipe] | None = None) -> str:
    """The docs table of recipes, generated from their declarations (docs/recipes.md embeds it)."""
    rows = ["| recipe | what it does | held-out split | writes a model | parameters (CLI flag = default) | reference |",
            "|---|---|---|---|---|---|"]
    for r in recipes or _REGISTRY.values():
        params = ", ".join(f"`{p.cli_flag}`" + ("" if p.type is bool else f" = {p.default}") for p in r.params)
        rows.append(f"| `{r.name}` | {r.summary} | {'yes' if r.needs_heldout else 'no'} | "
                    f"{'yes' if r.writes_model else 'no (report)'} | {params or '—'} | {r.reference} |")
    return "\n".join(rows) + "\n"
