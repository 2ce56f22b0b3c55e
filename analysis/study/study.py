"""The ``Study`` type: a validated study as every later stage sees it (made by
:func:`analysis.study.validation.validate_study`)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from analysis.study.atlas import labels_present
from analysis.study.covariates import Covariate
from analysis.study.errors import StudyWarning
from analysis.study.manifest import Manifest
from analysis.study.table_checks import preview
from analysis.study.volumes import Grid


@dataclass(frozen=True)
class Study:
    """A validated study: its manifest, grid, atlas and tables, ready for the models and the analysis."""

    manifest: Manifest
    grid: Grid
    brain_mask: np.ndarray
    atlas_labels: np.ndarray
    label_names: pd.DataFrame
    subjects: pd.DataFrame
    """One row per subject, indexed by subject id, with columns cohort, split, sex, age and one path per modality."""
    behaviour: pd.DataFrame | None
    """Score columns as floats (NaN = missing), indexed by subject id."""
    lesions: pd.DataFrame | None = None
    """Ground-truth lesion masks, indexed by subject id: columns ``mask`` (resolved path) and ``group``."""
    covariates: tuple[Covariate, ...] = ()
    """What the normative model adjusts ROI scores for (the manifest's ``subjects.covariates``), in its order."""
    covariate_table: pd.DataFrame = field(default=None)
    """One column per covariate, indexed like :attr:`subjects`: numeric ones float (NaN = missing), categorical
    ones ``str`` objects (None = missing). Given None (the default), an empty frame with the subjects' index."""
    warnings: tuple[StudyWarning, ...] = ()
    """What validation found worth saying that does not stop the study (missing covariate values)."""
    gnsm_table: pd.DataFrame | None = None
    """The manifest's ``gnsm:`` columns, indexed like :attr:`subjects` (kinds and missing values as in
    :attr:`covariate_table`); None without a ``gnsm:`` block."""

    def __post_init__(self):
        if self.covariate_table is None:
            object.__setattr__(self, "covariate_table", pd.DataFrame(index=self.subjects.index))

    def summary(self) -> str:
        """A human-readable overview: subjects per cohort and split, grid, atlas, behaviour, covariates."""
        m = self.manifest
        counts = pd.crosstab(self.subjects["cohort"], self.subjects["split"], margins=True, margins_name="total")
        named = set(self.label_names["index"])
        present = set(labels_present(self.atlas_labels).tolist())
        absent = f"; {len(named - present)} named labels absent" if named - present else ""
        lines = [
            f"study: {m.study_name} ({m.path})",
            f"grid: {self.grid.describe()}; brain mask {int(self.brain_mask.sum())} voxels",
            f"atlas: {m.atlas.name}, {len(present)} labels on the grid ({len(named)} named in "
            f"{m.atlas.labels.name}{absent})",
            f"reference cohort: {m.reference_cohort} ({int((self.subjects['cohort'] == m.reference_cohort).sum())} "
            f"subjects, {self.n_reference_train} for training)",
            f"modalities: {', '.join(m.subjects.images)}",
            "subjects per cohort and split:",
            *("  " + line for line in counts.to_string().splitlines()),
        ]
        if self.behaviour is not None:
            missing = float(self.behaviour.isna().to_numpy().mean())
            lines.append(
                f"behaviour: {len(self.behaviour)} subjects x {self.behaviour.shape[1]} scores "
                f"({missing:.1%} missing): {', '.join(self.behaviour.columns)}"
            )
        else:
            lines.append("behaviour: none")
        lines.append(
            "covariates: "
            + (", ".join(self._describe_covariate(c) for c in self.covariates) if self.covariates else "none")
        )
        if m.gnsm is not None:
            columns = ", ".join(f"{name} ({kind})" for name, kind in m.gnsm.columns.items())
            lines.append(f"gnsm: {columns}" + (" with the score norms" if m.gnsm.with_score_norms else ""))
        if self.lesions is not None:
            groups = self.lesions["group"].value_counts().sort_index()
            lines.append(
                f"lesions: ground-truth masks of {len(self.lesions)} subjects ("
                + ", ".join(f"{g}: {n}" for g, n in groups.items()) + ")"
            )
        return "\n".join(lines)

    def _describe_covariate(self, covariate: Covariate) -> str:
        values = self.covariate_table[covariate.name]
        missing = int(values.isna().sum())
        what = covariate.kind
        if covariate.kind == "categorical":
            what += ": " + preview(sorted(values.dropna().unique()))
        return f"{covariate.name} ({what}{f'; {missing} missing' if missing else ''})"

    @property
    def n_reference_train(self) -> int:
        s = self.subjects
        return int(((s["cohort"] == self.manifest.reference_cohort) & (s["split"] == "train")).sum())
