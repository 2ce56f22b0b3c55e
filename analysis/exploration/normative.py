"""Normative ROI scores: each region's deviation from what the reference cohort predicts for a subject's covariates.

Real studies carry age, sex, site and a head-size measure (eTIV/ICV) per subject, and a regional anomaly score
follows some of them even in typical brains. Read region by region, a cohort that differs in one of them (smaller
heads, another site) shows many "regional" differences that are one global one. The normative-modelling habit
(PCNtoolkit, BrainChart) answers it: fit, on reference subjects the score models did not learn from, a model of
each ROI score given the covariates, and read every subject's score as its standardised deviation from the model's
prediction (a z-score, higher = more anomalous, like the raw score).

The model is ordinary least squares per ROI, linear in the numeric covariates (standardised on the fit subjects)
with the categorical ones as indicators (the most frequent level of the fit subjects as baseline). The design is
chosen by how well it predicts held-out reference subjects (:func:`held_out_errors`, k-fold cross-validation, over
all ROIs at once): the linear one only when it beats each ROI's reference mean, a richer one (squares of the numeric
covariates) only when it beats the linear one, each by :data:`RICHER_MARGIN`. Covariates that predict nothing
would only add their estimation noise to every deviation; with the ``mean`` design the adjusted scores are the raw
ones standardised per ROI (each reference subject against the others), so a rank test within a cohort gives what
the raw scores give.

Every subject is scored by a model that did not see it. A subject outside the fit set: its residual over the
predictive standard deviation ``sigma * sqrt(1 + h)`` (``h`` its leverage). A fit subject: its externally
studentised residual ``e / (sigma_(i) * sqrt(1 - h))``, which is the same predictive z computed from the model
fitted without that subject (leave one out), so the reference subjects and the cohorts read on one scale.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

KINDS = ("numeric", "categorical")
DESIGNS = ("mean", "linear", "quadratic")
"""Designs a model may use, simplest first: the intercept alone; indicators and numeric covariates; plus the squares
of the numeric ones."""
RICHER_MARGIN = 0.01
"""A design is chosen over the next simpler one only when its held-out error is this fraction below it."""
MIN_RESIDUAL_DOF = 5
"""Fewest fit subjects beyond the model's parameters."""


class NormativeError(ValueError):
    """The normative model cannot be fitted or applied; the message names the covariate or ROI concerned."""


@dataclass(frozen=True)
class Encoding:
    """How the covariates become the columns of a design matrix, learnt from the fit subjects.

    Attributes
    ----------
    kinds : mapping covariate -> "numeric" | "categorical"
    centre, scale : mapping numeric covariate -> fit-subject mean and standard deviation
    levels : mapping categorical covariate -> its fit-subject levels, the baseline (most frequent) first
    design : "linear" or "quadratic"
    """

    kinds: Mapping[str, str]
    centre: Mapping[str, float]
    scale: Mapping[str, float]
    levels: Mapping[str, tuple[str, ...]]
    design: str = "linear"

    @classmethod
    def learn(cls, covariates: pd.DataFrame, kinds: Mapping[str, str], design: str = "linear") -> Encoding:
        """The encoding of ``covariates`` (the fit subjects' rows), refusing constant or all-missing covariates."""
        if design not in DESIGNS:
            raise NormativeError(f"design must be one of {DESIGNS}; received {design!r}")
        centre, scale, levels = {}, {}, {}
        for name, kind in kinds.items():
            if kind not in KINDS:
                raise NormativeError(f"covariate {name}: kind must be one of {KINDS}; received {kind!r}")
            if name not in covariates.columns:
                raise NormativeError(f"covariate {name}: no such column among {list(covariates.columns)}")
            values = covariates[name]
            if kind == "numeric":
                known = pd.to_numeric(values, errors="coerce").dropna()
                if len(known) < 2 or float(known.std(ddof=1)) == 0.0:
                    raise NormativeError(f"covariate {name}: expected at least two different values among the "
                                         f"{len(values)} fit subjects; found {known.nunique()}")
                centre[name], scale[name] = float(known.mean()), float(known.std(ddof=1))
            else:
                counts = values.dropna().astype(str).value_counts()
                if len(counts) < 2:
                    raise NormativeError(f"covariate {name}: expected at least two levels among the "
                                         f"{len(values)} fit subjects; found {list(counts.index)}")
                # Baseline = the most frequent level (ties: alphabetical), so indicators are deviations from it.
                ordered = sorted(counts.index, key=lambda level: (-counts[level], level))
                levels[name] = tuple(ordered)
        return cls(dict(kinds), centre, scale, levels, design)

    @property
    def terms(self) -> list[str]:
        """Names of the design's columns, the intercept first."""
        names = ["intercept"]
        for name, kind in self.kinds.items():
            if kind == "numeric":
                names.append(name)
            else:
                names += [f"{name}[{level}]" for level in self.levels[name][1:]]
        if self.design == "mean":
            return ["intercept"]
        if self.design == "quadratic":
            names += [f"{name}^2" for name, kind in self.kinds.items() if kind == "numeric"]
        return names

    def matrix(self, covariates: pd.DataFrame, *, unseen_ok: bool = False) -> tuple[np.ndarray, dict[str, int]]:
        """The design matrix (subjects x terms) of ``covariates``, and per covariate how many missing values were
        imputed (numeric: the fit subjects' mean; categorical: the baseline level).

        A categorical level the fit subjects do not have leaves the model nothing to predict from: with
        ``unseen_ok`` the subject's row is NaN (its deviations are NaN), otherwise it is an error.

        Raises
        ------
        NormativeError
            For an unseen level, unless ``unseen_ok``.
        """
        columns, squares, imputed = [np.ones(len(covariates))], [], {}
        unseen_rows = np.zeros(len(covariates), dtype=bool)
        for name, kind in self.kinds.items():
            values = covariates[name]
            imputed[name] = int(values.isna().sum())
            if kind == "numeric":
                z = ((pd.to_numeric(values, errors="coerce") - self.centre[name]) / self.scale[name]).fillna(0.0)
                columns.append(z.to_numpy(dtype=float))
                squares.append(columns[-1] ** 2)
                continue
            text = values.astype(object).where(values.notna(), None)
            unseen = sorted({str(v) for v in text.dropna()} - set(self.levels[name]))
            if unseen and unseen_ok:
                unseen_rows |= text.isin(unseen).to_numpy()
            elif unseen:
                holders = int(text.isin(unseen).sum())
                raise NormativeError(
                    f"covariate {name}: level(s) {unseen} (held by {holders} subject(s)) are absent from the "
                    f"reference subjects the model is fitted on, so it cannot predict for them"
                )
            for level in self.levels[name][1:]:
                columns.append((text.astype(str) == level).to_numpy(dtype=float))
        if self.design == "mean":
            columns = columns[:1]
        if self.design == "quadratic":
            columns += squares
        x = np.column_stack(columns)
        x[unseen_rows] = np.nan
        return x, imputed

    def as_dict(self) -> dict:
        return {
            "covariates": [
                {"name": name, "kind": kind, **({"mean": self.centre[name], "sd": self.scale[name]}
                                                if kind == "numeric" else {"levels": list(self.levels[name])})}
                for name, kind in self.kinds.items()
            ],
            "design": self.design,
            "terms": self.terms,
        }


def _ols(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Least squares of every column of ``y`` (n, R) on ``x`` (n, p): coefficients (p, R), residual SD (R,) with
    n - p degrees of freedom, and (X'X)^-1 (p, p)."""
    n, p = x.shape
    if n - p < MIN_RESIDUAL_DOF:
        raise NormativeError(f"expected at least {p + MIN_RESIDUAL_DOF} reference subjects to fit {p} parameters "
                             f"per ROI; found {n}")
    gram_inv = np.linalg.pinv(x.T @ x)
    beta = gram_inv @ x.T @ y
    residuals = y - x @ beta
    sigma = np.sqrt((residuals**2).sum(axis=0) / (n - p))
    return beta, sigma, gram_inv


def held_out_errors(x_by_design: Mapping[str, np.ndarray], y: np.ndarray, n_folds: int = 5,
                    random_state: int = 0) -> dict[str, float]:
    """Mean squared error of each design's predictions for held-out fit subjects, k-fold, in units of each ROI's
    variance over the fit subjects (so every ROI weighs the same; the intercept-only model scores about 1).

    Parameters
    ----------
    x_by_design : design name -> design matrix (n, p) of the same subjects
    y : ndarray (n, R)
        The ROI scores of those subjects.
    """
    n = len(y)
    folds = np.random.default_rng(random_state).permutation(n) % min(n_folds, n)
    spread = y.std(axis=0, ddof=1)
    spread[spread == 0] = 1.0
    errors = {}
    for name, x in x_by_design.items():
        squared = np.zeros_like(y)
        for fold in np.unique(folds):
            test = folds == fold
            beta = np.linalg.lstsq(x[~test], y[~test], rcond=None)[0]
            squared[test] = ((y[test] - x[test] @ beta) / spread) ** 2
        errors[name] = float(squared.mean())
    return errors


@dataclass
class NormativeModel:
    """Per-ROI normative model of anomaly scores given covariates (sklearn-style: ``fit`` returns self, fitted
    attributes end in ``_``).

    Parameters
    ----------
    kinds : mapping covariate -> "numeric" | "categorical"
    design : "auto", "mean", "linear" or "quadratic"
        "auto" takes each design over the next simpler one only when it beats it on held-out fit subjects by
        :data:`RICHER_MARGIN` (the quadratic one only with numeric covariates).
    n_folds, random_state : cross-validation of :func:`held_out_errors`
    """

    kinds: Mapping[str, str]
    design: str = "auto"
    n_folds: int = 5
    random_state: int = 0
    encoding_: Encoding | None = field(default=None, init=False)
    coefficients_: pd.DataFrame | None = field(default=None, init=False)
    sigma_: pd.Series | None = field(default=None, init=False)
    fit_ids_: list = field(default_factory=list, init=False)
    held_out_: dict = field(default_factory=dict, init=False)
    imputed_: dict = field(default_factory=dict, init=False)
    gram_inv_: np.ndarray | None = field(default=None, init=False, repr=False)

    def fit(self, scores: pd.DataFrame, covariates: pd.DataFrame, fit_ids: Sequence) -> NormativeModel:
        """Fit on the ``fit_ids`` rows of ``scores`` (subjects x ROIs) and ``covariates`` (subjects x covariates),
        both indexed by subject id.

        Raises
        ------
        NormativeError
            Constant covariates, too few fit subjects, a ROI without scores among them.
        """
        if self.design not in ("auto", *DESIGNS):
            raise NormativeError(f"design must be 'auto' or one of {DESIGNS}; received {self.design!r}")
        fit_ids = list(fit_ids)
        y = scores.loc[fit_ids].to_numpy(dtype=float)
        empty = [str(c) for c, bad in zip(scores.columns, np.isnan(y).all(axis=0), strict=True) if bad]
        if empty:
            raise NormativeError(f"ROI(s) {empty[:5]} have no score among the {len(fit_ids)} fit subjects")
        # A subject without a ROI's score takes the ROI's fit mean there, so it neither drives nor breaks the fit.
        y = np.where(np.isnan(y), np.nanmean(y, axis=0), y)
        rows = covariates.loc[fit_ids]
        candidates = {name: Encoding.learn(rows, self.kinds, name) for name in ("mean", "linear")}
        if any(kind == "numeric" for kind in self.kinds.values()):
            candidates["quadratic"] = Encoding.learn(rows, self.kinds, "quadratic")
        # A design with fewer than MIN_RESIDUAL_DOF residual degrees of freedom cannot be fitted: not a candidate.
        candidates = {name: enc for name, enc in candidates.items()
                      if len(y) - len(enc.terms) >= MIN_RESIDUAL_DOF or name == "mean"}
        matrices = {name: enc.matrix(rows)[0] for name, enc in candidates.items()}
        errors = held_out_errors(matrices, y, self.n_folds, self.random_state)
        chosen = self.design
        if chosen == "auto":
            chosen = "mean"
            for richer in ("linear", "quadratic"):
                if richer in errors and errors[richer] < (1 - RICHER_MARGIN) * errors[chosen]:
                    chosen = richer
                else:
                    break
        if chosen not in candidates:
            raise NormativeError(f"the {chosen} design needs at least one numeric covariate and "
                                 f"{MIN_RESIDUAL_DOF} fit subjects beyond its parameters")
        self.encoding_ = candidates[chosen]
        x, self.imputed_ = self.encoding_.matrix(rows)
        beta, sigma, self.gram_inv_ = _ols(x, y)
        self.coefficients_ = pd.DataFrame(beta.T, index=scores.columns, columns=self.encoding_.terms)
        self.sigma_ = pd.Series(sigma, index=scores.columns)
        self.fit_ids_ = fit_ids
        self.held_out_ = {"folds": min(self.n_folds, len(y)), "error": errors,
                          "r2": {name: 1.0 - err / errors["mean"] for name, err in errors.items() if name != "mean"}}
        return self

    def record(self) -> dict:
        """What a run records of the model (``run.json`` section ``normative``); the coefficients are a table."""
        self._check_fitted()
        return {**self.encoding_.as_dict(), "fit_subjects": len(self.fit_ids_), "parameters": len(self.encoding_.terms),
                "held_out": self.held_out_, "imputed": self.imputed_}

    def coefficient_table(self) -> pd.DataFrame:
        """One row per ROI: the coefficient of every term and the residual SD ``sigma``."""
        self._check_fitted()
        return self.coefficients_.assign(sigma=self.sigma_).rename_axis("roi").reset_index()

    def _check_fitted(self) -> None:
        if self.encoding_ is None:
            raise NormativeError("the normative model is not fitted; call fit first")

    def predict(self, covariates: pd.DataFrame) -> pd.DataFrame:
        """Expected ROI scores (subjects x ROIs) for the covariates of each subject."""
        self._check_fitted()
        x, _ = self.encoding_.matrix(covariates, unseen_ok=True)
        return pd.DataFrame(x @ self.coefficients_.to_numpy().T, index=covariates.index,
                            columns=self.coefficients_.index)

    def deviations(self, scores: pd.DataFrame, covariates: pd.DataFrame) -> pd.DataFrame:
        """The adjusted scores: each subject's standardised deviation from its prediction (z, higher = more
        anomalous), every subject scored by a model that did not see it (module docstring). NaN for a subject
        whose categorical covariate has a level the fit subjects lack."""
        self._check_fitted()
        ids = list(scores.index)
        covariates = covariates.loc[ids]
        x, _ = self.encoding_.matrix(covariates, unseen_ok=True)
        leverage = np.einsum("ij,jk,ik->i", x, self.gram_inv_, x)
        in_fit = np.isin(np.asarray(ids, dtype=object), np.asarray(self.fit_ids_, dtype=object))
        residual = scores.to_numpy(dtype=float) - x @ self.coefficients_.loc[scores.columns].to_numpy().T
        sigma = np.broadcast_to(self.sigma_.loc[scores.columns].to_numpy()[None, :], residual.shape).copy()
        spread = np.sqrt(1.0 + leverage)
        if in_fit.any():
            # A fit subject, seen from the model fitted without it: the externally studentised residual
            # e / (sigma_(i) sqrt(1 - h)), with sigma_(i)^2 = ((n - p) sigma^2 - e^2 / (1 - h)) / (n - p - 1).
            n, p = len(self.fit_ids_), len(self.encoding_.terms)
            h, e = leverage[in_fit, None], residual[in_fit]
            dropped = ((n - p) * sigma[in_fit] ** 2 - e**2 / (1.0 - h)) / (n - p - 1)
            sigma[in_fit] = np.sqrt(np.clip(dropped, 0.0, None))
            spread[in_fit] = np.sqrt(1.0 - leverage[in_fit])
        z = residual / sigma / spread[:, None]
        return pd.DataFrame(z, index=scores.index, columns=scores.columns)
