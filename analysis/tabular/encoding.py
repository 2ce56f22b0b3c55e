"""Tables read and encoded against a :class:`~analysis.tabular.schema.TabularSchema`: one-hot blocks for the
categorical columns and standardised values for the continuous ones, as GNSM's score network takes them.

:func:`fit_encoder` checks a table and learns from its inlier rows what the schema leaves open (the levels of a
categorical without declared levels, the mean and SD of each continuous column); :meth:`TableEncoder.transform`
encodes any table with the same columns. Every fault raises :class:`~analysis.tabular.schema.TabularError` naming
the table file, the column, what was expected and what was found, with the first few offending row ids.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from analysis.study.settings import describe
from analysis.study.tables import MissingValues, TableError, read_table
from analysis.tabular.schema import MISSING_LEVEL, Column, TabularError, TabularSchema, level_text

SHOWN_ROWS = 5
"""How many offending rows an error names."""

_ENCODER_KEYS = ("schema", "levels", "continuous")


@dataclass(frozen=True)
class EncodedTable:
    """A table encoded for GNSM; ``n`` rows, ``K = sum(sizes)`` one-hot features, ``C`` continuous columns.

    Attributes
    ----------
    ids : np.ndarray, str, shape (n,)
        Row ids: the id column, or the 0-based row number as text.
    onehot : np.ndarray, float32, shape (n, K)
        One block per categorical column in schema order, ``sizes[d]`` wide, exactly one 1 per row and block.
    sizes : tuple of int
        ``K_d``, the number of levels of each categorical column.
    continuous : np.ndarray, float32, shape (n, C)
        Continuous columns in schema order, standardised with the encoder's inlier mean and SD.
    inlier : np.ndarray, bool, shape (n,)
        Rows the schema's inlier rule selects; all True under ``all: true``, all False for a table that lacks
        the inlier column (a scoring table need not say which rows are inliers).
    categorical_names, continuous_names : tuple of str
        Column names of the one-hot blocks and of the continuous columns.
    """

    ids: np.ndarray
    onehot: np.ndarray
    sizes: tuple[int, ...]
    continuous: np.ndarray
    inlier: np.ndarray
    categorical_names: tuple[str, ...]
    continuous_names: tuple[str, ...]

    def subset(self, rows) -> EncodedTable:
        """The rows at positions ``rows`` (an index array or a boolean mask), in that order."""
        return EncodedTable(self.ids[rows], self.onehot[rows], self.sizes, self.continuous[rows], self.inlier[rows],
                            self.categorical_names, self.continuous_names)


@dataclass(frozen=True)
class TableEncoder:
    """What a table is encoded with: the schema, each categorical column's levels in one-hot order (a column
    with ``missing: level`` ends with :data:`~analysis.tabular.schema.MISSING_LEVEL`), and each continuous
    column's inlier ``means`` and ``sds`` (population SD, ``ddof=0``). Build it with :func:`fit_encoder` or
    :meth:`from_dict`."""

    schema: TabularSchema
    levels: dict[str, tuple[str, ...]]
    means: dict[str, float]
    sds: dict[str, float]

    @property
    def sizes(self) -> tuple[int, ...]:
        return tuple(len(self.levels[c.name]) for c in self.schema.categorical)

    @property
    def n_categorical_features(self) -> int:
        """``K``, the width of the one-hot matrix."""
        return sum(self.sizes)

    @property
    def n_continuous(self) -> int:
        return len(self.schema.continuous)

    def transform(self, table: pd.DataFrame, source: str) -> EncodedTable:
        """Encode ``table`` (``source`` names its file in errors).

        Raises
        ------
        TabularError
            On what :func:`fit_encoder` refuses, and on a level the encoder has not seen. A table without the
            inlier column is accepted (its rows are not inliers).
        """
        rows = _check_rows(table, self.schema, source, need_inliers=False)
        blocks = [
            _onehot(_category_cells(table, c, rows, source), self.levels[c.name], c, rows, source)
            for c in self.schema.categorical
        ]
        values = [_continuous_cells(table, c, rows, source) for c in self.schema.continuous]
        standard = [
            np.where(np.isnan(v), 0.0, (v - self.means[c.name]) / self.sds[c.name])
            for c, v in zip(self.schema.continuous, values, strict=True)
        ]
        n = len(table)
        return EncodedTable(
            ids=rows.ids,
            onehot=np.concatenate(blocks, axis=1) if blocks else np.zeros((n, 0), np.float32),
            sizes=self.sizes,
            continuous=np.stack(standard, axis=1).astype(np.float32) if standard else np.zeros((n, 0), np.float32),
            inlier=rows.inlier,
            categorical_names=tuple(c.name for c in self.schema.categorical),
            continuous_names=tuple(c.name for c in self.schema.continuous),
        )

    def as_dict(self) -> dict:
        """Plain JSON types (saved beside a checkpoint) that :meth:`from_dict` reads back to an equal encoder."""
        return {
            "schema": self.schema.as_dict(),
            "levels": {name: list(levels) for name, levels in self.levels.items()},
            "continuous": {name: {"mean": self.means[name], "sd": self.sds[name]} for name in self.means},
        }

    @classmethod
    def from_dict(cls, data: Any, source: str = "<encoder>") -> TableEncoder:
        """The encoder :meth:`as_dict` wrote; ``source`` names the file in errors.

        Raises
        ------
        TabularError
            On unknown or missing keys, levels or scales that do not match the schema's columns, fewer than two
            levels, a non-finite mean or an SD that is not positive.
        """
        if not isinstance(data, Mapping) or set(data) != set(_ENCODER_KEYS):
            found = f"keys {sorted(map(str, data))}" if isinstance(data, Mapping) else describe(data)
            raise TabularError(source, "", f"a mapping with exactly the keys {list(_ENCODER_KEYS)}", found)
        schema = TabularSchema.from_dict(data["schema"], source=f"{source}: schema")
        levels = _read_encoder_levels(data["levels"], schema, source)
        means, sds = _read_encoder_scales(data["continuous"], schema, source)
        return cls(schema, levels, means, sds)


def load_table(path: str | os.PathLike, schema: TabularSchema) -> pd.DataFrame:
    """Read a CSV, TSV or Parquet table with every cell as written (text), the schema's missing-value markers
    becoming missing except in the id column (where :func:`fit_encoder` refuses a marker rather than lose an id).

    Raises
    ------
    TabularError
        When the file is missing, empty, unparseable or has no rows.
    """
    keep = (schema.id_column,) if schema.id_column else ()
    try:
        return read_table(path, schema.markers, keep=keep)
    except TableError as exc:
        raise TabularError(path, exc.field, exc.expected, exc.found) from None


def fit_encoder(table: pd.DataFrame, schema: TabularSchema, source: str) -> TableEncoder:
    """Check ``table`` against ``schema`` and learn the encoding from its inlier rows.

    A categorical column without declared levels takes the levels its inlier rows show (sorted numerically
    when all are numbers, else as text), plus :data:`~analysis.tabular.schema.MISSING_LEVEL` under ``missing:
    level`` (always, so a scoring table may hold missing cells the inliers lacked). A continuous column gets the
    mean and population SD of its inlier values (missing cells left out). A row whose inlier column is missing
    is not an inlier. ``source`` names the table's file in errors.

    Raises
    ------
    TabularError
        On a declared column missing from the table or an undeclared one in it, a missing inlier column, no
        inlier rows, missing or repeated ids, a missing cell where ``missing`` is ``error``, an undeclared level,
        text in a continuous column, a categorical with one level among the inliers, or a constant continuous
        column.
    """
    rows = _check_rows(table, schema, source, need_inliers=True)
    levels = {c.name: _fit_levels(_category_cells(table, c, rows, source), c, rows, source) for c in schema.categorical}
    means, sds = {}, {}
    for column in schema.continuous:
        means[column.name], sds[column.name] = _fit_scale(
            _continuous_cells(table, column, rows, source), column, rows, source
        )
    return TableEncoder(schema, levels, means, sds)


@dataclass(frozen=True)
class _Rows:
    """What every column's check needs: the row ids (to name offending rows), the inlier rows and the schema's
    missing-value markers."""

    ids: np.ndarray
    inlier: np.ndarray
    markers: MissingValues


def _check_rows(table: pd.DataFrame, schema: TabularSchema, source: str, need_inliers: bool) -> _Rows:
    """The table's columns match the schema; its ids and inlier rows."""
    declared = [c.name for c in schema.columns]
    absent = [name for name in declared if name not in table.columns]
    if absent:
        raise TabularError(
            source,
            ", ".join(absent),
            "every column the schema declares",
            f"no column{'s' if len(absent) > 1 else ''} {absent}; the table has {list(table.columns)}",
        )
    known = {*declared, *schema.ignore, schema.id_column, schema.inliers.column}
    extra = [str(name) for name in table.columns if name not in known]
    if extra:
        raise TabularError(
            source,
            ", ".join(extra),
            "only declared columns, the id column and the inlier column (declare its type or list it under ignore)",
            f"undeclared column{'s' if len(extra) > 1 else ''} {extra}",
        )
    ids = _row_ids(table, schema, source)
    return _Rows(ids, _inlier_rows(table, schema, source, need_inliers), schema.markers)


def _row_ids(table: pd.DataFrame, schema: TabularSchema, source: str) -> np.ndarray:
    if schema.id_column is None:
        return np.array([str(i) for i in range(len(table))], dtype=str)
    if schema.id_column not in table.columns:
        raise TabularError(
            source,
            schema.id_column,
            "the id column the schema names (id_column)",
            f"no such column; the table has {list(table.columns)}",
        )
    ids = _texts(table[schema.id_column])
    missing = (ids.isna() | schema.markers.matches(ids)).to_numpy()
    if missing.any():
        numbers = np.array([str(i) for i in range(len(table))])
        raise TabularError(
            source,
            schema.id_column,
            "an id in every row",
            f"a missing id in {_rows(numbers, missing)} (0-based row numbers)",
        )
    ids = ids.to_numpy(dtype=str)
    repeated = pd.Series(ids).duplicated(keep=False).to_numpy()
    if repeated.any():
        raise TabularError(
            source, schema.id_column, "each id once", f"repeated ids {_preview(np.unique(ids[repeated]))}"
        )
    return ids


def _inlier_rows(table: pd.DataFrame, schema: TabularSchema, source: str, need: bool) -> np.ndarray:
    """Rows the inlier rule selects; a missing cell in the inlier column does not mark an inlier."""
    rule = schema.inliers
    if rule.all:
        return np.ones(len(table), dtype=bool)
    if rule.column not in table.columns:
        if not need:
            return np.zeros(len(table), dtype=bool)
        raise TabularError(
            source,
            rule.column,
            "the inlier column the schema names (inliers.column)",
            f"no such column; the table has {list(table.columns)}",
        )
    cells = _texts(table[rule.column])
    inlier = cells.isin(list(rule.values)).to_numpy()
    if need and not inlier.any():
        seen = sorted(cells.dropna().unique())
        raise TabularError(
            source,
            rule.column,
            f"at least one inlier row (a value among {list(rule.values)})",
            f"no inlier rows; the column holds {_preview(seen)}",
        )
    return inlier


def _category_cells(table: pd.DataFrame, column: Column, rows: _Rows, source: str) -> pd.Series:
    """The column's cells as level text; a missing cell becomes :data:`MISSING_LEVEL` or is refused."""
    cells = _texts(table[column.name])
    missing = _missing(cells, column, rows, source)
    if column.missing == "level":
        cells = cells.mask(missing, MISSING_LEVEL)
    if column.levels is not None:
        # Under missing: level a cell that reads 'missing' means what a missing cell means.
        allowed = [*column.levels, MISSING_LEVEL] if column.missing == "level" else list(column.levels)
        undeclared = (cells.notna() & ~cells.isin(allowed)).to_numpy()
        if undeclared.any():
            raise TabularError(
                source,
                column.name,
                f"only the declared levels {list(column.levels)}",
                f"undeclared {_cells(rows.ids, cells, undeclared)}",
            )
    return cells


def _continuous_cells(table: pd.DataFrame, column: Column, rows: _Rows, source: str) -> np.ndarray:
    """The column's values as float64; NaN where a cell is missing (``missing: mean``), a missing cell otherwise
    refused."""
    raw = table[column.name]
    cells = raw if pd.api.types.is_numeric_dtype(raw) else _stripped(raw)
    missing = _missing(cells, column, rows, source)
    values = pd.to_numeric(cells.mask(missing), errors="coerce").to_numpy(dtype=float, na_value=np.nan)
    bad = ~missing.to_numpy() & ~np.isfinite(values)
    if bad.any():
        raise TabularError(source, column.name, "finite numbers (a continuous column)", _cells(rows.ids, cells, bad))
    return values


def _missing(cells: pd.Series, column: Column, rows: _Rows, source: str) -> pd.Series:
    missing = cells.isna() | rows.markers.matches(cells)
    if column.missing == "error" and missing.any():
        raise TabularError(
            source,
            column.name,
            f"a value in every row (or declare missing: {'level' if column.kind == 'categorical' else 'mean'})",
            f"missing cells in {_rows(rows.ids, missing.to_numpy())}",
        )
    return missing


def _fit_levels(cells: pd.Series, column: Column, rows: _Rows, source: str) -> tuple[str, ...]:
    seen = cells[rows.inlier].unique().tolist()
    if len(seen) < 2:
        raise TabularError(
            source,
            column.name,
            "at least 2 levels among the inlier rows",
            f"only {seen} in {int(rows.inlier.sum())} inlier rows",
        )
    if column.missing != "level":
        return column.levels or tuple(_sorted_levels(seen))
    observed = [v for v in seen if v != MISSING_LEVEL]
    return (*(column.levels or _sorted_levels(observed)), MISSING_LEVEL)


def _fit_scale(values: np.ndarray, column: Column, rows: _Rows, source: str) -> tuple[float, float]:
    inlier = values[rows.inlier & ~np.isnan(values)]
    if inlier.size < 2:
        raise TabularError(
            source,
            column.name,
            "at least 2 values among the inlier rows",
            f"{inlier.size} value{'s' if inlier.size != 1 else ''} in {int(rows.inlier.sum())} inlier rows",
        )
    mean, sd = float(inlier.mean()), float(inlier.std())
    if not sd > 0:
        raise TabularError(
            source,
            column.name,
            "values that vary among the inlier rows",
            f"a constant column (every inlier value is {inlier[0]:g})",
        )
    return mean, sd


def _onehot(cells: pd.Series, levels: tuple[str, ...], column: Column, rows: _Rows, source: str) -> np.ndarray:
    codes = pd.Index(levels).get_indexer(cells)
    unseen = codes < 0
    if unseen.any():
        raise TabularError(
            source,
            column.name,
            f"only levels the encoder has seen {list(levels)}",
            f"unseen level{'s' if len(set(cells[unseen])) > 1 else ''} {_cells(rows.ids, cells, unseen)}",
        )
    onehot = np.zeros((len(cells), len(levels)), dtype=np.float32)
    onehot[np.arange(len(cells)), codes] = 1.0
    return onehot


def _read_encoder_levels(value: Any, schema: TabularSchema, source: str) -> dict[str, tuple[str, ...]]:
    names = [c.name for c in schema.categorical]
    if not isinstance(value, Mapping) or list(value) != names:
        raise TabularError(
            source, "levels", f"levels for the categorical columns {names}, in that order", describe(value)
        )
    read = {}
    for column in schema.categorical:
        levels = value[column.name]
        texts = isinstance(levels, list) and all(isinstance(v, str) for v in levels)
        if not texts or len(levels) < 2 or len(set(levels)) != len(levels):
            raise TabularError(
                source, f"levels.{column.name}", "a list of at least 2 distinct levels as text", describe(levels)
            )
        extra = (MISSING_LEVEL,) if column.missing == "level" else ()
        if column.levels is not None and tuple(levels) != (*column.levels, *extra):
            raise TabularError(
                source, f"levels.{column.name}", f"the schema's levels {[*column.levels, *extra]}", describe(levels)
            )
        read[column.name] = tuple(levels)
    return read


def _read_encoder_scales(value: Any, schema: TabularSchema, source: str) -> tuple[dict, dict]:
    names = [c.name for c in schema.continuous]
    if not isinstance(value, Mapping) or list(value) != names:
        raise TabularError(
            source, "continuous", f"a mean and SD for the continuous columns {names}, in that order", describe(value)
        )
    means, sds = {}, {}
    for name, scale in value.items():
        ok = (
            isinstance(scale, Mapping)
            and set(scale) == {"mean", "sd"}
            and all(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in scale.values())
        )
        if not ok or not scale["sd"] > 0:
            raise TabularError(
                source, f"continuous.{name}", "{mean: finite number, sd: positive number}", describe(scale)
            )
        means[name], sds[name] = float(scale["mean"]), float(scale["sd"])
    return means, sds


def _texts(series: pd.Series) -> pd.Series:
    """Cells as level text (:func:`~analysis.tabular.schema.level_text` of each cell's text: ``1.0`` is ``'1'``),
    None where missing."""
    texts = _stripped(series)
    present = texts.notna().to_numpy()
    codes, uniques = pd.factorize(texts[present])
    levels = np.array([level_text(u) for u in uniques], dtype=object)
    texts[present] = levels[codes]  # level_text once per distinct cell text, not once per cell
    return texts


def _stripped(series: pd.Series) -> pd.Series:
    """Cells as text stripped of surrounding spaces, None where missing or empty (as
    :func:`~analysis.study.tables.read_table` reads an empty cell, for a frame built in code)."""
    texts = pd.Series(None, index=series.index, dtype=object)
    present = series.notna().to_numpy()
    texts[present] = series[present].astype(str).str.strip().to_numpy(dtype=object)
    return texts.mask(texts == "")


def _sorted_levels(levels: list[str]) -> list[str]:
    try:
        return sorted(levels, key=float)
    except ValueError:
        return sorted(levels)


def _rows(ids: np.ndarray, mask: np.ndarray) -> str:
    return f"row{'s' if mask.sum() > 1 else ''} {_preview(ids[mask])}"


def _cells(ids: np.ndarray, cells: pd.Series, mask: np.ndarray) -> str:
    shown = [f"'{value}' (row {row})" for row, value in zip(ids[mask], cells.to_numpy()[mask], strict=True)]
    return _preview(shown)


def _preview(values) -> str:
    values = [str(v) for v in values]
    head = ", ".join(values[:SHOWN_ROWS])
    return head + (f" and {len(values) - SHOWN_ROWS} more" if len(values) > SHOWN_ROWS else "")
