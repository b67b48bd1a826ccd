"""The machinery every config class is built on: `config_class` (a frozen pydantic dataclass that forbids unknown
keys), the field types that carry the constraints (`PositiveInt`, `Fraction`, `OneOf` a registry, ...), `from_dict` /
`to_dict`, and `ConfigError`, the one-line message naming the field and why.

An impossible value raises `ConfigError` (`ModelConfig.latent_dim: must be an integer >= 1 or 'auto', got 0`;
loaded from a mapping, a field of a section by its dotted path: `model.latent_dim: ...`), before any data is read
or any process is started. A field's constraints live in its type (`Field(gt=0)`, `Literal`, `OneOf`): the same
type gives the JSON Schema that editors read (`python -m pipelines config-schema`), and an error message says in
words what that schema accepts. A field that names a variant (a likelihood, network, activation, objective or
score kind) is checked against the registry beside its implementation (`OneOf`), so adding a variant means editing
that registry only; the registries are imported when first needed because their modules import the configs.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import math
import types
import typing
from collections.abc import Mapping
from typing import Annotated, Any, Literal, TypeVar

import pydantic
from pydantic import BeforeValidator, ConfigDict, Field, TypeAdapter, ValidationError
from pydantic_core import core_schema

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration value is impossible: one line, `<field>: <why>`. Loading a config from a mapping names a
    field inside a section by its dotted path (`model.latent_dim: must be an integer >= 1 or 'auto', got 0`); a field
    of the config itself, or of a config built directly in Python, is named with its class
    (`ModelConfig.latent_dim: ...`). An error about one field (`field_error`) also carries `owner` (the class),
    `field` and `why`, which place it when a rule of an enclosing config raises it."""

    owner: type | None = None
    field: str | None = None
    why: str | None = None


def field_error(owner: type, name: str, why: str) -> ConfigError:
    """ConfigError `"{Owner}.{name}: {why}"` about the field `name` of the config class `owner`."""
    err = ConfigError(f"{owner.__name__}.{name}: {why}")
    err.owner, err.field, err.why = owner, name, why
    return err


def require(ok: bool, owner: object, name: str, why: str) -> None:
    """Raise `field_error(type(owner), name, why)` unless `ok` (the cross-field rules of the model validators)."""
    if not ok:
        raise field_error(type(owner), name, why)


def choose(registry: Mapping[str, T], name: str, what: str) -> T:
    """The implementation registered under `name`; an unknown name raises ValueError naming `what` and the
    registered names (never a fallback)."""
    if not (isinstance(name, str) and name in registry):
        raise ValueError(f"{what} must be one of {list(registry)}, got {name!r}")
    return registry[name]


AUTO = "auto"  # a hyperparameter left to `vae.auto.resolve`, which chooses it from the training data's shape
Auto = Literal["auto"]


def _not_a_bool(value: Any) -> Any:
    if isinstance(value, bool):
        raise ValueError("true or false is not a number")
    return value


def number(**bounds: float) -> Any:
    """A finite float within `bounds` (Field's gt, ge, lt, le); it takes an int or numeric text ("1e-3", which
    YAML 1.1 reads as a string), never true or false."""
    return Annotated[float, Field(allow_inf_nan=False, **bounds), BeforeValidator(_not_a_bool)]


# The constrained types of the fields. Integers and booleans are strict: YAML writes them as such, and 2.5, "3"
# or true is not an integer.
PositiveInt = Annotated[int, Field(strict=True, ge=1)]
Count = Annotated[int, Field(strict=True, ge=0)]
Number = number()
NonNegative = number(ge=0)
Positive = number(gt=0)
Fraction = number(gt=0, lt=1)
Flag = Annotated[bool, Field(strict=True)]
Text = Annotated[str, Field(min_length=1)]
Width = Annotated[int, Field(strict=True, ge=1)]
Widths = Annotated[tuple[Width, ...], Field(description="a list of integer widths >= 1")]  # empty: no hidden layer
SomeWidths = Annotated[tuple[Width, ...], Field(min_length=1, description="a non-empty list of integer widths >= 1")]
Shape = Annotated[tuple[Width, Width, Width], Field(description="three integers [C, H, W] >= 1")]


@dataclasses.dataclass(frozen=True)
class OneOf:
    """`Annotated[str, OneOf("vae.networks.NETWORKS")]`: a name registered in that registry (a mapping name ->
    implementation, or a tuple of names), imported when first validated; the JSON Schema lists the names."""

    registry: str  # module.NAME

    def names(self) -> list[str]:
        module, _, name = self.registry.rpartition(".")
        return list(getattr(importlib.import_module(module), name))

    def check(self, value: str) -> str:
        if value not in self.names():
            raise ValueError(f"not one of {self.names()}")
        return value

    def __get_pydantic_core_schema__(self, source: Any, handler: pydantic.GetCoreSchemaHandler) -> Any:
        return core_schema.no_info_after_validator_function(self.check, handler(source))

    def __get_pydantic_json_schema__(self, schema: Any, handler: pydantic.GetJsonSchemaHandler) -> dict[str, Any]:
        return {**handler(schema), "enum": self.names()}


def config_class(cls: type[T]) -> type[T]:
    """`cls` as a frozen pydantic dataclass that forbids unknown keys and raises ConfigError (one line) instead
    of pydantic's ValidationError."""
    cls = pydantic.dataclasses.dataclass(frozen=True, config=ConfigDict(extra="forbid"))(cls)
    validate = cls.__init__

    @functools.wraps(validate)
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        try:
            validate(self, *args, **kwargs)
        except ValidationError as err:
            given = dict(zip((f.name for f in dataclasses.fields(cls)), args, strict=False)) | kwargs
            raise ConfigError(explain(cls, err, given)) from None

    cls.__init__ = __init__
    return cls


def from_dict(cls: type[T], data: dict[str, Any] | None) -> T:
    """Build the config class `cls` from a plain mapping (as read from YAML or JSON), sections included.

    Unknown keys and impossible values raise `ConfigError` naming the dotted field.
    """
    data = {} if data is None else data
    try:
        return cls.__pydantic_validator__.validate_python(data)
    except ValidationError as err:
        raise ConfigError(explain(cls, err, data)) from None


def to_dict(config: Any) -> dict[str, Any]:
    """The JSON-ready mapping of a config (tuples become lists)."""
    return type(config).__pydantic_serializer__.to_python(config, mode="json")


def explain(cls: type, err: ValidationError, given: Any) -> str:
    """One line for pydantic's errors in validating `cls` from `given`: the first problem, then the places of the
    others. A field's problem says what its JSON Schema accepts and what it got; a ConfigError raised by a validator
    (a cross-field rule) keeps its words, placed at the field it names."""
    problems: dict[str, tuple[str, str]] = {}  # dotted place -> (the field as the line names it, the line)
    unknown: dict[tuple[Any, ...], tuple[type, list[str]]] = {}  # section path -> (its class, unknown keys)
    for error in err.errors():
        owner, path, name = _locate(cls, error["loc"])
        if error["type"] == "unexpected_keyword_argument":
            unknown.setdefault(path, (owner, []))[1].append(name)
            continue
        reason = error.get("ctx", {}).get("error")
        if isinstance(reason, ConfigError):
            place, why = _rule_place(owner, path, name, reason)
        else:
            place, why = (*path, name) if name else path, _field_problem(owner, path, name, error, given)
        if place is None:  # a rule's own words that name their place (`tune.space.model.latent_dim: ...`)
            head = why.split(": ", 1)[0]
            problems.setdefault(head, (head, why))
        else:
            subject = _subject(cls, place)
            problems.setdefault(_dotted(*place), (subject, f"{subject}: {why}"))
    typos: dict[str, tuple[str, str]] = {}
    for path, (owner, names) in unknown.items():  # a section named by its dotted path, the config by its class
        where = _dotted(*path) or cls.__name__
        known = sorted(f.name for f in dataclasses.fields(owner))
        typos[_dotted(*path)] = (where, f"{where}: unknown key(s) {sorted(names)}; known: {known}")
    # a misspelt key first (it is why a known one is missing); a tuple's problem with its items left to the items'
    first, *others = [*typos, *(p for p in problems if not any(q.startswith(f"{p}.") for q in problems))]
    lines = typos | problems
    also = f" (also invalid: {', '.join(lines[o][0] for o in others)})" if others else ""
    return lines[first][1] + also


def _rule_place(owner: type, path: tuple[Any, ...], name: str | None, reason: ConfigError) -> tuple[Any, str]:
    """(the place, the words) of a ConfigError raised by a rule of the section at `path` (or of its field `name`
    when that field is a section); the place is None when the words name their own place or no field of the
    section holds the class the error is about."""
    if name and (section := _section(owner.__pydantic_fields__[name].annotation)):
        owner, path = section, (*path, name)  # the rule of a whole section
    if reason.owner is None:
        place = _dotted(*path)
        words = str(reason)
        return None, words if not place or words.startswith((f"{place}.", f"{place}:")) else f"{place}: {words}"
    if issubclass(owner, reason.owner):
        return (*path, reason.field), reason.why
    holders = [f for f, info in owner.__pydantic_fields__.items() if _holds(info.annotation, reason.owner)]
    if len(holders) == 1:  # a rule across sections about a field of one of them (`model.network`)
        return (*path, holders[0], reason.field), reason.why
    return None, f"{_dotted(*path)}: {reason}" if path else str(reason)


def _holds(hint: Any, cls: type) -> bool:
    """Whether a field of type `hint` holds one `cls` (itself or optional)."""
    return hint is cls or (typing.get_origin(hint) in (typing.Union, types.UnionType) and cls in typing.get_args(hint))


def _subject(cls: type, place: tuple[Any, ...]) -> str:
    """How a line names the field at `place` in a config of class `cls`: a field in a section by its dotted path
    (`model.latent_dim`, `data.image.shape`, `blocks.0.width`); a field of the config itself, a section included,
    with the class (`ScoreJobConfig.samples`, `TrainPipelineConfig.data`)."""
    fields = cls.__pydantic_fields__
    if len(place) > 1 and place[0] in fields and _section(fields[place[0]].annotation):
        return _dotted(*place)
    return _dotted(cls.__name__, *place)


def _field_problem(owner: type, path: tuple[Any, ...], name: str | None, error: dict[str, Any], given: Any) -> str:
    """What the field `name` of `owner` (at `path` in `given`) must be and what it got; `name` None: the section
    itself is not a mapping. A number of the right kind out of its bounds gets the bounds only (`must be >= 1`)."""
    if name is None:
        return f"expected a mapping of keys to values, got {_lookup(given, path)!r}"
    schema = _json_schema(owner)["properties"][name]
    if error["type"] == "missing" and error["loc"][-1] == name:
        return f"is required ({_expected(schema)})"
    value = _lookup(given, (*path, name))
    if _bounds(schema) and "description" not in schema and _is_a(schema.get("type"), value):
        return f"must be {_bounds(schema).strip()}, got {value!r}"
    return f"must be {_expected(schema)}, got {value!r}"


def _is_a(kind: Any, value: Any) -> bool:
    """Whether `value` is a JSON Schema `integer` / `number` (finite, never true or false)."""
    number = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    return number and (kind == "number" or (kind == "integer" and isinstance(value, int)))


def _dotted(*parts: Any) -> str:
    return ".".join(str(p) for p in parts if p is not None)


def _locate(cls: type, loc: tuple[Any, ...]) -> tuple[type, tuple[Any, ...], str | None]:
    """(the innermost config class on the way, the path of its section, the field of it) an error location points
    to; the field is None when the error is the section's own (not a mapping, a cross-field rule)."""
    owner, path = cls, ()
    for i, part in enumerate(loc):
        if isinstance(part, int) and i == 0:  # a positional argument
            part = list(cls.__pydantic_fields__)[part]
        elif isinstance(part, int):  # an item of a tuple of sections (DataLayout.blocks)
            path += (part,)
            continue
        fields = owner.__pydantic_fields__
        section = _section(fields[part].annotation) if part in fields else None
        if section is None or i == len(loc) - 1:
            return owner, path, part
        owner, path = section, (*path, part)
    return owner, path, None


def _section(hint: Any) -> type | None:
    """The config class a field holds (itself, optional, or a tuple of them), else None."""
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return hint
    return next(filter(None, map(_section, typing.get_args(hint))), None)


def _lookup(given: Any, path: tuple[Any, ...]) -> Any:
    for part in path:
        if isinstance(given, Mapping):
            given = given.get(part)
        elif isinstance(part, int) and isinstance(given, (list, tuple)) and part < len(given):
            given = given[part]
        else:
            given = getattr(given, str(part), None)
    return given


@functools.cache
def _json_schema(cls: type) -> dict[str, Any]:
    return TypeAdapter(cls).json_schema()


def _expected(schema: dict[str, Any], plural: bool = False) -> str:
    """What a JSON Schema accepts, in words: "an integer >= 1 or 'auto'"; a type's `description` says it in its own
    words ("a list of integer widths >= 1")."""
    if "description" in schema:
        return schema["description"]
    if "anyOf" in schema:
        return " or ".join(_expected(s, plural) for s in schema["anyOf"])
    if "const" in schema:
        return repr(schema["const"])
    if "enum" in schema:
        return f"one of {schema['enum']}"
    kind = schema.get("type")
    if kind == "array":
        items = schema.get("items") or schema.get("prefixItems", [{}])[0]
        size = schema.get("minItems", 0)
        count = f"{size} " if size == schema.get("maxItems") else ""
        return f"a {'non-empty ' if size and not count else ''}list of {count}{_expected(items, plural=True)}"
    if kind in ("boolean", "null"):
        return {"boolean": "true or false", "null": "null"}[kind]
    noun = kind if kind in ("integer", "number", "string") else "mapping"
    if schema.get("minLength"):
        noun = f"non-empty {noun}"
    words = f"{noun}s" if plural else f"{'an' if noun[0] in 'aeiou' else 'a'} {noun}"
    return words + _bounds(schema)


def _bounds(schema: dict[str, Any]) -> str:
    """A number's bounds: " > 0", " >= 1", or an interval " in (0, 1)" when it has both."""
    low = next(((b, schema[k]) for k, b in (("exclusiveMinimum", "("), ("minimum", "[")) if k in schema), None)
    high = next(((b, schema[k]) for k, b in (("exclusiveMaximum", ")"), ("maximum", "]")) if k in schema), None)
    if low and high:
        return f" in {low[0]}{low[1]}, {high[1]}{high[0]}"
    ops = {"(": ">", "[": ">=", ")": "<", "]": "<="}
    return "".join(f" {ops[b]} {v}" for b, v in filter(None, (low, high)))
