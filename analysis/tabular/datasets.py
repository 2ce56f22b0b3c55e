"""Generated data sets for the tabular benchmark of GNSM (dissertation ch. 4.3): categorical and mixed tables with
labelled anomalies, each drawn from a known generator so that the benchmark knows what a method should find.

No suitable categorical anomaly-detection data set ships inside a package on PyPI (UCI Car Evaluation, Nursery,
Mushroom, Chess, Solar flare, CMC, Congressional voting, ... are only downloaded at run time by ``ucimlrepo``,
``pmlb``, ``adbench`` and the like), and nothing may be downloaded at run time, so the benchmark generates its data.

Every generator is deterministic given ``seed`` (a :class:`numpy.random.Generator` of its own, never the global
seed) and returns a :class:`TabularSet`: the table (string levels for categorical columns, floats for continuous
ones), the declared levels of each column, the anomaly labels and, because the generator is known, the negative
log-likelihood of each row under the inlier model (:attr:`TabularSet.oracle_nll`): the score of a detector that
knew the inlier distribution exactly, the ceiling a learned joint model can approach.

The inliers of every set come from a latent-class model: each row picks one of ``n_classes`` classes and each
categorical column's level is drawn from a class-specific peaked distribution (``peak`` on the class's preferred
level, the rest spread evenly over the other levels). Each level is the preferred level of at least one class, so
every level is common in the table while the columns are strongly dependent through the class.

- :func:`rare_levels_set`: anomalies carry a level that inliers almost never take in a few columns: per-column
  methods find them (the Nursery-like case where ECOD is perfect in table 4.2).
- :func:`rare_combinations`: anomalies whose every value is common but whose combination is rare: their columns come
  from different latent classes. Each column's marginal is the inliers', so per-column methods (ECOD) are at chance
  and only a joint model can tell them apart; two difficulties.
- :func:`mixed_set`: a Census-like table of categorical and continuous columns, each continuous column's mean set by
  two categorical parents; anomalies have continuous values typical of the whole table but wrong for their row's
  parents.
- :func:`wide_set`: a 10,000-row, 40-column categorical inlier table for a training-speed benchmark.
- :func:`benchmark_sets`: the four labelled sets at their default sizes, the benchmark's suite.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.special import logsumexp

from analysis.checks import check_int

__all__ = [
    "TabularSet",
    "benchmark_sets",
    "mixed_set",
    "rare_combinations",
    "rare_levels_set",
    "wide_set",
]

RARE_LEVEL = "rare"
DIFFICULTIES = {
    # difficulty -> (peak of the inlier classes, share of an anomaly's columns taken from a second class; None: each
    # column from its own independently drawn class)
    "easy": (0.85, None),
    "hard": (0.75, 0.5),
}


@dataclass(frozen=True, eq=False)
class TabularSet:
    """A table with labelled anomalies.

    ``table`` has one column per entry of ``columns``, in that order: a categorical column holds strings drawn from
    its declared levels (``columns[name]``), a continuous column (``columns[name] is None``) holds floats.
    ``is_anomaly`` is a boolean array with one entry per row. ``oracle_nll`` is the negative log-likelihood of each
    row under the generator's inlier model (higher = more anomalous; continuous columns add a log-density), or
    None where no model is known.
    """

    name: str
    table: pd.DataFrame
    columns: dict[str, list[str] | None]
    is_anomaly: np.ndarray
    description: str
    oracle_nll: np.ndarray | None = None

    def __post_init__(self):
        if list(self.table.columns) != list(self.columns):
            raise ValueError(f"{self.name}: table columns {list(self.table.columns)} differ from declared columns "
                             f"{list(self.columns)}")
        n_rows = len(self.table)
        if self.is_anomaly.dtype != bool or self.is_anomaly.shape != (n_rows,):
            raise ValueError(f"{self.name}: is_anomaly must be a boolean array of shape ({n_rows},)")
        if self.oracle_nll is not None and self.oracle_nll.shape != (n_rows,):
            raise ValueError(f"{self.name}: oracle_nll must have shape ({n_rows},)")
        for name, levels in self.columns.items():
            values = self.table[name]
            if levels is None:
                if not pd.api.types.is_float_dtype(values):
                    raise ValueError(f"{self.name}: continuous column {name} must hold floats")
            elif not values.isin(levels).all():
                raise ValueError(f"{self.name}: column {name} holds values outside its levels {levels}")

    @property
    def categorical(self) -> list[str]:
        """The categorical columns, in table order."""
        return [name for name, levels in self.columns.items() if levels is not None]

    @property
    def continuous(self) -> list[str]:
        """The continuous columns, in table order."""
        return [name for name, levels in self.columns.items() if levels is None]


@dataclass(frozen=True, eq=False)
class _LatentClassModel:
    """``weights[k]``: the probability of class k; ``probs[j][k, l]``: P(column j takes level l | class k)."""

    weights: np.ndarray
    probs: tuple[np.ndarray, ...]

    def draw_classes(self, shape, rng: np.random.Generator) -> np.ndarray:
        return rng.choice(len(self.weights), size=shape, p=self.weights)

    def draw_levels(self, classes: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Level codes of shape ``classes.shape`` = (n_rows, n_columns), cell (i, j) drawn given class
        ``classes[i, j]`` (one class per row for inliers; anomalies may take each column from another class)."""
        codes = np.empty(classes.shape, dtype=np.int64)
        for j, p in enumerate(self.probs):
            cumulative = np.cumsum(p, axis=1)[classes[:, j]]
            u = rng.random(len(classes))[:, None]
            codes[:, j] = np.minimum((u > cumulative).sum(axis=1), p.shape[1] - 1)
        return codes

    def log_likelihood(self, codes: np.ndarray) -> np.ndarray:
        """log P(row) under the mixture, one value per row of level codes."""
        per_class = np.log(self.weights)[:, None] + sum(
            np.log(p[:, codes[:, j]]) for j, p in enumerate(self.probs)
        )
        return logsumexp(per_class, axis=0)


def _latent_class_model(levels_per_column, n_classes: int, peak: float, rng: np.random.Generator):
    """Uniform class weights; in each column the classes' preferred levels are a random assignment in which every
    level is preferred by at least one class (so needs ``n_classes >= n_levels``)."""
    probs = []
    for n_levels in levels_per_column:
        if n_levels > n_classes:
            raise ValueError(f"n_levels ({n_levels}) must not exceed n_classes ({n_classes})")
        preferred = rng.permutation(n_classes) % n_levels
        p = np.full((n_classes, n_levels), (1 - peak) / (n_levels - 1))
        p[np.arange(n_classes), preferred] = peak
        probs.append(p)
    return _LatentClassModel(np.full(n_classes, 1 / n_classes), tuple(probs))


def _level_names(n_levels: int) -> list[str]:
    return [f"v{level}" for level in range(n_levels)]


def _column_names(prefix: str, n: int) -> list[str]:
    width = len(str(n - 1))
    return [f"{prefix}{j:0{width}d}" for j in range(n)]


def _categorical_frame(codes: np.ndarray, names: list[str], levels: list[list[str]]) -> pd.DataFrame:
    pairs = zip(names, levels, strict=True)
    return pd.DataFrame({name: np.asarray(lv)[codes[:, j]] for j, (name, lv) in enumerate(pairs)})


def _shuffled(rows: pd.DataFrame, is_anomaly: np.ndarray, oracle_nll: np.ndarray, rng: np.random.Generator):
    order = rng.permutation(len(rows))
    return rows.iloc[order].reset_index(drop=True), is_anomaly[order], oracle_nll[order]


def _categorical_set(name: str, codes: np.ndarray, levels: list[list[str]], n_inliers: int,
                     model: _LatentClassModel, rng: np.random.Generator, description: str) -> TabularSet:
    """The set of level ``codes`` (inliers first, then anomalies), shuffled, columns ``c00...``, the oracle the
    latent-class ``model``'s negative log-likelihood."""
    names = _column_names("c", codes.shape[1])
    is_anomaly = np.arange(len(codes)) >= n_inliers
    table, is_anomaly, nll = _shuffled(_categorical_frame(codes, names, levels), is_anomaly,
                                       -model.log_likelihood(codes), rng)
    return TabularSet(name=name, table=table, columns=dict(zip(names, levels, strict=True)), is_anomaly=is_anomaly,
                      description=description, oracle_nll=nll)


def _check_sizes(n_inliers, n_anomalies, n_columns) -> tuple[int, int, int]:
    return (
        check_int(n_inliers, "n_inliers", minimum=10),
        check_int(n_anomalies, "n_anomalies", minimum=0),
        check_int(n_columns, "n_columns", minimum=2),
    )


def rare_combinations(
    difficulty: str = "easy",
    *,
    n_inliers: int = 4000,
    n_anomalies: int = 200,
    n_columns: int = 20,
    n_levels: int = 4,
    n_classes: int = 6,
    seed: int = 0,
) -> TabularSet:
    """Anomalies made of common values in rare combinations.

    Inliers: the latent-class model (``n_classes`` classes, ``n_levels`` levels in each of ``n_columns``
    columns). Anomalies take each column from the model too, but not from one class:

    - ``"easy"`` (peak 0.85): every column from its own independently drawn class, so an anomaly is a draw from
      the product of the inlier marginals;
    - ``"hard"`` (peak 0.75, noisier inliers): a chimera of two classes, half its columns (chosen at random) drawn
      from one class and half from another.

    Either way each anomaly column follows the inliers' marginal distribution, and every level is common among
    inliers (at least ``peak / n_classes`` of them), so a method that looks at one column at a time sees nothing.
    """
    if difficulty not in DIFFICULTIES:
        raise ValueError(f"difficulty must be one of {sorted(DIFFICULTIES)}; received {difficulty!r}")
    n_inliers, n_anomalies, n_columns = _check_sizes(n_inliers, n_anomalies, n_columns)
    n_levels = check_int(n_levels, "n_levels", minimum=2)
    n_classes = check_int(n_classes, "n_classes", minimum=2)
    peak, share = DIFFICULTIES[difficulty]
    rng = np.random.default_rng(seed)
    model = _latent_class_model([n_levels] * n_columns, n_classes, peak, rng)

    inlier_classes = np.repeat(model.draw_classes((n_inliers, 1), rng), n_columns, axis=1)
    if share is None:
        anomaly_classes = model.draw_classes((n_anomalies, n_columns), rng)
        mixing = "every column from its own class"
    else:
        first = model.draw_classes(n_anomalies, rng)
        second = (first + rng.integers(1, n_classes, size=n_anomalies)) % n_classes
        n_swapped = max(1, round(share * n_columns))
        mixing = f"{n_swapped} of the {n_columns} columns from a second class"
        swapped = np.argsort(rng.random((n_anomalies, n_columns)), axis=1)[:, :n_swapped]
        anomaly_classes = np.repeat(first[:, None], n_columns, axis=1)
        np.put_along_axis(anomaly_classes, swapped, second[:, None], axis=1)
    codes = model.draw_levels(np.concatenate([inlier_classes, anomaly_classes]), rng)

    return _categorical_set(
        f"rare_combinations_{difficulty}", codes, [_level_names(n_levels) for _ in range(n_columns)], n_inliers, model,
        rng,
        f"{n_columns} categorical columns of {n_levels} levels tied by {n_classes} latent classes (peak {peak}); "
        f"anomalies: {mixing}: common values, rare combinations",
    )


def rare_levels_set(
    *,
    n_inliers: int = 4000,
    n_anomalies: int = 200,
    n_columns: int = 20,
    n_levels: int = 4,
    n_classes: int = 6,
    seed: int = 0,
) -> TabularSet:
    """Anomalies that carry rare levels: per-column methods should find them.

    Each column has ``n_levels`` common levels drawn from the latent-class model (peak 0.85) and one more level,
    ``"rare"``, that inliers take with probability 0.002 per cell. An anomaly is an inlier-like row with the rare
    level in a fifth of its columns (at least one).
    """
    n_inliers, n_anomalies, n_columns = _check_sizes(n_inliers, n_anomalies, n_columns)
    n_levels = check_int(n_levels, "n_levels", minimum=2)
    n_classes = check_int(n_classes, "n_classes", minimum=2)
    rng = np.random.default_rng(seed)
    common = _latent_class_model([n_levels] * n_columns, n_classes, 0.85, rng)
    rare_p = 0.002
    model = _LatentClassModel(
        common.weights, tuple(np.hstack([(1 - rare_p) * p, np.full((n_classes, 1), rare_p)]) for p in common.probs)
    )
    classes = np.repeat(model.draw_classes((n_inliers + n_anomalies, 1), rng), n_columns, axis=1)
    codes = model.draw_levels(classes, rng)
    n_rare = max(1, round(n_columns / 5))
    rare_columns = np.argsort(rng.random((n_anomalies, n_columns)), axis=1)[:, :n_rare]
    anomaly_codes = codes[n_inliers:]
    np.put_along_axis(anomaly_codes, rare_columns, n_levels, axis=1)

    return _categorical_set(
        "rare_levels", codes, [[*_level_names(n_levels), RARE_LEVEL] for _ in range(n_columns)], n_inliers, model, rng,
        f"{n_columns} categorical columns of {n_levels} common levels tied by {n_classes} latent classes, plus a "
        f"level inliers take with probability {rare_p}; anomalies carry it in {n_rare} columns",
    )


def mixed_set(
    *,
    n_inliers: int = 4000,
    n_anomalies: int = 200,
    n_categorical: int = 12,
    n_continuous: int = 4,
    n_levels: int = 4,
    seed: int = 0,
) -> TabularSet:
    """A Census-like table: categorical columns and continuous columns whose distribution depends on them.

    The categorical columns come from the latent-class model (``max(4, n_levels)`` classes, peak 0.8). Each
    continuous column has two categorical parents: its value is ``a[level of the first] + b[level of the second] +
    noise``, with the level effects ``a`` spread over [-1.5, 1.5], ``b`` over [-1, 1] (random order) and noise SD
    0.5, so its overall distribution is a wide mixture. An anomaly's categorical values are an inlier's; each of its
    continuous values is drawn as an inlier's would be for another row's parent levels (a different pair from its
    own): typical of the whole table, wrong for its categories.
    """
    n_inliers, n_anomalies, n_categorical = _check_sizes(n_inliers, n_anomalies, n_categorical)
    n_continuous = check_int(n_continuous, "n_continuous", minimum=1)
    n_levels = check_int(n_levels, "n_levels", minimum=2)
    noise_sd = 0.5
    rng = np.random.default_rng(seed)
    model = _latent_class_model([n_levels] * n_categorical, max(4, n_levels), 0.8, rng)
    parents = np.stack([rng.choice(n_categorical, size=2, replace=False) for _ in range(n_continuous)])
    effects = np.stack([
        np.stack([rng.permutation(np.linspace(-1.5, 1.5, n_levels)), rng.permutation(np.linspace(-1, 1, n_levels))])
        for _ in range(n_continuous)
    ])  # (n_continuous, 2 parents, n_levels)

    def mean(codes: np.ndarray) -> np.ndarray:
        first, second = codes[:, parents[:, 0]], codes[:, parents[:, 1]]
        index = np.arange(n_continuous)
        return effects[index, 0, first] + effects[index, 1, second]  # (n_rows, n_continuous)

    n_rows = n_inliers + n_anomalies
    classes = np.repeat(model.draw_classes((n_rows, 1), rng), n_categorical, axis=1)
    codes = model.draw_levels(classes, rng)
    means = mean(codes)
    own = codes[n_inliers:]
    for i in range(n_continuous):
        # Another row's parent levels for each anomaly, redrawn until the pair differs from the anomaly's own.
        pair = own[:, parents[i]]
        donor = pair.copy()
        same = np.ones(n_anomalies, dtype=bool)
        while same.any():
            donors = model.draw_levels(np.repeat(model.draw_classes((same.sum(), 1), rng), n_categorical, axis=1), rng)
            donor[same] = donors[:, parents[i]]
            same = (donor == pair).all(axis=1)
        means[n_inliers:, i] = effects[i, 0, donor[:, 0]] + effects[i, 1, donor[:, 1]]
    values = means + noise_sd * rng.standard_normal(means.shape)

    cat_names = _column_names("c", n_categorical)
    cont_names = _column_names("x", n_continuous)
    levels = [_level_names(n_levels) for _ in range(n_categorical)]
    table = _categorical_frame(codes, cat_names, levels)
    for i, name in enumerate(cont_names):
        table[name] = values[:, i].astype(np.float64)
    residual = (values - mean(codes)) / noise_sd
    log_density = (-0.5 * residual**2 - np.log(noise_sd * np.sqrt(2 * np.pi))).sum(axis=1)
    is_anomaly = np.arange(n_rows) >= n_inliers
    table, is_anomaly, nll = _shuffled(table, is_anomaly, -(model.log_likelihood(codes) + log_density), rng)
    columns: dict[str, list[str] | None] = dict(zip(cat_names, levels, strict=True))
    columns.update(dict.fromkeys(cont_names))
    return TabularSet(
        name="mixed",
        table=table,
        columns=columns,
        is_anomaly=is_anomaly,
        description=(
            f"{n_categorical} categorical columns of {n_levels} levels (latent classes) and {n_continuous} continuous "
            f"columns, each the sum of its two categorical parents' level effects plus noise (SD {noise_sd}); "
            "anomalies: continuous values drawn for other parent levels than their own"
        ),
        oracle_nll=nll,
    )


def wide_set(n_rows: int = 10_000, n_columns: int = 40, seed: int = 0) -> TabularSet:
    """A categorical inlier table for a training-speed benchmark: ``n_rows`` rows, ``n_columns`` columns of 3 to 6
    levels (column j has ``3 + j % 4``), tied by 8 latent classes (peak 0.8). No anomalies."""
    n_rows = check_int(n_rows, "n_rows")
    n_columns = check_int(n_columns, "n_columns")
    rng = np.random.default_rng(seed)
    levels_per_column = [3 + j % 4 for j in range(n_columns)]
    model = _latent_class_model(levels_per_column, 8, 0.8, rng)
    codes = model.draw_levels(np.repeat(model.draw_classes((n_rows, 1), rng), n_columns, axis=1), rng)
    names = _column_names("c", n_columns)
    levels = [_level_names(n) for n in levels_per_column]
    return TabularSet(
        name="wide",
        table=_categorical_frame(codes, names, levels),
        columns=dict(zip(names, levels, strict=True)),
        is_anomaly=np.zeros(n_rows, dtype=bool),
        description=f"{n_rows} inlier rows, {n_columns} categorical columns of 3-6 levels tied by 8 latent classes",
        oracle_nll=-model.log_likelihood(codes),
    )


def benchmark_sets(seed: int = 0) -> list[TabularSet]:
    """The benchmark's labelled sets at their default sizes (4,000 inliers, 200 anomalies each)."""
    return [
        rare_levels_set(seed=seed),
        rare_combinations("easy", seed=seed),
        rare_combinations("hard", seed=seed),
        mixed_set(seed=seed),
    ]
