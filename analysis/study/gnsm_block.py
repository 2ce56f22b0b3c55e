"""The manifest's optional ``gnsm:`` block: subject-table columns that GNSM (Gumbel-noise score matching,
dissertation ch. 4) models next to the MSMA score norms, giving a metadata-aware anomaly score per subject.

::

    gnsm:
      columns: {sex: categorical, site: categorical, age: numeric}
      with_score_norms: true     # the subject's MSMA score norms join as continuous columns (default true)

This module checks the block's structure (:func:`read_gnsm`); whether the columns exist and hold usable values is
checked against the subjects table by :mod:`analysis.study.gnsm_columns`.
"""

from __future__ import annotations

import re
import types
from collections.abc import Mapping
from dataclasses import dataclass

from analysis.study.settings import FieldReader, describe

GNSM_KINDS = ("categorical", "numeric")
NORM_COLUMN = re.compile(r"^norm_\d+$")
"""The names the score norms take as GNSM columns (``norm_00`` ...): a subject column may not take one of them."""
_KEYS = {"columns": True, "with_score_norms": False}


@dataclass(frozen=True)
class GNSMSpec:
    """What the refresh's GNSM stage models: subject columns and their kinds, and whether the score norms join."""

    columns: Mapping[str, str]
    """Column of the subjects table -> ``categorical`` or ``numeric``, in the manifest's order."""
    with_score_norms: bool = True
    """Whether the subject's MSMA score norms (their logarithms, as the detectors take them) join as continuous
    columns ``norm_00`` ... ``norm_<L-1>``."""

    def as_dict(self) -> dict:
        return {"columns": dict(self.columns), "with_score_norms": self.with_score_norms}


def read_gnsm(reader: FieldReader, value, reserved: Mapping[str, str]) -> GNSMSpec | None:
    """The ``gnsm:`` block, or None when the manifest has none; problems go to ``reader``.

    ``reserved`` maps the columns that say who a subject is (id, cohort, split, image paths) to the field naming
    them: they cannot be modelled.
    """
    section = reader.mapping(value, "gnsm")
    if section is None:
        return None
    reader.check_keys(section, _KEYS, "gnsm")
    with_norms = section.get("with_score_norms", True)
    if not isinstance(with_norms, bool):
        reader.problem("gnsm.with_score_norms", "true or false", describe(with_norms))
        with_norms = True
    columns = _read_columns(reader, section.get("columns"), reserved, with_norms) if "columns" in section else {}
    return GNSMSpec(types.MappingProxyType(columns), with_norms)


def _read_columns(reader: FieldReader, value, reserved: Mapping[str, str], with_norms: bool) -> dict[str, str]:
    where = "gnsm.columns"
    if not isinstance(value, Mapping) or not value:
        reader.problem(where, "a mapping of subject-table columns to categorical or numeric (e.g. {sex: categorical, "
                       "age: numeric}), at least one", describe(value))
        return {}
    columns = {}
    for name, kind in value.items():
        if not isinstance(name, str) or not name.strip():
            reader.problem(where, "column names as text", describe(name))
            continue
        if kind not in GNSM_KINDS:
            reader.problem(f"{where}.{name}", "categorical or numeric", describe(kind))
        if name in reserved:
            reader.problem(where, "columns that describe the subject (not its id, cohort, split or image path)",
                           f"'{name}', the {reserved[name]} column")
        elif with_norms and NORM_COLUMN.match(name):
            reader.problem(where, "column names other than norm_<k> (the score norms' names when with_score_norms "
                           "is true)", f"'{name}'")
        columns[name] = kind
    return columns
