"""A sweep's search space as plain data, parsed and checked before Ray starts.

In YAML the space mirrors the config it sweeps: `section: {field: {kind: values}}`, e.g.
`objective: {beta: {grid: [0.1, 1, 10]}}`. Kinds: `grid` (every value, crossed with the other grid axes),
`choice` (sampled from the values), `uniform` / `loguniform` ([low, high], loguniform needs low > 0) and
`randint` ([low, high), integers). `pipelines.commands.tune` turns the axes into Ray Tune objects.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from vae.config_base import ConfigError

SPACE_KINDS = ("grid", "choice", "uniform", "loguniform", "randint")
RANGE_KINDS = ("uniform", "loguniform", "randint")
TUNABLE_SECTIONS = ("model", "objective", "train", "score")
WHERE = "tune.space"

_VALUES = {"type": "array", "minItems": 1}
_RANGE = {"type": "array", "minItems": 2, "maxItems": 2, "items": {"type": "number"}}
_AXIS = {"type": "object", "minProperties": 1, "maxProperties": 1, "additionalProperties": False,
         "properties": {kind: _RANGE if kind in RANGE_KINDS else _VALUES for kind in SPACE_KINDS}}  # fmt: skip
SPACE_SCHEMA = {  # the JSON Schema of a space, for editors; `parse_space` is what checks one
    "type": "object",
    "minProperties": 1,
    "additionalProperties": False,
    "properties": {section: {"type": "object", "minProperties": 1, "additionalProperties": _AXIS}
                   for section in TUNABLE_SECTIONS},
}  # fmt: skip


@dataclass(frozen=True)
class Axis:
    """One swept config field: `name` is its dotted key ("objective.beta")."""

    name: str
    kind: str
    values: tuple[Any, ...]  # grid / choice: the values; ranges: (low, high)

    def candidates(self) -> tuple[Any, ...]:
        """Values that must each give a valid config: all listed values, or a range's two ends and, for a range of
        floats, a draw between them (a float: an integer field refuses it, as it would refuse the trials' draws)."""
        if self.kind == "randint":
            return (self.values[0], self.values[1] - 1)
        if self.kind == "uniform":
            return (*self.values, (self.values[0] + self.values[1]) / 2)
        if self.kind == "loguniform":
            return (*self.values, math.sqrt(self.values[0] * self.values[1]))
        return self.values


def _fail(path: str, why: str) -> None:
    raise ConfigError(f"{WHERE}.{path}: {why}")


def _is_number(value: Any, integer: bool = False) -> bool:
    kind = int if integer else (int, float)
    return isinstance(value, kind) and not isinstance(value, bool) and math.isfinite(value)


def _as_number(value: Any) -> Any:
    """Numeric text as its number ("1e-4", which YAML 1.1 reads as a string, as the config's number fields read
    it); anything else as it is."""
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            return float(value)
    return value


def _axis(path: str, spec: Any) -> Axis:
    if not isinstance(spec, Mapping) or len(spec) != 1 or next(iter(spec)) not in SPACE_KINDS:
        _fail(path, f"expected one of {list(SPACE_KINDS)} with its values, e.g. {{grid: [1, 2]}}; got {spec!r}")
    kind, values = next(iter(spec.items()))
    if not isinstance(values, (list, tuple)) or not values:
        _fail(path, f"{kind} needs a non-empty list of values, got {values!r}")
    values = tuple(tuple(v) if isinstance(v, list) else v for v in values)
    if kind in RANGE_KINDS:
        integer = kind == "randint"
        values = values if integer else tuple(map(_as_number, values))
        if len(values) != 2 or not all(_is_number(v, integer) for v in values):
            _fail(path, f"{kind} needs [low, high] as two {'integers' if integer else 'numbers'}, got {list(values)}")
        low, high = values
        if not low < high:
            _fail(path, f"{kind} needs low < high, got [{low}, {high}]")
        if kind == "loguniform" and low <= 0:
            _fail(path, f"loguniform needs low > 0, got {low}")
    return Axis(path, kind, values)


def parse_space(space: Any) -> tuple[Axis, ...]:
    """The axes of a nested space mapping; raises ConfigError naming `tune.space.<section>.<field>`."""
    if not isinstance(space, Mapping) or not space:
        raise ConfigError(f"{WHERE}: declare at least one axis, e.g. objective: {{beta: {{grid: [0.5, 1, 2]}}}}")
    axes = []
    for section, fields in space.items():
        if section not in TUNABLE_SECTIONS:
            _fail(str(section), f"only the sections {list(TUNABLE_SECTIONS)} can be swept")
        if not isinstance(fields, Mapping) or not fields:
            _fail(str(section), f"expected field: {{kind: values}} entries, got {fields!r}")
        axes += [_axis(f"{section}.{name}", spec) for name, spec in fields.items()]
    return tuple(axes)


def grid_size(axes: tuple[Axis, ...]) -> int:
    """How many points the grid axes span (1 without grid axes)."""
    return math.prod(len(a.values) for a in axes if a.kind == "grid")
