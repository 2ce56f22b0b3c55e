"""A small RealNVP normalizing flow on log-standardised score-norm vectors: the flow variant of the MSMA detector.

:class:`CouplingFlow` maps a row ``x`` (shape ``(L,)``) to ``z = f(x)`` through ``n_blocks`` affine couplings with
alternating even/odd masks; ``log p(x) = log N(z; 0, I) + log |det df/dx|``. :class:`FlowDetector` fits it by
maximum likelihood on the training rows (after :func:`analysis.detection.detectors.log_standardise`) and scores rows by
their negative log-likelihood, higher = more anomalous, like the detectors of :mod:`analysis.detection.detectors`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.base import BaseEstimator
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted
from torch import nn

from analysis.checks import check_int, check_positive_float
from analysis.detection.detectors import check_score_norms, fit_log_standardisation, log_standardise
from models.training import EarlyStopping, TrainingHistory

__all__ = ["AdamSettings", "CouplingFlow", "FlowDetector"]

_MAX_LOG_SCALE = 2.0
"""Log-scales are ``tanh(raw) * 2``: each coupling scales a coordinate by a factor in [e^-2, e^2]."""


class _Coupling(nn.Module):
    """``y = m*x + (1-m) * (x * exp(s(m*x)) + t(m*x))``: the coordinates where ``mask`` is 1 pass unchanged."""

    def __init__(self, mask: torch.Tensor, hidden: int):
        super().__init__()
        n = mask.numel()
        self.register_buffer("mask", mask)
        self.net = nn.Sequential(nn.Linear(n, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU())
        self.out = nn.Linear(hidden, 2 * n)
        nn.init.zeros_(self.out.weight)  # every coupling starts as the identity
        nn.init.zeros_(self.out.bias)

    def _scale_shift(self, kept: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raw_s, t = self.out(self.net(kept)).chunk(2, dim=-1)
        free = 1.0 - self.mask
        return torch.tanh(raw_s) * _MAX_LOG_SCALE * free, t * free

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        s, t = self._scale_shift(x * self.mask)
        return x * torch.exp(s) + t, s.sum(dim=-1)

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        s, t = self._scale_shift(y * self.mask)
        return (y - t) * torch.exp(-s)


class CouplingFlow(nn.Module):
    """RealNVP flow: ``n_blocks`` affine couplings, block ``i`` keeping the coordinates of parity ``i % 2``.

    Parameters
    ----------
    n_features : int
        ``L``, the dimension of the rows.
    n_blocks : int
        Number of couplings; use an even number >= 2 so that every coordinate is transformed.
    hidden : int
        Width of the two hidden layers of each coupling's network.
    """

    def __init__(self, n_features: int, n_blocks: int = 4, hidden: int = 64):
        super().__init__()
        parity = torch.arange(n_features) % 2
        self.blocks = nn.ModuleList(_Coupling((parity == i % 2).float(), hidden) for i in range(n_blocks))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Map ``x`` (shape ``(n, L)``) to ``z`` (same shape); also return ``log |det dz/dx|`` (shape ``(n,)``)."""
        log_det = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
        for block in self.blocks:
            x, block_log_det = block(x)
            log_det = log_det + block_log_det
        return x, log_det

    def inverse(self, z: torch.Tensor) -> torch.Tensor:
        """Map ``z`` (shape ``(n, L)``) back to ``x``."""
        for block in reversed(self.blocks):
            z = block.inverse(z)
        return z

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """``log p(x)`` per row (shape ``(n,)``) under a standard normal base distribution."""
        z, log_det = self(x)
        return -0.5 * (z**2).sum(dim=-1) - 0.5 * z.shape[-1] * math.log(2 * math.pi) + log_det


@dataclass(frozen=True)
class AdamSettings:
    """Adam's settings for fitting a :class:`FlowDetector`."""

    lr: float = 1e-3
    """Learning rate."""
    weight_decay: float = 1e-5
    """L2 penalty on the flow's parameters (>= 0)."""

    def __post_init__(self) -> None:
        check_positive_float(self.lr, "lr")
        if not self.weight_decay >= 0:
            raise ValueError(f"weight_decay must be >= 0; received {self.weight_decay!r}")


class FlowDetector(BaseEstimator):
    """Negative log-likelihood under a RealNVP flow fitted to log-standardised score norms.

    Training holds out ``validation_fraction`` of the rows (chosen with ``random_state``), runs Adam on mini-batches
    of the rest and stops when the validation NLL has not improved for ``patience`` epochs, keeping the parameters
    of the best epoch. All torch randomness runs inside :func:`torch.random.fork_rng`, seeded from
    ``random_state``, so the global RNG state is left as it was; ``torch.set_num_threads`` is not touched.

    Parameters
    ----------
    n_blocks, hidden : int, default 4, 64
        Couplings and hidden width of :class:`CouplingFlow`.
    max_epochs : int, default 300
    batch_size : int, default 64
    validation_fraction : float, default 0.2
        In [0, 1); 0 trains on every row for ``max_epochs`` and keeps the last epoch.
    patience : int, default 20
    optimiser : AdamSettings, default ``AdamSettings()``
        Adam's learning rate and L2 penalty.
    random_state : int, RandomState instance or None, default 0

    Attributes
    ----------
    center_, scale_ : ndarray, shape (L,)
        Standardisation of ``log X`` learnt on all training rows.
    flow_ : CouplingFlow
        The fitted flow (float32, CPU, eval mode).
    history_ : dict of lists
        :meth:`models.training.TrainingHistory.as_dict` with one entry per epoch run: ``step`` the epoch (1, 2,
        ...), ``train_loss`` and ``val_loss`` the mean NLL per row in nats (``val_loss`` NaN without validation
        rows).
    best_epoch_, n_epochs_ : int
        Epoch whose parameters were kept (0: the initial identity flow, if no epoch improved on it) and epochs run.
    n_features_in_ : int
        ``L``.
    """

    def __init__(
        self,
        n_blocks: int = 4,
        hidden: int = 64,
        max_epochs: int = 300,
        batch_size: int = 64,
        validation_fraction: float = 0.2,
        patience: int = 20,
        optimiser: AdamSettings = AdamSettings(),
        random_state=0,
    ):
        self.n_blocks = n_blocks
        self.hidden = hidden
        self.max_epochs = max_epochs
        self.batch_size = batch_size
        self.validation_fraction = validation_fraction
        self.patience = patience
        self.optimiser = optimiser
        self.random_state = random_state

    def fit(self, X, y=None) -> FlowDetector:
        """Fit the flow by maximum likelihood with early stopping on the validation NLL.

        Parameters
        ----------
        X : array_like, shape (n_subjects, L)
            Positive training score norms.
        y : ignored

        Returns
        -------
        self
        """
        for name in ("n_blocks", "hidden", "max_epochs", "batch_size", "patience"):
            check_int(getattr(self, name), name)
        if not 0.0 <= self.validation_fraction < 1.0:
            raise ValueError(f"validation_fraction must be in [0, 1); received {self.validation_fraction!r}")
        X = check_score_norms(X)
        n = X.shape[0]
        n_val = int(round(self.validation_fraction * n))
        if n - n_val < 2 or (self.validation_fraction > 0 and n_val < 1):
            raise ValueError(
                f"X has too few rows ({n}) for validation_fraction={self.validation_fraction}: need at least 2 "
                "training rows and, when validation_fraction > 0, one validation row"
            )
        self.center_, self.scale_ = fit_log_standardisation(X)
        Z = torch.as_tensor(log_standardise(X, self.center_, self.scale_), dtype=torch.float32)
        seed = int(check_random_state(self.random_state).randint(2**31 - 1))
        order = np.random.default_rng(seed).permutation(n)
        z_val, z_train = Z[order[:n_val]], Z[order[n_val:]]

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            flow = CouplingFlow(X.shape[1], self.n_blocks, self.hidden)
            adam = torch.optim.Adam(flow.parameters(), lr=self.optimiser.lr, weight_decay=self.optimiser.weight_decay)
            history = TrainingHistory()
            stopper = EarlyStopping(self.patience, lambda: {k: v.clone() for k, v in flow.state_dict().items()})
            # The identity flow of epoch 0 is the fallback should training diverge at once.
            stopper.start(0, self._validation_nll(flow, z_val))
            for epoch in range(1, self.max_epochs + 1):
                flow.train()
                total = 0.0
                for batch in torch.randperm(len(z_train)).split(self.batch_size):
                    loss = -flow.log_prob(z_train[batch]).mean()
                    adam.zero_grad()
                    loss.backward()
                    adam.step()
                    total += loss.item() * len(batch)
                val_nll = self._validation_nll(flow, z_val)
                history.record(epoch, total / len(z_train), val_nll)
                if n_val:  # without validation rows there is nothing to stop on: the last epoch is kept
                    stopper.update(epoch, val_nll)
                    if stopper.should_stop:
                        break
        if n_val:
            flow.load_state_dict(stopper.best_state)
        self.best_epoch_ = stopper.best_step if n_val else epoch
        self.history_ = history.as_dict()
        self.flow_ = flow.eval()
        self.n_epochs_ = epoch
        self.n_features_in_ = X.shape[1]
        return self

    @staticmethod
    def _validation_nll(flow: CouplingFlow, z_val: torch.Tensor) -> float:
        if len(z_val) == 0:
            return math.nan
        flow.eval()
        with torch.no_grad():
            return -flow.log_prob(z_val).mean().item()

    def score_samples(self, X) -> np.ndarray:
        """Negative log-likelihood of each row under the flow, in log-standardised space.

        Parameters
        ----------
        X : array_like, shape (n_subjects, L)
            Positive score norms.

        Returns
        -------
        ndarray of float64, shape (n_subjects,)
            Anomaly score: higher = more anomalous.
        """
        check_is_fitted(self, "flow_")
        Z = torch.as_tensor(log_standardise(X, self.center_, self.scale_), dtype=torch.float32)
        with torch.no_grad():
            return -self.flow_.log_prob(Z).double().numpy()
