"""Reading typed, frozen settings from YAML mappings, collecting every problem instead of stopping at the first."""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from collections.abc import Mapping
from typing import Any

import yaml

from analysis.study.errors import Problem


class UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that rejects a key repeated in one mapping (PyYAML would keep the last silently)."""

    def construct_mapping(self, node, deep=False):
        seen = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"key '{key}' appears twice in one mapping (first on line {seen[key] + 1})",
                    key_node.start_mark,
                )
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


def safe_load_unique(text: str):
    """Parse YAML like ``yaml.safe_load`` (no arbitrary objects), but reject repeated keys."""
    loader = UniqueKeyLoader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


class FieldReader:
    """Collects problems while walking the YAML mapping, so one run reports all of them."""

    def __init__(self, file: str):
        self.file = file
        self.problems: list[Problem] = []

    def problem(self, field_name: str, expected: str, found: str) -> None:
        # One block can be read twice (the manifest's demo: folder, by the study and by the demo's settings
        # reader); the same fault found by both is reported once.
        problem = Problem(self.file, field_name, expected, found)
        if problem not in self.problems:
            self.problems.append(problem)

    def check_keys(self, mapping: Mapping, allowed: Mapping[str, bool] | set[str], prefix: str) -> None:
        required = {k for k, req in allowed.items() if req} if isinstance(allowed, Mapping) else set()
        for key in mapping:
            if key not in allowed:
                close = difflib.get_close_matches(str(key), list(allowed), n=1)
                hint = f" (did you mean '{close[0]}'?)" if close else ""
                self.problem(
                    join(prefix, str(key)),
                    f"one of the known keys {sorted(allowed)}",
                    f"unknown key '{key}'{hint}",
                )
        for key in sorted(required - set(mapping)):
            self.problem(join(prefix, key), "a value (this key is required)", "nothing")

    def mapping(self, value: Any, field_name: str) -> Mapping | None:
        if value is None:
            return None
        if not isinstance(value, Mapping):
            self.problem(field_name, "a mapping of keys to values", describe(value))
            return None
        return value

    def string(self, value: Any, field_name: str) -> str | None:
        if isinstance(value, str) and value.strip():
            return value
        self.problem(field_name, "a non-empty string", describe(value))
        return None


def join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


def describe(value: Any) -> str:
    if value is None:
        return "nothing"
    text = repr(value)
    return f"{type(value).__name__} {text[:60]}"


def settings_from_mapping(cls: type, mapping: Mapping | None, reader: FieldReader, prefix: str):
    """Build a frozen settings dataclass from a mapping, rejecting unknown keys and wrong types.

    Nested dataclass fields are read recursively; ints are accepted where floats are expected.
    """
    if mapping is None:
        return cls()
    fields = {f.name: f for f in dataclasses.fields(cls)}
    reader.check_keys(mapping, set(fields), prefix)
    hints = typing.get_type_hints(cls)
    values = {}
    for name, value in mapping.items():
        if name not in fields:
            continue
        kind = hints[name]
        where = join(prefix, name)
        if dataclasses.is_dataclass(kind):
            sub = reader.mapping(value, where)
            values[name] = settings_from_mapping(kind, sub, reader, where)
        elif _type_ok(kind, value):
            values[name] = float(value) if kind is float else (tuple(value) if _is_tuple(kind) else value)
        else:
            reader.problem(where, f"a value of type {_type_name(kind)}", describe(value))
    return cls(**values)


def _is_tuple(kind) -> bool:
    return typing.get_origin(kind) is tuple


def _type_ok(kind, value) -> bool:
    if kind is bool:
        return isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if kind is str:
        return isinstance(value, str)
    if _is_tuple(kind):
        (inner, *_rest) = typing.get_args(kind)
        return isinstance(value, list) and all(_type_ok(inner, v) for v in value)
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        return any(_type_ok(k, value) for k in typing.get_args(kind) if k is not type(None)) or value is None
    return isinstance(value, kind)


def _type_name(kind) -> str:
    if _is_tuple(kind):
        return f"list of {_type_name(typing.get_args(kind)[0])}"
    return getattr(kind, "__name__", str(kind))
