"""The shallow baselines of table 4.2: Isolation Forest and ECOD, from pyod.

Both see the table as the GNSM paper's baselines did: each categorical column one-hot encoded (one 0/1 column per
declared level) and each continuous column standardised with the mean and SD of the train rows. They are fitted on
the train inliers of a :class:`~analysis.tabular.protocol.Split` and score its test rows, higher meaning more
anomalous (pyod's ``decision_function``).

- :func:`iforest`: pyod's ``IForest`` (scikit-learn's isolation forest), 100 trees, ``random_state`` per call.
- :func:`ecod`: pyod's ``ECOD``, which has no parameter and no randomness (``random_state`` is accepted for a
  uniform signature and unused). pyod's ECOD scores new rows against the empirical CDFs of the training rows and the
  scored rows together.

pyod is a test-only dependency (the ``test`` extra) and is imported when a baseline runs, so importing this module
needs only numpy and pandas.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from analysis.tabular.datasets import TabularSet
from analysis.tabular.protocol import Split

__all__ = ["BASELINES", "ecod", "iforest"]


def _onehot(data: TabularSet, fit_rows: np.ndarray) -> np.ndarray:
    """The table as a float matrix, all rows: for each column in order, one 0/1 column per declared level of a
    categorical column, or the continuous column standardised by the mean and SD (1 where it is 0) of ``fit_rows``."""
    blocks = []
    for name, levels in data.columns.items():
        values = data.table[name].to_numpy()
        if levels is None:
            values = values.astype(np.float64)
            centre, scale = values[fit_rows].mean(), values[fit_rows].std()
            blocks.append(((values - centre) / (scale if scale > 0 else 1.0))[:, None])
        else:
            blocks.append((values[:, None] == np.asarray(levels, dtype=object)[None, :]).astype(np.float64))
    return np.hstack(blocks)


def iforest(data: TabularSet, split: Split, random_state: int) -> np.ndarray:
    """Isolation Forest anomaly scores of ``split.test``, fitted on ``split.train``."""
    from pyod.models.iforest import IForest

    X = _onehot(data, split.train)
    model = IForest(n_estimators=100, random_state=random_state, n_jobs=1).fit(X[split.train])
    return model.decision_function(X[split.test])


def ecod(data: TabularSet, split: Split, random_state: int) -> np.ndarray:
    """ECOD anomaly scores of ``split.test``, fitted on ``split.train`` (deterministic)."""
    from pyod.models.ecod import ECOD

    X = _onehot(data, split.train)
    model = ECOD(n_jobs=1).fit(X[split.train])
    return model.decision_function(X[split.test])


BASELINES: dict[str, Callable[[TabularSet, Split, int], np.ndarray]] = {"IForest": iforest, "ECOD": ecod}
