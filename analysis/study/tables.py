"""Reading the study's tables (CSV, TSV, Parquet) with errors that name the file and the field."""

from __future__ import annotations

import math
import os
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

DEFAULT_MISSING_MARKERS = ("NA", "NaN", "nan", "n/a", "N/A")
"""Cell texts that mean a missing value in every study table, besides an empty cell."""


class TableError(ValueError):
    """A table cannot be used; ``field`` names the column or row concerned."""

    def __init__(self, expected: str, found: str, field: str = ""):
        self.expected = expected
        self.found = found
        self.field = field
        super().__init__(f"{field + ': ' if field else ''}expected {expected}; found {found}")


@dataclass(frozen=True)
class MissingValues:
    """Which cells of a study table hold a missing value: empty cells always, and cells holding a marker.

    Build it with :meth:`of`. A text marker matches a cell whose text equals it; a number also matches any cell
    whose text is the same number (``-1`` matches ``-1``, ``-1.0`` and ``-1e0``).
    """

    texts: frozenset[str] = frozenset()
    numbers: frozenset[float] = frozenset()

    @classmethod
    def of(cls, markers: Iterable[str | int | float] = (), *, defaults: bool = True) -> MissingValues:
        """The usual markers (:data:`DEFAULT_MISSING_MARKERS`, unless ``defaults`` is false) and a study's own
        (the manifest's ``missing_values``: strings and finite numbers)."""
        texts = set(DEFAULT_MISSING_MARKERS) if defaults else set()
        numbers = set()
        for marker in markers:
            if isinstance(marker, str):
                texts.add(marker.strip())
            else:
                texts.add(str(marker))
                numbers.add(float(marker))
        return cls(frozenset(texts), frozenset(numbers))

    def matches(self, column: pd.Series) -> pd.Series:
        """True for each cell of ``column`` (cell texts, None for empty) that holds a marker."""
        hit = column.isin(list(self.texts))
        if self.numbers:
            values = pd.to_numeric(column, errors="coerce")
            hit |= values.isin(list(self.numbers))
        return hit.fillna(False).astype(bool)

    def describe(self) -> str:
        """The markers as a manifest writer reads them, e.g. ``empty cells, NA, NaN, -1``."""
        shown = sorted(self.texts - {_number_text(n) for n in self.numbers}) + sorted(
            _number_text(n) for n in self.numbers
        )
        return ", ".join(["empty cells", *shown])


NO_MARKERS = MissingValues()
"""Only empty cells are missing (the atlas label table, whose names are read as written)."""


def _number_text(value: float) -> str:
    return str(int(value)) if math.isfinite(value) and value == int(value) else str(value)


def read_table(
    path: str | os.PathLike, missing: MissingValues = NO_MARKERS, keep: Collection[str] = ()
) -> pd.DataFrame:
    """Read a CSV, TSV or Parquet table with every column kept as written (ids stay strings).

    Cells are stripped of surrounding spaces; empty cells, and cells holding one of ``missing``'s markers, become
    missing (NaN). The columns named in ``keep`` (ids, cohort names) lose only their empty cells: a marker there
    stays as written, for the caller to refuse (:meth:`MissingValues.matches`) rather than silently lose an id.

    Raises
    ------
    TableError
        When the file is missing, empty, unparseable or has no rows.
    """
    path = Path(path)
    if not path.is_file():
        raise TableError("an existing table file", "no such file")
    if path.stat().st_size == 0:
        raise TableError("a table with a header row", "an empty file")
    suffix = "".join(path.suffixes[-2:]) if path.suffix == ".gz" else path.suffix
    try:
        if suffix in (".parquet", ".pq"):
            # Same contract as CSV: every cell as written, as a string (ids 7 and '7' must match), nulls kept.
            table = pd.read_parquet(path)
            table = table.astype(object).where(table.notna(), None).map(lambda v: v if v is None else str(v))
            table = table.astype(object)
        else:
            sep = "\t" if suffix.startswith((".tsv", ".txt")) else ","
            table = pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False, na_values=[""])
    except Exception as exc:  # pandas raises many parser errors
        raise TableError("a readable CSV, TSV or Parquet table", f"a parse error ({exc})") from None
    if table.empty:
        raise TableError("at least one data row", "a header without rows")
    table.columns = [str(c).strip() for c in table.columns]
    # A cell of spaces is an empty cell, and 'typical ' is the cohort 'typical'.
    for column in table.columns:
        if table[column].dtype == object or pd.api.types.is_string_dtype(table[column]):
            stripped = table[column].str.strip()
            gone = stripped == ""
            if column not in keep:
                gone |= missing.matches(stripped)
            table[column] = stripped.mask(gone)
    return table
