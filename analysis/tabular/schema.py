"""The schema of a GNSM table: a small YAML that declares each column categorical (with its levels) or continuous,
says what a missing cell means, names the id column and says which rows are the inliers the model is fitted on.

::

    id_column: subject_id                 # optional: without it rows are named by their 0-based row number
    columns:
      sex:   {type: categorical, levels: [F, M]}
      site:  {type: categorical}          # levels taken (sorted) from the inlier rows at fit time
      age:   {type: continuous}
      item3: {type: categorical, levels: [1, 2, 3], missing: level}   # a missing cell is the level 'missing'
      bmi:   {type: continuous, missing: mean}                        # a missing cell is the inlier mean
    inliers: {column: diagnosis, values: [control]}                   # or {all: true}; absent: every row
    ignore: [notes]                       # table columns that are neither declared nor used
    missing_values: [-999]                # besides empty cells and NA, NaN, nan, n/a, N/A

Levels are text: a YAML ``1``, a CSV ``1`` and a Parquet float ``1.0`` are the same level ``'1'``
(:func:`level_text`). Every fault raises :class:`TabularError` naming the file, the field, what was expected and
what was found; unknown keys fail loudly.
"""

from __future__ import annotations

import difflib
import math
import numbers
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from analysis.study.errors import Problem
from analysis.study.settings import describe, safe_load_unique
from analysis.study.tables import MissingValues

CATEGORICAL = "categorical"
CONTINUOUS = "continuous"
MISSING_LEVEL = "missing"
"""The level a missing cell becomes in a categorical column declared with ``missing: level``."""
MISSING_RULES = {CATEGORICAL: ("error", "level"), CONTINUOUS: ("error", "mean")}
"""What ``missing`` may say for each column type; the first is the default."""

_SCHEMA_KEYS = ("id_column", "columns", "inliers", "ignore", "missing_values")
_COLUMN_KEYS = ("type", "levels", "missing")
_INLIER_KEYS = ("all", "column", "values")
_WHOLE_DECIMAL = re.compile(r"^([+-]?\d+)\.0*$")


class TabularError(ValueError):
    """A schema, or a table read against it, cannot be used: ``file``, ``field`` (key path or column), what was
    ``expected`` and what was ``found``."""

    def __init__(self, file: str | os.PathLike, field: str, expected: str, found: str):
        self.file = str(file)
        self.field = field
        self.expected = expected
        self.found = found
        super().__init__(str(Problem(self.file, field, expected, found)))


def level_text(value: Any) -> str:
    """The text a level or cell is compared by: numbers that are whole become their integer text (``1``, ``1.0``
    and ``'1.0'`` are all ``'1'``); other text is stripped of surrounding spaces and kept as written (``'01'``
    stays ``'01'``)."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return str(int(value))
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        number = float(value)
        return str(int(number)) if math.isfinite(number) and number.is_integer() else str(number)
    text = str(value).strip()
    whole = _WHOLE_DECIMAL.match(text)
    return str(int(whole.group(1))) if whole else text


@dataclass(frozen=True)
class Column:
    """One declared column.

    ``levels`` are the declared levels as text (None: taken from the inlier rows at fit time), without the level
    :data:`MISSING_LEVEL` that ``missing: level`` adds. ``missing`` is ``error`` (a missing cell is refused),
    ``level`` (categorical only) or ``mean`` (continuous only: the inlier training mean).
    """

    name: str
    kind: str
    levels: tuple[str, ...] | None = None
    missing: str = "error"

    def as_dict(self) -> dict:
        spec: dict = {"type": self.kind}
        if self.levels is not None:
            spec["levels"] = list(self.levels)
        if self.missing != "error":
            spec["missing"] = self.missing
        return spec


@dataclass(frozen=True)
class Inliers:
    """Which rows are inliers: every row (``column`` None), or those whose ``column`` holds one of ``values``."""

    column: str | None = None
    values: tuple[str, ...] = ()

    @property
    def all(self) -> bool:
        return self.column is None

    def as_dict(self) -> dict:
        return {"all": True} if self.all else {"column": self.column, "values": list(self.values)}


@dataclass(frozen=True)
class TabularSchema:
    """A table's declared columns (in schema order), id column, inlier rule, ignored columns and the study's own
    missing-value markers. Build it with :func:`load_schema`, :meth:`from_dict` or :meth:`from_columns`."""

    columns: tuple[Column, ...]
    id_column: str | None = None
    inliers: Inliers = Inliers()
    ignore: tuple[str, ...] = ()
    missing_values: tuple[str | int | float, ...] = ()

    @property
    def categorical(self) -> tuple[Column, ...]:
        return tuple(c for c in self.columns if c.kind == CATEGORICAL)

    @property
    def continuous(self) -> tuple[Column, ...]:
        return tuple(c for c in self.columns if c.kind == CONTINUOUS)

    @property
    def markers(self) -> MissingValues:
        """Empty cells, the usual markers and this schema's ``missing_values``."""
        return MissingValues.of(self.missing_values)

    @classmethod
    def from_dict(cls, data: Any, source: str = "<schema>") -> TabularSchema:
        """The schema a parsed YAML mapping describes; ``source`` names it in errors.

        Raises
        ------
        TabularError
            At the first problem: unknown keys, an unknown type, fewer than two or repeated levels, a ``missing``
            rule the type does not allow, no columns, a column both declared and ignored, a malformed ``inliers``.
        """
        return _read_schema(data, source)

    @classmethod
    def from_columns(
        cls,
        columns: Mapping[str, list | tuple | None],
        inliers_all: bool = True,
        *,
        id_column: str | None = None,
        inlier_column: str | None = None,
        inlier_values: list | tuple = (),
    ) -> TabularSchema:
        """A schema for programmatic use: each name maps to its categorical levels (a list) or None (continuous).

        Every row is an inlier when ``inliers_all``; otherwise the rows whose ``inlier_column`` holds one of
        ``inlier_values``. Checked as :meth:`from_dict` checks a mapping (errors name the file ``<columns>``).
        """
        if inliers_all and inlier_column is not None:
            raise TabularError(
                "<columns>",
                "inliers",
                "inliers_all=False with an inlier_column",
                f"inliers_all=True and inlier_column '{inlier_column}'",
            )
        specs = {
            name: {"type": CONTINUOUS} if levels is None else {"type": CATEGORICAL, "levels": list(levels)}
            for name, levels in columns.items()
        }
        inliers = {"all": True} if inliers_all else {"column": inlier_column, "values": list(inlier_values)}
        data = {"columns": specs, "inliers": inliers}
        if id_column is not None:
            data["id_column"] = id_column
        return _read_schema(data, "<columns>")

    def as_dict(self) -> dict:
        """Plain YAML/JSON types that :meth:`from_dict` reads back to an equal schema."""
        data: dict = {}
        if self.id_column is not None:
            data["id_column"] = self.id_column
        data["columns"] = {c.name: c.as_dict() for c in self.columns}
        data["inliers"] = self.inliers.as_dict()
        if self.ignore:
            data["ignore"] = list(self.ignore)
        if self.missing_values:
            data["missing_values"] = list(self.missing_values)
        return data


def load_schema(path: str | os.PathLike) -> TabularSchema:
    """Read a schema YAML (safe loading; a key repeated in one mapping is refused).

    Raises
    ------
    TabularError
        When the file is missing or not YAML, or at the first problem :meth:`TabularSchema.from_dict` finds.
    """
    path = Path(path)
    if not path.is_file():
        raise TabularError(path, "", "an existing schema file", "no such file")
    try:
        data = safe_load_unique(path.read_text())
    except yaml.YAMLError as exc:
        raise TabularError(path, "", "valid YAML", " ".join(str(exc).split())) from None
    return _read_schema(data, str(path))


def _read_schema(data: Any, file: str) -> TabularSchema:
    if not isinstance(data, Mapping):
        raise TabularError(file, "", "a mapping with at least the key 'columns'", describe(data))
    _check_keys(data, _SCHEMA_KEYS, "", file)
    id_column = data.get("id_column")
    if id_column is not None and not _is_name(id_column):
        raise TabularError(file, "id_column", "the name of the id column", describe(id_column))
    schema = TabularSchema(
        columns=_read_columns(data.get("columns"), file),
        id_column=id_column,
        inliers=_read_inliers(data.get("inliers"), file),
        ignore=_read_ignore(data.get("ignore"), file),
        missing_values=_read_missing_values(data.get("missing_values"), file),
    )
    _check_roles(schema, file)
    return schema


def _read_columns(value: Any, file: str) -> tuple[Column, ...]:
    if not isinstance(value, Mapping) or not value:
        raise TabularError(file, "columns", "a mapping of column names to {type: ...}, at least one", describe(value))
    columns = []
    for name, spec in value.items():
        if not _is_name(name):
            raise TabularError(file, "columns", "column names as text", describe(name))
        columns.append(_read_column(name, spec, file))
    return tuple(columns)


def _read_column(name: str, spec: Any, file: str) -> Column:
    where = f"columns.{name}"
    if not isinstance(spec, Mapping):
        raise TabularError(file, where, "a mapping such as {type: categorical} or {type: continuous}", describe(spec))
    _check_keys(spec, _COLUMN_KEYS, where, file)
    kind = spec.get("type")
    if kind not in MISSING_RULES:
        raise TabularError(file, f"{where}.type", f"one of {sorted(MISSING_RULES)}", describe(kind))
    missing = spec.get("missing", MISSING_RULES[kind][0])
    if missing not in MISSING_RULES[kind]:
        raise TabularError(
            file, f"{where}.missing", f"one of {list(MISSING_RULES[kind])} for a {kind} column", describe(missing)
        )
    if "levels" in spec and kind == CONTINUOUS:
        raise TabularError(file, f"{where}.levels", "levels only on a categorical column", "levels on a continuous one")
    levels = _read_levels(spec["levels"], f"{where}.levels", file) if "levels" in spec else None
    if levels is not None and missing == "level" and MISSING_LEVEL in levels:
        raise TabularError(
            file,
            f"{where}.levels",
            f"no declared level '{MISSING_LEVEL}' (missing: level adds it)",
            f"'{MISSING_LEVEL}' among the levels",
        )
    return Column(name, kind, levels, missing)


def _read_levels(value: Any, where: str, file: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(_is_value(v) for v in value):
        raise TabularError(file, where, "a list of levels, text or numbers (quote yes/no/true/false)", describe(value))
    levels = tuple(level_text(v) for v in value)
    if len(levels) < 2:
        raise TabularError(
            file,
            where,
            "at least 2 levels (a column of one level carries nothing)",
            f"{len(levels)} level{'s' if len(levels) != 1 else ''}",
        )
    repeated = sorted({v for v in levels if levels.count(v) > 1})
    if repeated:
        raise TabularError(
            file,
            where,
            "each level once (levels compare as text: 1 and 1.0 are the same)",
            f"repeated level{'s' if len(repeated) > 1 else ''} {repeated}",
        )
    return levels


def _read_inliers(value: Any, file: str) -> Inliers:
    expected = "{all: true}, or {column: NAME, values: [...]} naming the inlier rows"
    if value is None:
        return Inliers()
    if not isinstance(value, Mapping):
        raise TabularError(file, "inliers", expected, describe(value))
    _check_keys(value, _INLIER_KEYS, "inliers", file)
    if "all" in value:
        if value["all"] is not True or set(value) != {"all"}:
            raise TabularError(file, "inliers", expected, f"keys {sorted(value)} with all: {value['all']!r}")
        return Inliers()
    if set(value) != {"column", "values"}:
        raise TabularError(file, "inliers", expected, f"keys {sorted(value)}")
    if not _is_name(value["column"]):
        raise TabularError(
            file, "inliers.column", "the name of the column that marks inliers", describe(value["column"])
        )
    values = value["values"]
    if not isinstance(values, list) or not values or not all(_is_value(v) for v in values):
        raise TabularError(
            file, "inliers.values", "a non-empty list of the values that mark an inlier row", describe(values)
        )
    return Inliers(value["column"], tuple(level_text(v) for v in values))


def _read_ignore(value: Any, file: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(_is_name(v) for v in value):
        raise TabularError(file, "ignore", "a list of column names", describe(value))
    return tuple(value)


def _read_missing_values(value: Any, file: str) -> tuple[str | int | float, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(_is_value(v) for v in value):
        raise TabularError(
            file,
            "missing_values",
            "a list of cell values that mean missing, text or finite numbers (e.g. [-999, unknown])",
            describe(value),
        )
    return tuple(v.strip() if isinstance(v, str) else v for v in value)


def _check_roles(schema: TabularSchema, file: str) -> None:
    """Each column has one role: declared, ignored, the id column or the inlier column."""
    declared = {c.name for c in schema.columns}
    both = [name for name in schema.ignore if name in declared]
    if both:
        raise TabularError(
            file, "ignore", "each column either declared under columns or listed under ignore", f"{both} in both"
        )
    roles = (("id_column", schema.id_column), ("inliers.column", schema.inliers.column))
    for where, name in roles:
        if name is not None and (name in declared or name in schema.ignore):
            place = "declared under columns" if name in declared else "listed under ignore"
            raise TabularError(file, where, "a column that is not also declared or ignored", f"'{name}' {place}")
    if schema.id_column is not None and schema.id_column == schema.inliers.column:
        raise TabularError(file, "inliers.column", "a column other than the id column", f"'{schema.id_column}'")


def _check_keys(mapping: Mapping, allowed: tuple[str, ...], prefix: str, file: str) -> None:
    for key in mapping:
        if key not in allowed:
            close = difflib.get_close_matches(str(key), allowed, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            where = f"{prefix}.{key}" if prefix else str(key)
            raise TabularError(file, where, f"one of the known keys {list(allowed)}", f"unknown key '{key}'{hint}")


def _is_name(value: Any) -> bool:
    return isinstance(value, str) and bool(value.strip())


def _is_value(value: Any) -> bool:
    """A level, inlier value or marker: non-empty text or a finite number (YAML booleans are refused)."""
    if isinstance(value, str):
        return bool(value.strip())
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
