"""Every method's anomaly maps of a study's lesion subjects through the same protocol, and their summary.

:func:`evaluate_study_lesions` is the one entry point the refresh, ``msma evaluate-lesions`` and the experiments
call: it reads the study's ground-truth masks, runs :func:`evaluate_methods` and summarises per lesion group and
method (the rows of dissertation table 5.1).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from analysis.lesions.metrics import _as_mask
from analysis.lesions.protocol import LESION_PROTOCOL, LesionProtocol, evaluate_map
from analysis.study.study import Study
from analysis.study.volumes import load_volume

#: The per-subject metrics of :func:`~analysis.lesions.protocol.evaluate_segmentation` that :func:`summarise`
#: aggregates.
METRICS = ("hd99", "msd", "tpr", "ppv")
#: Threshold-free figures of :func:`~analysis.lesions.protocol.evaluate_map` that :func:`summarise` aggregates when
#: present.
SUPPLEMENTARY = ("auroc", "tpr_at_zero_fp", "predicted_fraction")


def summarise(per_subject: pd.DataFrame, by: str | Sequence[str]) -> pd.DataFrame:
    """Mean and standard error of the lesion metrics per group.

    Parameters
    ----------
    per_subject : DataFrame
        One row per subject (and method, etc.), with columns ``hd99``, ``msd``, ``tpr``, ``ppv`` and the columns
        named in ``by``.
    by : str or list of str
        Grouping column(s), e.g. ``"method"``.

    Returns
    -------
    DataFrame
        One row per group, sorted by the group keys, with the ``by`` columns, ``n_subjects`` (rows in the group) and,
        for each metric ``m`` of :data:`METRICS` (and of :data:`SUPPLEMENTARY` present in ``per_subject``),
        ``m_mean`` and ``m_se``. NaN values are ignored: the mean is over non-NaN values and
        ``m_se = std(ddof=1) / sqrt(n)`` with ``n`` the number of non-NaN values (NaN when ``n < 2``), as
        :func:`scipy.stats.sem` with ``nan_policy="omit"``. Infinite values (distances to an empty prediction) make
        the mean infinite and the standard error NaN.

    Raises
    ------
    ValueError
        If a metric or grouping column is missing.
    """
    keys = [by] if isinstance(by, str) else list(by)
    if not keys:
        raise ValueError("by must name at least one grouping column")
    missing = [column for column in [*keys, *METRICS] if column not in per_subject.columns]
    if missing:
        raise ValueError(f"per_subject lacks column(s) {missing}; it has {list(per_subject.columns)}")
    metrics = [*METRICS, *(m for m in SUPPLEMENTARY if m in per_subject.columns)]
    rows = []
    for group, frame in per_subject.groupby(keys, sort=True, dropna=False):
        row = dict(zip(keys, group, strict=True))
        row["n_subjects"] = len(frame)
        for metric in metrics:
            values = pd.to_numeric(frame[metric], errors="raise").to_numpy(dtype=float)
            values = values[~np.isnan(values)]
            n = values.size
            with np.errstate(invalid="ignore"):
                row[f"{metric}_mean"] = float(values.mean()) if n else float("nan")
                row[f"{metric}_se"] = float(values.std(ddof=1) / np.sqrt(n)) if n > 1 else float("nan")
        rows.append(row)
    columns = [*keys, "n_subjects", *(f"{metric}_{stat}" for metric in metrics for stat in ("mean", "se"))]
    return pd.DataFrame(rows, columns=columns)


def _evaluate_subject(maps: dict, gt: np.ndarray, brain_mask: np.ndarray, spacing, protocol: LesionProtocol
                      ) -> list[dict]:
    rows = []
    for method, values in maps.items():
        score_map = np.full(brain_mask.shape, np.nan)
        score_map[brain_mask] = values
        try:
            rows.append({"method": method, **evaluate_map(score_map, gt, brain_mask, spacing, **protocol.as_dict())})
        except ValueError as exc:  # e.g. a constant map: no threshold gives a segmentation
            rows.append({"method": method, **dict.fromkeys((*METRICS, *SUPPLEMENTARY), np.nan), "note": str(exc)})
    return rows


def evaluate_methods(
    maps: dict[str, np.ndarray],
    groups: pd.Series,
    ground_truth: Sequence[np.ndarray],
    brain_mask,
    spacing: Sequence[float],
    *,
    protocol: LesionProtocol = LESION_PROTOCOL,
    n_jobs: int = 1,
    progress: bool = False,
) -> pd.DataFrame:
    """Run every method's maps through the same protocol (:func:`~analysis.lesions.protocol.evaluate_map`) on every
    subject.

    Parameters
    ----------
    maps : dict of method name -> array (n_subjects, n_brain_voxels)
        Anomaly maps inside the brain mask (C order of ``brain_mask``), higher = more anomalous.
    groups : Series of length n_subjects
        Each subject's lesion group (e.g. faint / bright), indexed by subject id, in the order of the maps' rows.
    ground_truth : sequence of n_subjects boolean arrays shaped like ``brain_mask``
    brain_mask : array_like of bool, (D, H, W)
    spacing : sequence of float
        Voxel size in mm per axis.
    protocol : LesionProtocol
    n_jobs : int
        Worker processes (subjects are independent).

    Returns
    -------
    DataFrame
        One row per (subject, method): ``subject_id``, ``group``, ``method`` and the keys of
        :func:`~analysis.lesions.protocol.evaluate_map`. A map the protocol cannot threshold (e.g. a constant one)
        gets NaN metrics and its reason in ``note``.
    """
    from joblib import Parallel, delayed
    from tqdm.auto import tqdm

    brain_mask = _as_mask(brain_mask, "brain_mask")
    subject_ids, labels = list(groups.index), list(groups)
    n = len(subject_ids)
    if len(ground_truth) != n:
        raise ValueError(f"groups ({n} subjects) and ground_truth ({len(ground_truth)} masks) differ")
    n_voxels = int(brain_mask.sum())
    for method, values in maps.items():
        if np.shape(values) != (n, n_voxels):
            raise ValueError(f"maps[{method!r}]: expected shape {(n, n_voxels)}, got {np.shape(values)}")
    jobs = (
        delayed(_evaluate_subject)(
            {m: np.asarray(v[k]) for m, v in maps.items()}, _as_mask(ground_truth[k], "ground_truth"), brain_mask,
            spacing, protocol,
        )
        for k in range(n)
    )
    results = Parallel(n_jobs=n_jobs)(
        tqdm(jobs, total=n, desc="lesion evaluation", unit="subject", disable=not progress)
    )
    rows = [
        {"subject_id": subject_ids[k], "group": labels[k], **row} for k, result in enumerate(results) for row in result
    ]
    return pd.DataFrame(rows)


@dataclass
class LesionEvaluation:
    """The lesion protocol's results on a study's lesion subjects."""

    per_subject: pd.DataFrame
    """One row per (subject, method), as :func:`evaluate_methods` returns it."""
    summary: pd.DataFrame
    """Mean and standard error per (lesion group, method): :func:`summarise`."""
    protocol: LesionProtocol

    @property
    def failed(self) -> pd.DataFrame:
        """Subject, method and reason of every map the protocol could not threshold."""
        columns = ["subject_id", "method", "note"]
        if "note" not in self.per_subject:
            return pd.DataFrame(columns=columns)
        return self.per_subject.loc[self.per_subject["note"].notna(), columns]


def evaluate_study_lesions(
    study: Study,
    maps: dict[str, np.ndarray],
    protocol: LesionProtocol = LESION_PROTOCOL,
    *,
    n_jobs: int = 1,
    progress: bool = False,
) -> LesionEvaluation:
    """Every method's maps of the study's lesion subjects against their ground-truth masks.

    Parameters
    ----------
    study : Study
        A validated study with a ``lesions`` table (subject id -> ``mask`` path, ``group``).
    maps : dict of method name -> array (lesion subjects in the table's order, brain voxels)
    protocol : LesionProtocol
    n_jobs : int
        Worker processes.
    """
    lesions = study.lesions
    if lesions is None:
        raise ValueError(f"{study.manifest.path}: the study has no lesions: table to evaluate against")
    truth = [load_volume(path, study.grid) > 0 for path in lesions["mask"]]
    per_subject = evaluate_methods(maps, lesions["group"], truth, study.brain_mask, study.grid.voxel_size,
                                   protocol=protocol, n_jobs=n_jobs, progress=progress)
    return LesionEvaluation(per_subject, summarise(per_subject, ["group", "method"]), protocol)
