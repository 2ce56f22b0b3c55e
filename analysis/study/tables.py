"""Reading the study's tables (CSV, TSV, Parquet) with errors that name the file and the field."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd


class TableError(ValueError):
    """A table cannot be used; ``field`` names the column or row concerned."""

    def __init__(self, expected: str, found: str, field: str = ""):
        self.expected = expected
        self.found = found
        self.field = field
        super().__init__(f"{field + ': ' if field else ''}expected {expected}; found {found}")


def read_table(path: str | os.PathLike) -> pd.DataFrame:
    """Read a CSV, TSV or Parquet table with every column kept as written (ids stay strings).

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
            table[column] = stripped.mask(stripped == "")
    return table
