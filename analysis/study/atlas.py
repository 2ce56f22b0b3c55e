"""Atlas label tables: which integer in the label image names which region."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.study.tables import TableError, read_table


def read_label_table(path: str | os.PathLike) -> pd.DataFrame:
    """Read a label table with columns ``index`` (positive integer) and ``name``, sorted by index.

    Raises
    ------
    TableError
        When the file is missing, empty or lacks the columns, or an index is not a positive integer or repeats.
    """
    path = Path(path)
    table = read_table(path)
    missing = [c for c in ("index", "name") if c not in table.columns]
    if missing:
        raise TableError("columns 'index' and 'name'", f"columns {list(table.columns)}", field=", ".join(missing))
    index = pd.to_numeric(table["index"], errors="coerce")
    bad = table.index[index.isna() | (index <= 0) | (index % 1 != 0)]
    if len(bad):
        row = int(bad[0])
        raise TableError("positive integer label indices", f"'{table['index'].iloc[row]}'", field=f"row {row + 2}")
    table = table.assign(index=index.astype(int), name=table["name"].astype(str).str.strip())
    dupes = table["index"][table["index"].duplicated()].unique()
    if len(dupes):
        raise TableError("each label index once", f"repeated indices {dupes.tolist()}", field="index")
    empty = table.index[table["name"].isin(["", "nan"])]
    if len(empty):
        raise TableError("a name for every label", "an empty name", field=f"row {int(empty[0]) + 2}")
    return table.sort_values("index").reset_index(drop=True)


def labels_present(labels: np.ndarray) -> np.ndarray:
    """Sorted non-zero label values present in a label volume."""
    values = np.unique(labels)
    return values[values != 0]
