"""Config text: YAML read refusing a key written twice, and nested mappings addressed by dotted keys
("section.sub.leaf"), as `key.sub=value` overrides set them."""

from __future__ import annotations

from typing import Any

import yaml

from vae.config_base import ConfigError


def _parse_value(raw: str) -> Any:
    """A YAML scalar or list; text YAML cannot read (e.g. the date 2026-02-30) stays text for validation."""
    if not raw:
        return ""
    try:
        return yaml.safe_load(raw)
    except (yaml.YAMLError, ValueError):
        return raw


def get_dotted(data: dict[str, Any], key: str) -> Any:
    """The value at `key` ("section.sub.leaf") of the nested mapping `data`; KeyError when a part is missing."""
    for part in key.split("."):
        data = data[part]
    return data


def set_dotted(data: dict[str, Any], key: str, value: Any) -> dict[str, Any]:
    """A copy of the nested mapping `data` with `key` ("section.sub.leaf") set to `value`."""
    data = dict(data)
    *parents, leaf = key.split(".")
    node = data
    for part in parents:
        child = node.get(part)
        node[part] = dict(child) if isinstance(child, dict) else {}
        node = node[part]
    node[leaf] = value
    return data


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Set `key.sub=value` pairs (values parsed as YAML scalars or lists) into a nested mapping, in order: a later
    pair wins over an earlier one that sets the same key or one inside it."""
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r}: expected key.sub=value")
        data = set_dotted(data, key, _parse_value(raw))
    return dict(data)


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader refusing a key written twice in one mapping (PyYAML keeps the last one silently) and a
    key that is not text (YAML 1.1 reads yes, null and 2026-11-24 as a bool, None and a date; [a, b] as a list)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)  # a list key whole, to name it
            if not isinstance(key, str):
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} is not a name (quote it to keep it as written)", key_node.start_mark
                )
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"key {key!r} appears twice", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)


def read_yaml(text: str) -> Any:
    """The YAML document `text` as Python values (safe types only); yaml.YAMLError for a key written twice in one
    mapping, as for any other malformed document."""
    return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader
